"""Open-world segmentation of street views (segment-anything), open-vocabulary mask labels
(CLIP-style), and the CVG-Text rule that text on things that move is not evidence.

Backends come from the registries below (`sam.py`, `clip_labels.py` beside this file);
both are optional extras, loaded once per worker. The demo runs with segmentation off and its
manifest says so.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Optional, Protocol, Sequence

import numpy as np
from PIL import Image, ImageDraw

from corebuild.assets import PROMPTS
from corebuild.options import option, registry_names
from corebuild.stages.segment.masks import rle_decode
from corebuild.stages.describe.prompts import PROMPTS_HELP, load_prompt
from corebuild.record import OcrText, Record, Segment
from corebuild.stages.registry import Backend, Registry
from corebuild.stages.stage import StageBase


@dataclass(frozen=True)
class SegmentConfig:
    backend: str = option("off", flag="--segment", choices=lambda: registry_names(SEGMENTERS, "off"), help="segmentation backend (off: no masks)")
    # segment-anything registry key: vit_b, vit_l, vit_h
    model_type: str = option("vit_b", flag="--sam-model", choices=lambda: sorted(SAM_CHECKPOINTS), help="SAM model type")
    # path to the SAM weights file (e.g. sam_vit_b_01ec64.pth)
    checkpoint: str = option("", flag="--sam-checkpoint", env="COREBUILD_SAM_CHECKPOINT", help="SAM weights file")
    points_per_side: int = 16  # automatic mask generation grid
    max_side: int = 1024  # images are resized to at most this before segmentation
    device: str = "auto"  # auto: cuda when available, else cpu
    min_area_frac: float = 0.002  # masks smaller than this share of the image are dropped
    labeler: str = option("off", flag="--labeler", choices=lambda: registry_names(LABELERS, "off"), help="mask labels (off: masks without labels)")
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str = option("", flag="--clip-checkpoint", env="COREBUILD_CLIP_CHECKPOINT", help="open_clip weights file")
    vocabulary: str = "segment-vocabulary-v1"  # <prompts_dir>/<id>.json
    # A directory, or the packaged prompt sets (corebuild.assets); the vocabulary's hash is hashed.
    prompts_dir: str = option(PROMPTS, flag="--prompts", hashed=False, metavar="DIR", help=PROMPTS_HELP)
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


# Every backend by name and its module, imported only when chosen (torch is heavy), so the
# command line offers the names without loading any of them.
SEGMENTERS = Registry("segmenter", {"sam": Backend("corebuild.stages.segment.sam:SamSegmenter", "sam")})
LABELERS = Registry("labeler", {"clip": Backend("corebuild.stages.segment.clip_labels:ClipLabeler", "sam")})
# segment-anything's model types and their official checkpoints
# (https://github.com/facebookresearch/segment-anything#model-checkpoints).
SAM_CHECKPOINTS: dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}


def load_segmenter(cfg: SegmentConfig) -> Optional[Segmenter]:
    return None if cfg.backend == "off" else SEGMENTERS.load(cfg.backend)(cfg)


def load_labeler(cfg: SegmentConfig) -> Optional[Labeler]:
    return None if cfg.labeler == "off" else LABELERS.load(cfg.labeler)(cfg)


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
    )


class SegmentStage(StageBase):
    """Open-world masks and their labels: a GPU stage of its own, so Dataflow can right-fit it."""

    name, failure_stage, batch_size = "segment", "evidence", 1

    def __init__(self, cfg: SegmentConfig):
        self.cfg = cfg

    def setup(self) -> None:
        self.segmenter = load_segmenter(self.cfg)
        self.labeler = load_labeler(self.cfg) if self.segmenter else None

    def process(self, batch: list[Record]) -> list[Record]:
        return [segment_record(rec, self.segmenter, self.labeler, self.cfg) for rec in batch]
