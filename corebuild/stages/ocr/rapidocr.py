"""rapidocr as the `rapidocr` OCR backend: PP-OCRv4 ONNX models shipped inside the
rapidocr_onnxruntime wheel (extra: corebuild[ocr]), so it reads offline."""

from __future__ import annotations

from importlib import metadata

from corebuild.errors import ModelUnavailableError
from corebuild.stages.ocr import OcrConfig, OcrEngine, OcrHit, fit_image, normalize_text


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, cfg: OcrConfig):
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
        self._engine = RapidOCR(**kwargs)
        self._cls = cfg.use_angle_cls
        self._max_side = cfg.max_side
        self.model_id = f"rapidocr_onnxruntime=={metadata.version('rapidocr_onnxruntime')}:PP-OCRv4-det+rec"

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
