"""Resumable builds: the build's identity (`_build.json`: its config hash and attempts) and its
state when a run starts. The grain of progress is the work unit (corebuild.shards.units): a rerun
with the same config skips every unit with a marker; a unit without one is redone from scratch
and overwrites its shards by name, so a killed build resumes to exactly the rows a clean build
writes.

Deduplication (one row per panorama/sequence) crosses units, so a marker also keeps the unit's
*claims*: which panorama each located point took. A rerun feeds them back into the dedupe step
in place of the finished points, and a pending point still loses to a lower-index point that
was done in an earlier attempt, as in a clean run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from corebuild.errors import ConfigError
from corebuild.shards.storage import Storage
from corebuild.shards.units import DONE_DIR, SAMPLING_DIR, SHARDS_DIR, BuildState, done_units

log = logging.getLogger("corebuild.running.resume")
BUILD_FILE = "_build.json"


def _config_diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [path or "(config)"]


def start_build(storage: Storage, region_id: str, build_id: str, config_hash: str, config: dict, unit_points: int, code_version: str, overwrite: bool) -> BuildState:
    """Resume the build in `<output>/<region>` if it was made with this config; start afresh if
    there is none (or `overwrite`); refuse, naming the differences, if it was made with another."""
    raw = storage.read(f"{region_id}/{BUILD_FILE}")
    prev = json.loads(raw) if raw else None
    leftovers = [n for d in (SHARDS_DIR, DONE_DIR, SAMPLING_DIR) for n in storage.list(f"{region_id}/{d}/")]
    if prev is not None and not overwrite and prev.get("config_hash") != config_hash:
        diff = _config_diff(prev.get("config", {}), config)
        raise ConfigError(
            f"{storage.join(region_id)} holds build {prev.get('build_id')} made with another config "
            f"(differs in: {', '.join(diff[:8]) or 'code-defined fields'}); rerun with --overwrite to replace it, or choose another --output"
        )
    if prev is None and leftovers and not overwrite:
        raise ConfigError(
            f"{storage.join(region_id)} holds {len(leftovers)} objects of a build that corebuild cannot resume "
            f"(no {BUILD_FILE}); rerun with --overwrite to replace it, or choose another --output"
        )
    if prev is not None and not overwrite:
        attempts = prev.get("attempts", []) + [{"started_utc": datetime.now(timezone.utc).isoformat(), "code_version": code_version}]
        if prev.get("code_version") != code_version:
            log.warning("resuming %s made by %s with %s: rows of the two versions will be mixed", prev["build_id"], prev.get("code_version"), code_version)
        state = BuildState(prev["build_id"], config_hash, int(prev["unit_points"]), len(attempts), done_units(storage, region_id), True)
        storage.write(f"{region_id}/{BUILD_FILE}", json.dumps({**prev, "attempts": attempts}, indent=2).encode())
        return state
    stale = leftovers + [n for n in (f"{region_id}/manifest.json", f"{region_id}/{BUILD_FILE}") if storage.exists(n)]
    if stale:
        log.warning("replacing the previous build in %s (%d objects)", storage.join(region_id), len(stale))
    for name in stale:
        storage.delete(name)
    doc = {
        "build_id": build_id,
        "config_hash": config_hash,
        "unit_points": unit_points,
        "code_version": code_version,
        "config": config,
        "attempts": [{"started_utc": datetime.now(timezone.utc).isoformat(), "code_version": code_version}],
    }
    storage.write(f"{region_id}/{BUILD_FILE}", json.dumps(doc, indent=2).encode())
    return BuildState(build_id, config_hash, unit_points, 1, frozenset(), False)


def read_build(storage: Storage, region_id: str) -> dict[str, Any]:
    return json.loads(storage.read(f"{region_id}/{BUILD_FILE}") or b"{}")


def update_build(storage: Storage, region_id: str, **fields: Any) -> dict[str, Any]:
    """Set top-level fields of _build.json (the sampling rounds); returns the document."""
    doc = {**read_build(storage, region_id), **fields}
    storage.write(f"{region_id}/{BUILD_FILE}", json.dumps(doc, indent=2).encode())
    return doc


def note_attempt(storage: Storage, region_id: str, **fields: Any) -> None:
    """Add what this attempt does (a retry pass) to its entry in _build.json."""
    doc = read_build(storage, region_id)
    doc["attempts"][-1].update(fields)
    storage.write(f"{region_id}/{BUILD_FILE}", json.dumps(doc, indent=2).encode())


