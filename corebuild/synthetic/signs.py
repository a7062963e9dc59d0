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


@lru_cache(maxsize=512)
def sign_texture(text: str, background: tuple, foreground: tuple, script: str = DEFAULT_SCRIPT) -> Image.Image:
    font = _font(64, script)
    left, top, right, bottom = font.getbbox(text, stroke_width=2)
    pad = 18
    # Latin caps fit in 64 px; Arabic dots and descenders, or CJK ink, may take more.
    height = max(64, bottom - top)
    img = Image.new("RGB", (right - left + 2 * pad, height + 2 * pad), background)
    # A light stroke makes the bundled regular face read like the bold faces of shop signs.
    ImageDraw.Draw(img).text((pad - left, pad + (height - (bottom - top)) // 2 - top), text, font=font, fill=foreground, stroke_width=2, stroke_fill=foreground)
    return img
