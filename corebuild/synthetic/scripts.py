"""Writing systems the synthetic world can put on its shop signs, and the font files that draw them.

Pillow's bundled font covers Latin only; the other scripts use fonts shipped inside pip packages
(`pip install 'corebuild[scripts]'`), found on disk without importing those packages. Kept free
of heavy imports: the manifest loader checks a world's script against `SCRIPTS`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from corebuild.errors import ConfigError

SCRIPTS = ("latin", "cyrillic", "arabic", "greek", "japanese")
DEFAULT_SCRIPT = "latin"

# script -> (importable package, font file inside it, pip package that ships it).
# DejaVu Sans (in matplotlib's wheel) covers Cyrillic, Arabic and Greek; IPAexGothic (in
# japanize-matplotlib) covers kana and kanji. Latin keeps Pillow's bundled font (None).
FONT_FILES: dict[str, Optional[tuple[str, str, str]]] = {
    "latin": None,
    "cyrillic": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf", "matplotlib"),
    "arabic": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf", "matplotlib"),
    "greek": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf", "matplotlib"),
    "japanese": ("japanize_matplotlib", "fonts/ipaexg.ttf", "japanize-matplotlib"),
}
# Scripts written right to left: laid out with libraqm (shaping, joining, bidi).
RTL_SCRIPTS = frozenset({"arabic"})


def check_script(script: object) -> str:
    if not isinstance(script, str) or script not in SCRIPTS:
        raise ValueError(f"unknown sign script {script!r} (known: {', '.join(SCRIPTS)})")
    return script


def font_path(script: str) -> Optional[Path]:
    """The font file for `script` (None: Pillow's bundled font). Located with `find_spec`, which
    does not import the package (importing matplotlib takes a second or more)."""
    entry = FONT_FILES[check_script(script)]
    if entry is None:
        return None
    package, relpath, pip_name = entry
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / relpath
        if path.is_file():
            return path
    raise ConfigError(
        f"synthetic_world script {script!r} draws its signs with {relpath.rsplit('/', 1)[-1]} from the {pip_name!r} "
        f"package, which is not installed: pip install {pip_name} (or pip install 'corebuild[scripts]')"
    )
