"""Data that ships inside the package: the prompt sets (and the segment vocabulary) in
`assets/prompts/`, the region manifests in `assets/region_manifests/` (the repository's top-level
`prompts` and `region_manifests` are links to them). Found with importlib.resources, so an
installed corebuild builds from any working directory, on Dataflow workers too.

A directory setting (`--prompts`, `--manifests`, `DescribeConfig.prompts_dir`, ...) is either a
path or one of the names below, which stand for the packaged data of whichever corebuild reads
them. The name is what configs record: the same in a checkout and in an installed wheel."""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import os
from functools import lru_cache
from pathlib import Path

PACKAGED = "corebuild:"  # prefix of a packaged directory's name
PROMPTS = PACKAGED + "prompts"  # the default prompts directory
MANIFESTS = PACKAGED + "region_manifests"  # the default region manifests directory

_extracted = contextlib.ExitStack()  # only a zipped install extracts anything
atexit.register(_extracted.close)


def is_packaged(where: str | os.PathLike) -> bool:
    return isinstance(where, str) and where.startswith(PACKAGED)


def locate(where: str | os.PathLike) -> Path:
    """The directory a setting names: the packaged data for `corebuild:<name>`, else the path."""
    return _packaged(where[len(PACKAGED) :]) if is_packaged(where) else Path(where)


@lru_cache(maxsize=None)
def _packaged(name: str) -> Path:
    return _extracted.enter_context(importlib.resources.as_file(importlib.resources.files(__package__) / name))
