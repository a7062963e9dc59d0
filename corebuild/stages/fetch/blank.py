"""Recognise "no imagery" answers so they become failure rows, not data: uniform tiles, known
placeholder images (by sha256), and Street View's grey "Sorry, we have no imagery here"."""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
from PIL import Image


def _pixels(img: Image.Image) -> np.ndarray:
    # Every 4th pixel each way, picked in C before any array is made (NEAREST, not averaging,
    # which would smooth away the grain of real imagery).
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    small = rgb.resize((max(1, rgb.width // 4), max(1, rgb.height // 4)), Image.Resampling.NEAREST)
    return np.asarray(small, dtype=np.int16).reshape(-1, 3)


def is_uniform(img: Image.Image, max_std: float = 1.5) -> bool:
    """Every channel (nearly) constant: what tile servers return where they have nothing."""
    return bool(_pixels(img).std(axis=0).max() <= max_std)


def is_mostly_flat(img: Image.Image, share: float = 0.97, tol: int = 6) -> bool:
    """Almost every pixel one low-saturation colour, with a little text: Street View's grey
    placeholder and similar "no imagery" pictures."""
    a = _pixels(img)
    median = np.median(a, axis=0)
    close = (np.abs(a - median) <= tol).all(axis=1).mean()
    return bool(close >= share and (median.max() - median.min()) <= 12)


def is_placeholder(body: bytes, known_sha256: Iterable[str]) -> bool:
    known = set(known_sha256)
    return bool(known) and hashlib.sha256(body).hexdigest() in known
