"""OCR backends (registry). `rapidocr`: PP-OCRv4 ONNX models shipped inside the
rapidocr_onnxruntime wheel, so it works offline; the default. `off`: reads nothing (empty
evidence, recorded as `off:none` in every row and in the build's config and models), for load
tests and builds where OCR's cost is not wanted."""

from __future__ import annotations

import io
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
    # Larger images are scaled down before OCR (boxes are mapped back): a 24-MP photo from a
    # local folder must not exhaust a worker's memory.
    max_side: int = 2048
    easyocr_model_dir: str = ""  # easyocr weights; default $COREBUILD_EASYOCR_DIR or ~/.EasyOCR/model


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
    """Several readers (one per language group a region needs); where two read the same box,
    the more confident reading wins."""

    def __init__(self, engines: list[OcrEngine]):
        self.engines = engines
        self.name = engines[0].name
        self.model_id = "+".join(e.model_id for e in engines)

    def read(self, image: bytes) -> list[OcrHit]:
        hits = sorted((h for e in self.engines for h in e.read(image)), key=lambda h: -h.confidence)
        kept: list[OcrHit] = []
        for h in hits:
            if all(_iou(h.box, k.box) < 0.5 for k in kept):
                kept.append(h)
        return kept


# name -> factory(config, the region's language groups). rapidocr's wheel models read Latin and
# Chinese whatever the region; easyocr loads one reader per group.
OCR_BACKENDS: dict[str, Callable[[OcrConfig, list[list[str]]], OcrEngine]] = {
    "rapidocr": lambda cfg, groups: RapidOcrEngine(cfg),
    "off": lambda cfg, groups: NoOcr(cfg),
}


def load_ocr(cfg: OcrConfig, groups: list[list[str]] | None = None) -> OcrEngine:
    try:
        factory = OCR_BACKENDS[cfg.backend]
    except KeyError:
        raise ModelUnavailableError(f"unknown OCR backend {cfg.backend!r}; known: {sorted(OCR_BACKENDS)}") from None
    return factory(cfg, [list(g) for g in groups or [["en"]]])


try:  # registers "easyocr"; its weights and package are checked when a reader is built
    from . import easyocr_backend  # noqa: F401
except ImportError:
    pass
