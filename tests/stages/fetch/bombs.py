"""Hostile and ordinary images for the decode-limit tests, made deterministically in memory."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

# Pillow's own guard: a warning past MAX_IMAGE_PIXELS (~89.5 MP), an error past twice that.
PILLOW_WARNS = Image.MAX_IMAGE_PIXELS


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=None)
def bomb_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of `width` x `height` black pixels: a few KB that Pillow would
    decode into width*height bytes (20000x20000: ~48 KB on the wire, 400 MB decoded). Written
    row by row, so making it never holds the big image either."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """Real-looking (not flat, not uniform) pixels: no "no imagery" detector fires on them."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype="uint8"))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def noise_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    return encode(noise_rgb(width, height, seed), "JPEG", quality=85)


@functools.lru_cache(maxsize=None)
def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    return encode(noise_rgb(width, height, seed), "PNG")


def truncated(body: bytes) -> bytes:
    """Header intact, the entropy-coded data cut off half way."""
    return body[: len(body) // 2]


def jpeg_claiming(body: bytes, width: int, height: int) -> bytes:
    """`body` (a baseline JPEG, EXIF and all) with its frame header rewritten to claim another
    size: what a hostile file looks like to a lazy open (the scan data stays small)."""
    at = 2  # after SOI: walk the marker segments (EXIF bytes may contain anything)
    while body[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack(">H", body[at + 2 : at + 4])[0]
    # SOFn: marker(2), length(2), precision(1), height(2), width(2)
    return body[: at + 5] + struct.pack(">HH", height, width) + body[at + 9 :]


# What the fault server's /image/{kind} (tile and Street View routes too) answers: kind -> body.
# "big" declares its length; "endless" streams without one until the client hangs up.
BIG_BODY_BYTES = 300_000
IMAGE_KINDS = ("ok", "bomb", "pixels", "truncated", "big", "endless")


def image_body(kind: str, ok: bytes) -> bytes:
    return {
        "ok": ok,
        "bomb": bomb_png(20_000, 20_000),  # 400 MP in ~48 KB: Pillow's own guard
        "pixels": bomb_png(9_000, 9_000),  # 81 MP in ~10 KB: under Pillow's guard, over 64 MP
        "truncated": truncated(noise_jpeg(640, 640, seed=3)),
        "big": ok + b"\0" * BIG_BODY_BYTES,  # a good image, then more bytes than the limit
    }[kind]
