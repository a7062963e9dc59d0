"""Open-world segmentation of street views (segment-anything), open-vocabulary mask labels
(CLIP-style), and the CVG-Text rule that text on things that move is not evidence.

Backends come from registries filled by their modules (`corebuild.sam`, `corebuild.clip_labels`);
both are optional extras, loaded once per worker. The demo runs with segmentation off and its
manifest says so.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple, Optional, Protocol, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .assets import PROMPTS
from .errors import ConfigError
from .masks import rle_decode
from .prompts import load_prompt
from .record import OcrText, Record, Segment


@dataclass(frozen=True)
class SegmentConfig:
    backend: str = "off"  # "off" | "sam"
    model_type: str = "vit_b"  # segment-anything registry key: vit_b, vit_l, vit_h
    checkpoint: str = ""  # path to the SAM weights file (e.g. sam_vit_b_01ec64.pth)
    points_per_side: int = 16  # automatic mask generation grid
    max_side: int = 1024  # images are resized to at most this before segmentation
    device: str = "auto"  # auto: cuda when available, else cpu
    min_area_frac: float = 0.002  # masks smaller than this share of the image are dropped
    labeler: str = "off"  # "off" | "clip"
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str = ""  # open_clip weights file
    vocabulary: str = "segment-vocabulary-v1"  # <prompts_dir>/<id>.json
    prompts_dir: str = PROMPTS  # a directory, or the packaged prompt sets (corebuild.assets)
    min_text_overlap: float = 0.5  # share of a text box on movers that drops the text


class MaskOut(NamedTuple):
    bbox: tuple[float, float, float, float]  # x, y, w, h in the input image's pixels
    area: int
    predicted_iou: float
    stability: float
    rle_counts: tuple[int, ...]
    rle_size: tuple[int, int]


class Segmenter(Protocol):
    name: str
    model_id: str

    def segment(self, images: Sequence[Image.Image]) -> list[list[MaskOut]]: ...


class Labeler(Protocol):
    name: str
    model_id: str

    def label(self, image: Image.Image, masks: Sequence[MaskOut], labels: Sequence[str], template: str) -> list[tuple[str, float]]: ...


SEGMENTERS: dict[str, Callable[[SegmentConfig], Segmenter]] = {}
LABELERS: dict[str, Callable[[SegmentConfig], Labeler]] = {}
# Every backend by name, and the module that registers it (imported only when chosen: torch is
# heavy), so the command line can offer the names without loading any of them.
SEGMENTER_MODULES = {"sam": "corebuild.sam"}
LABELER_MODULES = {"clip": "corebuild.clip_labels"}
# segment-anything's model types and their official checkpoints
# (https://github.com/facebookresearch/segment-anything#model-checkpoints).
SAM_CHECKPOINTS: dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}


_IMPORT_ERRORS: dict[str, str] = {}


def _register_backends() -> None:
    # Import for their registry side effect; why one could not load is kept for the error
    # message when it is chosen (usually: torch / segment-anything / open_clip not installed).
    for module in (*SEGMENTER_MODULES.values(), *LABELER_MODULES.values()):
        try:
            __import__(module)
        except ImportError as exc:
            _IMPORT_ERRORS[module] = f"{module}: {exc}"


def _unavailable(kind: str, name: str, known: dict) -> ConfigError:
    why = "; ".join(_IMPORT_ERRORS.values())
    return ConfigError(
        f"unknown or unavailable {kind} {name!r}; known: {sorted(known) or 'none'}"
        + (f" ({why}; pip install 'corebuild[sam]')" if why else "")
    )


def load_segmenter(cfg: SegmentConfig) -> Optional[Segmenter]:
    if cfg.backend == "off":
        return None
    _register_backends()
    if cfg.backend not in SEGMENTERS:
        raise _unavailable("segmenter", cfg.backend, SEGMENTERS)
    return SEGMENTERS[cfg.backend](cfg)


def load_labeler(cfg: SegmentConfig) -> Optional[Labeler]:
    if cfg.labeler == "off":
        return None
    _register_backends()
    if cfg.labeler not in LABELERS:
        raise _unavailable("labeler", cfg.labeler, LABELERS)
    return LABELERS[cfg.labeler](cfg)


def vocabulary(cfg: SegmentConfig) -> tuple[list[str], frozenset[str], str]:
    return _vocabulary(cfg.prompts_dir, cfg.vocabulary)


@lru_cache(maxsize=8)
def _vocabulary(prompts_dir: str, vocabulary_id: str) -> tuple[list[str], frozenset[str], str]:
    # Read once per process, not once per record.
    body = load_prompt(prompts_dir, vocabulary_id).body
    return list(body["labels"]), frozenset(body["movers"]), body["template"]


def text_on_movers(ocr: Sequence[OcrText], segments: Sequence[Segment], movers: frozenset[str] | set[str], min_overlap: float) -> tuple[OcrText, ...]:
    """Mark text whose box lies mostly (>= min_overlap of its area) on masks labelled as things
    that move: CVG-Text drops it, since a car's lettering says nothing about the place."""
    out = []
    for t in ocr:
        moving = [s for s in segments if s.heading == t.heading and s.label in movers]
        if t.dropped or not moving:
            out.append(t)
            continue
        h, w = moving[0].rle_size
        box = Image.new("1", (w, h), 0)
        ImageDraw.Draw(box).polygon([tuple(p) for p in t.box], fill=1)
        box_px = np.asarray(box, dtype=bool)
        covered = np.zeros((h, w), dtype=bool)
        for s in moving:
            covered |= rle_decode(s.rle_counts, s.rle_size)
        area = int(box_px.sum())
        share = (box_px & covered).sum() / area if area else 0.0
        if share >= min_overlap:
            label = max(moving, key=lambda s: (rle_decode(s.rle_counts, s.rle_size) & box_px).sum()).label
            out.append(dataclasses.replace(t, dropped=f"on_{label}"))
        else:
            out.append(t)
    return tuple(out)


def segment_record(rec: Record, segmenter: Segmenter, labeler: Optional[Labeler], cfg: SegmentConfig) -> Record:
    """Masks (+ labels) for every view, then the text-on-movers rule on the OCR evidence."""
    if rec.failed or rec.street is None:
        return rec
    t0 = time.perf_counter()
    labels, movers, template = vocabulary(cfg)
    images = [Image.open(io.BytesIO(v.image)).convert("RGB") for v in rec.street.views]
    per_view = segmenter.segment(images)
    segments = []
    for view, img, masks in zip(rec.street.views, images, per_view):
        named = labeler.label(img, masks, labels, template) if labeler and masks else [(None, None)] * len(masks)
        for m, (label, score) in zip(masks, named):
            segments.append(Segment(view.heading, m.bbox, m.area, m.predicted_iou, m.stability, m.rle_counts, m.rle_size, label, score))
    ocr = text_on_movers(rec.ocr or (), segments, movers, cfg.min_text_overlap) if labeler else rec.ocr
    return rec.with_(
        segments=tuple(segments),
        segmenter=f"{segmenter.name}:{segmenter.model_id}",
        labeler=f"{labeler.name}:{labeler.model_id}" if labeler else None,
        ocr=ocr,
    ).timed("segment", time.perf_counter() - t0)
