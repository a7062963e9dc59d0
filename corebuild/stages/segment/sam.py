"""segment-anything automatic mask generation as the `sam` segmenter (extra: corebuild[sam]).

Images are shrunk to at most `SegmentConfig.max_side` before SAM sees them (a 24-MP photo must not
exhaust a worker), and each mask is scaled back (nearest) to the image's own size, so every
`MaskOut` lives in the input image's pixels like the OCR boxes it is compared with.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from corebuild.errors import ModelUnavailableError
from corebuild.stages.segment.masks import rle_encode
from corebuild.stages.segment import SAM_CHECKPOINTS, MaskOut, SegmentConfig

try:
    import torch
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    from segment_anything.modeling import Sam
except ImportError as exc:  # Registry.load turns this into one line naming the extra
    raise ImportError(f"corebuild.stages.segment.sam needs torch and segment-anything: pip install 'corebuild[sam]' ({exc})") from exc

CHECKPOINTS = SAM_CHECKPOINTS
_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/{}"


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _missing_checkpoint(cfg: SegmentConfig) -> ModelUnavailableError:
    expected = CHECKPOINTS.get(cfg.model_type, f"the {cfg.model_type} checkpoint")
    where = f"{cfg.checkpoint!r} does not exist" if cfg.checkpoint else "no checkpoint is configured"
    url = _CHECKPOINT_URL.format(expected) if cfg.model_type in CHECKPOINTS else "the segment-anything README"
    return ModelUnavailableError(
        f"segmenter 'sam' ({cfg.model_type}) needs its weights file {expected}: {where}. "
        f"Download it from {url}, put it on the worker (e.g. models/{expected}) and set "
        f"SegmentConfig.checkpoint (CLI: --sam-checkpoint) to its path."
    )


class SamSegmenter:
    name = "sam"

    def __init__(self, cfg: SegmentConfig, generator_options: Optional[Mapping[str, Any]] = None):
        if cfg.model_type not in sam_model_registry:
            raise ModelUnavailableError(f"unknown SAM model_type {cfg.model_type!r}; known: {sorted(CHECKPOINTS)}")
        if not cfg.checkpoint or not os.path.isfile(cfg.checkpoint):
            raise _missing_checkpoint(cfg)
        # Build empty, then load on the CPU: build_sam's own torch.load has no map_location, so a
        # checkpoint saved from a GPU would not load on a CPU-only worker.
        model = sam_model_registry[cfg.model_type](checkpoint=None)
        try:
            state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # truncated download, wrong model_type for the file, ...
            raise ModelUnavailableError(
                f"segmenter 'sam' ({cfg.model_type}) cannot load {cfg.checkpoint}: {exc}. "
                f"Expected the official {CHECKPOINTS.get(cfg.model_type, cfg.model_type)} (SegmentConfig.checkpoint / --sam-checkpoint)."
            ) from None
        self._setup(model, cfg, os.path.basename(cfg.checkpoint), generator_options)

    @classmethod
    def from_model(cls, model: Sam, cfg: SegmentConfig, generator_options: Optional[Mapping[str, Any]] = None, weights: str = "in-memory") -> "SamSegmenter":
        """A segmenter around an already built `Sam` (tests use a tiny randomly initialised one)."""
        self = cls.__new__(cls)
        self._setup(model, cfg, weights, generator_options)
        return self

    def _setup(self, model: Sam, cfg: SegmentConfig, weights: str, generator_options: Optional[Mapping[str, Any]]) -> None:
        self.device = pick_device(cfg.device)
        self._model = model.to(self.device).eval()
        options: dict[str, Any] = {"points_per_side": cfg.points_per_side, "output_mode": "binary_mask"}
        options.update(generator_options or {})
        self._generator = SamAutomaticMaskGenerator(self._model, **options)
        self._max_side = cfg.max_side
        self._min_area_frac = cfg.min_area_frac
        self.model_id = f"segment-anything=={metadata.version('segment-anything')}:{cfg.model_type}:{weights}"

    def segment(self, images: Sequence[Image.Image]) -> list[list[MaskOut]]:
        return [self._segment_one(img) for img in images]

    def _segment_one(self, image: Image.Image) -> list[MaskOut]:
        rgb = image.convert("RGB")
        w, h = rgb.size
        scale = min(1.0, self._max_side / max(w, h))
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        with torch.inference_mode():
            anns = self._generator.generate(np.asarray(rgb, dtype=np.uint8))
        min_area = self._min_area_frac * w * h
        out = []
        for ann in anns:
            mask = _resize_nearest(np.asarray(ann["segmentation"], dtype=bool), h, w)
            area = int(mask.sum())
            if area == 0 or area < min_area:
                continue
            counts, size = rle_encode(mask)
            out.append(MaskOut(_bbox(mask), area, float(ann["predicted_iou"]), float(ann["stability_score"]), counts, size))
        out.sort(key=lambda m: -m.area)  # largest first: stable order for labels and tests
        return out


def _resize_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask
    rows = np.minimum(((np.arange(h) + 0.5) * mh / h).astype(np.intp), mh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mw / w).astype(np.intp), mw - 1)
    return mask[rows[:, None], cols[None, :]]


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)
