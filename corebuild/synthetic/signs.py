"""Shop-sign textures: the text a sign shows, drawn in Pillow's bundled font. The world sizes its
signs from them; the renderer pastes them into street views."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled scalable font: identical on every machine, no system fonts needed.
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=512)
def sign_texture(text: str, background: tuple, foreground: tuple) -> Image.Image:
    font = _font(64)
    left, top, right, bottom = font.getbbox(text, stroke_width=2)
    pad = 18
    img = Image.new("RGB", (right - left + 2 * pad, 64 + 2 * pad), background)
    # A light stroke makes the bundled regular face read like the bold faces of shop signs.
    ImageDraw.Draw(img).text((pad - left, pad + (64 - (bottom - top)) // 2 - top), text, font=font, fill=foreground, stroke_width=2, stroke_fill=foreground)
    return img
