"""Recognise "no imagery" answers so they become failure rows, not data: uniform tiles, known
placeholder images (by sha256), and Street View's grey "Sorry, we have no imagery here"."""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from itertools import accumulate
from typing import Iterable

import numpy as np
from PIL import Image


def _sample(img: Image.Image) -> Image.Image:
    # Every 4th pixel each way, picked in C before any array is made (NEAREST, not averaging,
    # which would smooth away the grain of real imagery).
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return rgb.resize((max(1, rgb.width // 4), max(1, rgb.height // 4)), Image.Resampling.NEAREST)


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(_sample(img), dtype=np.int16).reshape(-1, 3)


def is_uniform(img: Image.Image, max_std: float = 1.5) -> bool:
    """Every channel (nearly) constant: what tile servers return where they have nothing."""
    return bool(_pixels(img).std(axis=0).max() <= max_std)


def _order_stat(cumulative: list[int], k: int) -> int:
    """The k-th smallest (0-based) value of a channel, from its cumulative 256-bin histogram."""
    return bisect_right(cumulative, k)


def _flat_share(a: np.ndarray, median: np.ndarray, tol: int) -> float:
    """Share of sampled pixels within `tol` of the median in every channel."""
    return float((np.abs(a - median) <= tol).all(axis=1).mean())


def is_mostly_flat(img: Image.Image, share: float = 0.97, tol: int = 6) -> bool:
    """Almost every pixel one low-saturation colour, with a little text: Street View's grey
    placeholder and similar "no imagery" pictures.

    Decided on the 4x-subsampled pixels: the per-channel medians (as numpy's median takes them)
    must lie within 12 of each other, and a `share` of the pixels must be within `tol` of them in
    every channel. Both bounds are read first from the sample's per-channel histogram (C, no
    array): a channel whose own share within `tol` is under `share` already rules the joint share
    out, since a pixel close in every channel is close in that one. Only a picture that passes
    both (a placeholder, or nearly) has the joint share counted on the pixel array. The answer is
    the same as counting it always; real imagery returns after the histogram."""
    small = _sample(img)
    n = small.width * small.height
    hist = small.histogram()  # 3 x 256 counts, R then G then B
    lo_k, hi_k = (n - 1) // 2, n // 2  # np.median: the middle value, or the mean of the two middle ones
    medians = []
    for c in range(3):
        cumulative = list(accumulate(hist[256 * c : 256 * (c + 1)]))
        medians.append((_order_stat(cumulative, lo_k) + _order_stat(cumulative, hi_k)) / 2)
    if max(medians) - min(medians) > 12:
        return False
    for c, m in enumerate(medians):
        # |v - m| <= tol for integer v: v in [ceil(m - tol), floor(m + tol)] (m is a multiple of 0.5: exact)
        lo, hi = max(0, math.ceil(m - tol)), min(255, math.floor(m + tol))
        if sum(hist[256 * c + lo : 256 * c + hi + 1]) / n < share:
            return False
    a = np.asarray(small, dtype=np.int16).reshape(-1, 3)
    return bool(_flat_share(a, np.asarray(medians), tol) >= share)


def is_placeholder(body: bytes, known_sha256: Iterable[str]) -> bool:
    known = set(known_sha256)
    return bool(known) and hashlib.sha256(body).hexdigest() in known
