"""Resumable builds: work units, completion markers and the build's identity.

A region's points are cut into units of `unit_points` consecutive point indices. A unit is the
grain of progress: its rows go to shards with stable names (`shards/part-u00012-000.parquet`),
and only after those are stored does `_done/u00012.json` appear. A rerun with the same config
skips every unit with a marker; a unit without one is redone from scratch and overwrites its
shards by name, so a killed build resumes to exactly the rows a clean build writes.

Deduplication (one row per panorama/sequence) crosses units, so a marker also keeps the unit's
*claims*: which panorama each located point took. A rerun feeds them back into the dedupe step
in place of the finished points, and a pending point still loses to a lower-index point that
was done in an earlier attempt, as in a clean run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional, Sequence

from .errors import ConfigError
from .fetch import dedupe_key, keep_first
from .record import Record
from .storage import Storage

log = logging.getLogger("corebuild.resume")
BUILD_FILE = "_build.json"
DONE_DIR = "_done"
SHARDS_DIR = "shards"


def unit_of(point_index: int, unit_points: int) -> int:
    return point_index // unit_points


def marker_name(region_id: str, unit: int) -> str:
    return f"{region_id}/{DONE_DIR}/u{unit:05d}.json"


def shard_prefix(region_id: str, unit: int) -> str:
    return f"{region_id}/{SHARDS_DIR}/part-u{unit:05d}"


def units_for(sampled: int, unit_points: int) -> int:
    return -(-sampled // unit_points)


@dataclass(frozen=True)
class Claim:
    """A finished point's hold on a panorama/sequence, read back from its unit's marker."""

    sample_id: str
    point_index: int
    key: str  # dedupe_key(record)[1]: groups it with pending points
    what: str  # "panorama" | "Mapillary sequence"
    shown: str  # the provider's id, as a clean run's duplicate message names it


def claims_of(records: Iterable[Record]) -> list[list[Any]]:
    """What a unit's marker keeps for later dedupe: every point that was located, whatever
    became of it afterwards (a clean run's dedupe saw it too)."""
    out = []
    for r in records:
        if r.location is not None:
            what = "Mapillary sequence" if r.location.sequence_id else "panorama"
            out.append([dedupe_key(r)[1], r.point_index, r.sample_id, what, r.location.dedupe_key])
    return out


def resolve_duplicates(items: Sequence[Record | Claim]) -> list[Record]:
    """`keep_first` when some of the group finished in an earlier attempt (Claims)."""
    recs = [i for i in items if isinstance(i, Record)]
    claims = [i for i in items if isinstance(i, Claim)]
    if not recs:
        return []
    first = min(claims, key=lambda c: c.point_index) if claims else None
    if first is None or min(r.point_index for r in recs) < first.point_index:
        return keep_first(recs)
    return [r.fail("street.duplicate", f"same {first.what} {first.shown} as {first.sample_id}") for r in recs]


@dataclass(frozen=True)
class BuildState:
    """What a (re)started build knows before the pipeline runs."""

    build_id: str
    config_hash: str
    unit_points: int
    attempt: int
    done: frozenset[int]  # units with a completion marker
    resumed: bool


def _config_diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [path or "(config)"]


def done_units(storage: Storage, region_id: str) -> frozenset[int]:
    units = set()
    for name in storage.list(f"{region_id}/{DONE_DIR}/"):
        stem = name.rsplit("/", 1)[-1]
        if stem.startswith("u") and stem.endswith(".json") and stem[1:-5].isdigit():
            units.add(int(stem[1:-5]))
    return frozenset(units)


def start_build(storage: Storage, region_id: str, build_id: str, config_hash: str, config: dict, unit_points: int, code_version: str, overwrite: bool) -> BuildState:
    """Resume the build in `<output>/<region>` if it was made with this config; start afresh if
    there is none (or `overwrite`); refuse, naming the differences, if it was made with another."""
    raw = storage.read(f"{region_id}/{BUILD_FILE}")
    prev = json.loads(raw) if raw else None
    leftovers = [n for d in (SHARDS_DIR, DONE_DIR, "_sampling") for n in storage.list(f"{region_id}/{d}/")]
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


def write_unit(storage: Storage, region_id: str, unit: int, records: Sequence[Record], rows: Sequence[dict], writer_factory, attempt: int) -> dict[str, Any]:
    """The unit's shards first (atomic writes), then its marker: a marker always means its
    shards are whole. Returns the marker."""
    writer = writer_factory(storage, shard_prefix(region_id, unit))
    for row in rows:
        writer.write(row)
    writer.close()
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    marker = {
        "region_id": region_id,
        "unit": unit,
        "rows": len(rows),
        "points": sorted(r.point_index for r in records),
        "status_counts": statuses,
        "shards": writer.details,
        "claims": claims_of(records),
        "attempt": attempt,
        "finished_utc": datetime.now(timezone.utc).isoformat(),
    }
    storage.write(marker_name(region_id, unit), json.dumps(marker).encode())
    return marker


def read_markers(storage: Storage, region_id: str) -> list[dict[str, Any]]:
    out = []
    for name in storage.list(f"{region_id}/{DONE_DIR}/"):
        if name.endswith(".json"):
            out.append(json.loads(storage.read(name) or b"{}"))
    return sorted(out, key=lambda m: m["unit"])


def remove_orphans(storage: Storage, region_id: str, markers: Sequence[dict[str, Any]]) -> list[str]:
    """Shards no marker names (left by a killed attempt that had not finished its unit)."""
    keep = {f"{region_id}/{SHARDS_DIR}/{s['path']}" for m in markers for s in m["shards"]}
    orphans = [n for n in storage.list(f"{region_id}/{SHARDS_DIR}/") if n not in keep]
    for n in orphans:
        storage.delete(n)
    if orphans:
        log.info("removed %d shard(s) of unfinished units", len(orphans))
    clean = getattr(storage, "remove_stale_temps", None)  # local storage: half-written temp files
    stale = clean(f"{region_id}/") if clean else 0
    if stale:
        log.info("removed %d temp file(s) of interrupted writes", stale)
    return orphans


def check_units(markers: Sequence[dict[str, Any]], sampled: int, unit_points: int) -> Optional[str]:
    """None when the markers cover every sampled point exactly once, else what is wrong."""
    want = units_for(sampled, unit_points)
    have = {m["unit"] for m in markers}
    missing = sorted(set(range(want)) - have)
    if missing:
        return f"{len(missing)} of {want} units have no completion marker (first: u{missing[0]:05d})"
    points = sorted(p for m in markers for p in m["points"])
    if points != list(range(sampled)):
        return f"markers cover {len(points)} points, {len(set(points))} distinct; sampled {sampled}"
    return None
