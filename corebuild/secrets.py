"""Secrets come from the environment (or a file named by `<VAR>_FILE`), never from config."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def resolve_secret(env_name: str, what: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value.strip()
    file_var = f"{env_name}_FILE"
    path = os.environ.get(file_var)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file_var}={path}: {exc.strerror}") from None
    raise ConfigError(
        f"{what} needs a secret: set {env_name} (or {file_var} to a file holding it). "
        "It is read on the workers and never written to logs, options or shards."
    )
