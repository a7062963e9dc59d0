"""Shop-sign textures: the text a sign shows, drawn in Pillow's bundled font (Latin) or a packaged
font for the other scripts (`corebuild.synthetic.scripts`). The world sizes its signs from them;
the renderer pastes them into street views."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, features

from corebuild.errors import ConfigError
from corebuild.synthetic.scripts import DEFAULT_SCRIPT, RTL_SCRIPTS, font_path


@lru_cache(maxsize=16)
def _font(size: int, script: str = DEFAULT_SCRIPT) -> ImageFont.FreeTypeFont:
    path = font_path(script)
    if path is None:
        # Pillow's bundled scalable font: identical on every machine, no system fonts needed.
        return ImageFont.load_default(size=size)
    if script in RTL_SCRIPTS and not features.check("raqm"):
        raise ConfigError(
            f"synthetic_world script {script!r} needs Pillow with libraqm (PIL.features.check('raqm') is False here): "
            "without it the letters are neither joined nor laid out right to left"
        )
    # libraqm shapes Arabic (joined letter forms) and lays it out right to left (bidi).
    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(path), size, layout_engine=engine)


PAD = 18
# Textures kept drawn: at least the demo world's 900 signs, so a render worker draws none of them
# (the server draws them before its render workers fork: corebuild.synthetic.server.RenderWorkers).
SIGN_TEXTURES = 1024


def _layout(text: str, script: str) -> tuple[ImageFont.FreeTypeFont, tuple[int, int, int, int], int, tuple[int, int]]:
    """(font, the text's ink box, its line height, the texture's size)."""
    font = _font(64, script)
    left, top, right, bottom = bbox = font.getbbox(text, stroke_width=2)
    # Latin caps fit in 64 px; Arabic dots and descenders, or CJK ink, may take more.
    height = max(64, bottom - top)
    return font, bbox, height, (right - left + 2 * PAD, height + 2 * PAD)


def sign_texture_size(text: str, script: str = DEFAULT_SCRIPT) -> tuple[int, int]:
    """Pixel size of a sign's texture (whatever its colours), from the text's layout alone."""
    return _layout(text, script)[3]


@lru_cache(maxsize=SIGN_TEXTURES)
def sign_texture(text: str, background: tuple, foreground: tuple, script: str = DEFAULT_SCRIPT) -> Image.Image:
    font, (left, top, right, bottom), height, size = _layout(text, script)
    img = Image.new("RGB", size, background)
    # A light stroke makes the bundled regular face read like the bold faces of shop signs.
    ImageDraw.Draw(img).text((PAD - left, PAD + (height - (bottom - top)) // 2 - top), text, font=font, fill=foreground, stroke_width=2, stroke_fill=foreground)
    return img
