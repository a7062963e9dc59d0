"""Evidence stage: OCR on every street view (segmentation arrives in its own issue)."""

from __future__ import annotations

import time

from .ocr import OcrConfig, OcrEngine
from .record import OcrText, Record


def ocr_record(rec: Record, engine: OcrEngine, cfg: OcrConfig) -> Record:
    if rec.failed:
        return rec
    if rec.street is None:
        return rec.fail("evidence.no_street_image", "no street image to read")
    t0 = time.perf_counter()
    texts = []
    for view in rec.street.views:
        try:
            hits = engine.read(view.image)
        except Exception as exc:  # a corrupt image or an engine fault fails this record only
            return rec.fail("evidence.ocr_error", f"OCR failed on heading {view.heading:g}: {type(exc).__name__}: {exc}")
        texts.extend(
            OcrText(view.heading, h.text, round(h.confidence, 4), h.box) for h in hits if h.confidence >= cfg.min_confidence
        )
    return rec.with_(ocr=tuple(texts), ocr_backend=f"{engine.name}:{engine.model_id}").timed("evidence", time.perf_counter() - t0)
