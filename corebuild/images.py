"""Decoding untrusted image bytes (provider answers, local photos) within explicit size limits.

A few kilobytes of PNG or JPEG can claim 20000x20000 pixels and expand to gigabytes when decoded
(a decompression bomb). `open_image` rejects, in this order and before any pixel is decoded:
bodies over `max_bytes`; headers whose width x height is over `max_pixels`; anything Pillow's own
guard flags (its `DecompressionBombWarning` is raised as an error here, locally: Pillow's global
`Image.MAX_IMAGE_PIXELS` is left as it is, so it stays a ceiling over `max_pixels`). Only then is
the image loaded, so truncated or corrupt data fails here too, not later in a consumer.

Callers turn `ImageTooLarge` / `ImageCorrupt` into their own failure reasons
(`corebuild.stages.fetch.http.decode_image`: `<stage>.image_too_large` / `<stage>.bad_image`).
"""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Literal, Union

from PIL import Image

from corebuild.errors import ConfigError

# Street View images are 640x640 (0.4 MP), tiles 256-512 px, Mapillary thumbnails at most 2048 px
# wide; camera originals (Mapillary's thumb_original_url, a local folder of photos) run to ~20-60
# MP for 360-degree panoramas. 64 MP decodes to at most 256 MB (4 bytes a pixel) per image and
# stays under Pillow's own bomb threshold (~89.5 MP), which is a ceiling over this one anyway.
DEFAULT_MAX_PIXELS = 64_000_000
# Encoded size: a 640x640 Street View JPEG is ~0.1 MB, a 60 MP original ~30 MB.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

Limit = Literal["bytes", "pixels", "pillow"]


class ImageRejected(Exception):
    """An image that was not decoded; the message names it (`what`) and why."""


class ImageTooLarge(ImageRejected):
    """Over a size limit: `limit` says which ("bytes", "pixels", or "pillow" for Pillow's own
    decompression-bomb guard, which no config raises)."""

    def __init__(self, message: str, limit: Limit):
        self.limit = limit
        super().__init__(message)


class ImageCorrupt(ImageRejected):
    """Not an image, or truncated/corrupt data."""


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"image limit {name} must be a positive integer, not {value!r}")


# warnings.catch_warnings swaps the process-wide filter list: two threads nesting it can restore
# each other's filters. Every use here is serialised and only wraps header parsing (cheap).
_WARNINGS_LOCK = threading.Lock()


@contextmanager
def bomb_warnings(action: Literal["error", "ignore"] = "error") -> Iterator[None]:
    """Within the block, Pillow's DecompressionBombWarning is an error (or silenced: for header-only
    reads that never decode pixels). Does not touch Pillow's MAX_IMAGE_PIXELS."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        yield


def _pixels(n: int) -> str:
    return f"{n:,} pixels"


def open_header(fp: Union[str, BinaryIO], *, max_pixels: int, what: str) -> Image.Image:
    """Open lazily (the header only, no pixels) and check the claimed size against max_pixels.
    Raises ImageTooLarge or ImageCorrupt; the caller loads (or just reads metadata)."""
    try:
        with bomb_warnings("error"):
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{what} is refused by Pillow's decompression-bomb guard: {exc}", "pillow") from None
    except Exception as exc:  # UnidentifiedImageError, truncated header, bad chunk, ...
        raise _as_rejected(exc, what) from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageTooLarge(f"{what} is {w}x{h} = {_pixels(w * h)}, over the limit of {_pixels(max_pixels)}", "pixels")
    return img


def open_image(data: bytes, *, max_pixels: int, max_bytes: int, what: str) -> Image.Image:
    """The image in `data`, fully decoded (`load()` done), or ImageTooLarge / ImageCorrupt.

    `what` names the image in messages ("Street View image (heading 90)"). Limits are explicit:
    callers pass them from config (`HttpConfig.max_image_pixels` / `max_image_bytes`)."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{what} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes", "bytes")
    img = open_header(io.BytesIO(data), max_pixels=max_pixels, what=what)
    try:
        img.load()  # the first frame; Pillow checks sizes again when seeking to other frames
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{what} is refused by Pillow's decompression-bomb guard: {exc}", "pillow") from None
    except Exception as exc:
        raise _as_rejected(exc, what) from None
    return img


def _as_rejected(exc: Exception, what: str) -> ImageRejected:
    text = str(exc)
    # PNG text chunks are zlib data too: Pillow caps what it inflates (PngImagePlugin.MAX_TEXT_CHUNK).
    if isinstance(exc, ValueError) and "Decompressed data too large" in text:
        return ImageTooLarge(f"{what} has an oversized compressed chunk: {text}", "pillow")
    return ImageCorrupt(f"{what} does not decode: {type(exc).__name__}: {text}")
