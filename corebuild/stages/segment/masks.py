"""Binary masks as uncompressed COCO RLE (column-major run lengths, starting with a 0-run):
the format segment-anything's `output_mode="uncompressed_rle"` produces and pycocotools reads."""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, int]]:
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # COCO RLE always starts with a run of zeros
    return tuple(int(r) for r in runs), (int(h), int(w))


def rle_decode(counts, size) -> np.ndarray:
    h, w = size
    if sum(counts) != h * w:
        raise ValueError(f"RLE covers {sum(counts)} pixels, mask has {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((h, w), order="F")


def rle_area(counts) -> int:
    return int(sum(counts[1::2]))
