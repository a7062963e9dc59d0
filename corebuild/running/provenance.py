"""Code version and library versions recorded with every build."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from corebuild import __version__

_LIBS = ("apache-beam", "pyarrow", "numpy", "shapely", "pyproj", "mercantile", "pillow", "aiohttp", "tenacity", "rapidocr_onnxruntime", "onnxruntime")


@lru_cache(maxsize=1)
def code_version() -> str:
    """`<package version>+g<commit>[.dirty]`, or the package version outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
        return f"{__version__}+g{commit.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
