"""OCR backends (registry). `rapidocr`: PP-OCRv4 ONNX models shipped inside the
rapidocr_onnxruntime wheel, so it works offline; the default."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Protocol

from .errors import ModelUnavailableError


@dataclass(frozen=True)
class OcrConfig:
    backend: str = "rapidocr"
    min_confidence: float = 0.5
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default (all cores)
    use_angle_cls: bool = False  # street signs are upright; the classifier costs ~20%


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
        self.model_id = f"rapidocr_onnxruntime=={metadata.version('rapidocr_onnxruntime')}:PP-OCRv4-det+rec"

    def read(self, image: bytes) -> list[OcrHit]:
        result, _ = self._engine(image, use_cls=self._cls)
        hits = []
        for box, text, score in result or []:
            text = normalize_text(str(text))
            if text:
                hits.append(OcrHit(text, float(score), tuple((float(x), float(y)) for x, y in box)))
        return hits


OCR_BACKENDS: dict[str, Callable[[OcrConfig], OcrEngine]] = {"rapidocr": RapidOcrEngine}


def load_ocr(cfg: OcrConfig) -> OcrEngine:
    try:
        factory = OCR_BACKENDS[cfg.backend]
    except KeyError:
        raise ModelUnavailableError(f"unknown OCR backend {cfg.backend!r}; known: {sorted(OCR_BACKENDS)}") from None
    return factory(cfg)
