"""Cheap, deterministic colour cues read from a street view's pixels (used by the template
describer; a real LVLM replaces them). Nothing here knows the synthetic world."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

# Generic colour names (not the synthetic palette): nearest neighbour in RGB.
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "red": (180, 40, 40), "orange": (225, 125, 40), "yellow": (225, 200, 60), "green": (60, 140, 60),
    "blue": (45, 85, 185), "purple": (120, 55, 150), "pink": (225, 130, 175), "brown": (120, 80, 45),
    "white": (235, 233, 225), "teal": (35, 140, 140), "beige": (210, 188, 150), "grey": (128, 128, 128),
    "black": (25, 25, 25),
}
_NAMES = list(COLOUR_NAMES)
_RGB = np.array([COLOUR_NAMES[n] for n in _NAMES], float)


@dataclass(frozen=True)
class ViewCues:
    sky: float  # fraction of the image
    vegetation: float
    pavement: float  # low-saturation grey in the lower half
    left: Optional[str]  # dominant facade colour name on each side, if any
    ahead: Optional[str]
    right: Optional[str]


def _masks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    sky = (b > r + 25) & (b > g) & (b > 140)
    veg = (g > r + 15) & (g > b + 5)
    sat = a.max(axis=-1) - a.min(axis=-1)
    mean = a.mean(axis=-1)
    grey = (sat < 18) & (mean > 50) & (mean < 200)
    return sky, veg, grey


def _dominant(pixels: np.ndarray, min_share: float, total: int) -> Optional[str]:
    if len(pixels) < max(1, min_share * total):
        return None
    d = ((pixels[:, None, :] - _RGB[None, :, :]) ** 2).sum(-1)
    counts = np.bincount(d.argmin(1), minlength=len(_NAMES))
    best = int(counts.argmax())
    return _NAMES[best] if counts[best] >= min_share * total else None


def view_cues(image: bytes, size: int = 96) -> ViewCues:
    img = Image.open(io.BytesIO(image))
    img = img.convert("RGB") if img.mode != "RGB" else img  # decoded at full size (no draft): cues as they always were
    a = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
    sky, veg, grey = _masks(a)
    h = size
    band = slice(int(h * 0.15), int(h * 0.5))  # above the eye line: facades, not ground
    other = ~(sky | veg | grey)
    sides = {}
    for name, cols in (("left", slice(0, size // 3)), ("ahead", slice(size // 3, 2 * size // 3)), ("right", slice(2 * size // 3, size))):
        region = a[band, cols].astype(float)
        keep = other[band, cols]
        sides[name] = _dominant(region[keep], 0.25, keep.size)
    lower = slice(h // 2, h)
    return ViewCues(
        sky=round(float(sky.mean()), 3),
        vegetation=round(float(veg.mean()), 3),
        pavement=round(float(grey[lower].mean()), 3),
        **sides,
    )
