"""Versioned prompt sets (packaged in `corebuild/assets/prompts/`, or a `--prompts` directory): an
id plus a content hash recorded on every row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corebuild.assets import locate
from corebuild.errors import ConfigError

# The --prompts flag (DescribeConfig.prompts_dir and SegmentConfig.prompts_dir, one directory).
PROMPTS_HELP = "prompt sets directory, segment vocabulary included, or the packaged ones"


@dataclass(frozen=True)
class Prompt:
    id: str
    hash: str  # first 16 hex digits of sha256 of the file's bytes
    body: dict[str, Any]


def load_prompt(prompts_dir: str | Path, prompt_id: str) -> Prompt:
    """`prompts_dir`: a directory, or `corebuild.assets.PROMPTS` (the packaged prompt sets)."""
    prompts_dir = locate(prompts_dir)
    path = prompts_dir / f"{prompt_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in prompts_dir.glob("*.json")) if prompts_dir.is_dir() else []
        raise ConfigError(f"{path}: no prompt set {prompt_id!r} (known: {', '.join(known) or 'none'})")
    raw = path.read_bytes()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if body.get("id") != prompt_id:
        raise ConfigError(f"{path}: id {body.get('id')!r} does not match file name {prompt_id!r}")
    return Prompt(prompt_id, hashlib.sha256(raw).hexdigest()[:16], body)
