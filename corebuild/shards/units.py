"""Work units on storage: a region's points cut into units of `unit_points` consecutive point
indices, each stored as its shards (stable names, `shards/part-u00012-000.parquet`) and then its
completion marker (`_done/u00012.json`): a marker always means its shards are whole. A marker
also keeps the unit's dedupe *claims* (corebuild.stages.dedupe) and its failure classes; a unit
whose rows change later is rewritten whole as its next generation (merge_unit)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

from corebuild.failures import failure_class, selected
from corebuild.record import Record
from corebuild.shards.storage import Storage, open_parquet

log = logging.getLogger("corebuild.shards.units")


DONE_DIR = "_done"


SHARDS_DIR = "shards"


def unit_of(point_index: int, unit_points: int) -> int:
    return point_index // unit_points


def marker_name(region_id: str, unit: int) -> str:
    return f"{region_id}/{DONE_DIR}/u{unit:05d}.json"


def shard_prefix(region_id: str, unit: int, generation: int = 0) -> str:
    """A unit's shards; a retry pass writes the unit's next generation beside the current one
    and the marker switches to it, so a kill mid-retry leaves one whole generation named."""
    return f"{region_id}/{SHARDS_DIR}/part-u{unit:05d}" + (f"-g{generation}" if generation else "")


def units_for(sampled: int, unit_points: int) -> int:
    return -(-sampled // unit_points)


def done_units(storage: Storage, region_id: str) -> frozenset[int]:
    units = set()
    for name in storage.list(f"{region_id}/{DONE_DIR}/"):
        stem = name.rsplit("/", 1)[-1]
        if stem.startswith("u") and stem.endswith(".json") and stem[1:-5].isdigit():
            units.add(int(stem[1:-5]))
    return frozenset(units)


@dataclass(frozen=True)
class BuildState:
    """What a (re)started build knows before the pipeline runs."""

    build_id: str
    config_hash: str
    unit_points: int
    attempt: int
    done: frozenset[int]  # units with a completion marker
    resumed: bool
    retry: frozenset[int] = frozenset()  # point indices of finished units whose failure rows are re-attempted

    @property
    def retry_units(self) -> frozenset[int]:
        return frozenset(unit_of(i, self.unit_points) for i in self.retry)


def _class_counts(rows: Iterable[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        cls = failure_class(row.get("failure_reason")) if row.get("status") == "failed" else None
        if cls:
            out[cls] = out.get(cls, 0) + 1
    return out


def _marker(region_id: str, unit: int, rows: Sequence[dict], shards: list, claims: list, attempt: int, generation: int = 0, **extra) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {
        "region_id": region_id,
        "unit": unit,
        "rows": len(rows),
        "points": sorted(row["point_index"] for row in rows),
        "status_counts": statuses,
        "failure_classes": _class_counts(rows),
        "shards": shards,
        "claims": claims,
        "attempt": attempt,
        "generation": generation,
        "finished_utc": datetime.now(timezone.utc).isoformat(),
        **extra,
    }


def _store_rows(storage: Storage, prefix: str, rows: Sequence[dict], writer_factory):
    writer = writer_factory(storage, prefix)
    for row in rows:
        writer.write(row)
    writer.close()
    return writer.details


def write_unit(storage: Storage, region_id: str, unit: int, rows: Sequence[dict], writer_factory, attempt: int, claims: list) -> dict[str, Any]:
    """The unit's shards first (atomic writes), then its marker: a marker always means its
    shards are whole. `claims`: the unit's dedupe claims (corebuild.stages.dedupe.claims_of).
    Returns the marker."""
    shards = _store_rows(storage, shard_prefix(region_id, unit), rows, writer_factory)
    marker = _marker(region_id, unit, rows, shards, claims, attempt)
    storage.write(marker_name(region_id, unit), json.dumps(marker).encode())
    return marker


def read_unit_rows(storage: Storage, region_id: str, marker: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in marker["shards"]:
        rows += open_parquet(storage, f"{region_id}/{SHARDS_DIR}/{s['path']}").read(use_threads=False).to_pylist()
    return rows


def merge_unit(
    storage: Storage, region_id: str, unit: int, records: Sequence[Record], row_of: Callable[[Record], dict], writer_factory, attempt: int, claims: list
) -> dict[str, Any]:
    """A finished unit whose rows `records` replace (a retry pass, or a dedupe outcome that
    changed): the whole unit is written again as its next generation of shards, then its marker
    switches to them (the commit), then the old generation is deleted. Killed anywhere, the
    marker names one whole generation and the other is an orphan the next run removes."""
    marker = json.loads(storage.read(marker_name(region_id, unit)) or b"{}")
    replace = {r.sample_id: r for r in records}
    unknown = sorted(set(r.point_index for r in records) - set(marker.get("points", [])))
    if unknown:
        raise ValueError(f"unit u{unit:05d} of {region_id} has no points {unknown[:5]}")
    old = read_unit_rows(storage, region_id, marker)
    rows = [row_of(replace[row["sample_id"]]) if row["sample_id"] in replace else {**row, "failure_class": failure_class(row["failure_reason"])} for row in old]
    rows.sort(key=lambda row: row["point_index"])
    generation = int(marker.get("generation", 0)) + 1
    shards = _store_rows(storage, shard_prefix(region_id, unit, generation), rows, writer_factory)
    claims = [c for c in marker.get("claims", []) if c[2] not in replace] + claims
    claims.sort(key=lambda c: c[1])
    retried = marker.get("retried", []) + [{"attempt": attempt, "points": sorted(replace[s].point_index for s in replace)}]
    new = _marker(region_id, unit, rows, shards, claims, attempt, generation, retried=retried)
    storage.write(marker_name(region_id, unit), json.dumps(new).encode())
    keep = {s["path"] for s in shards}
    for s in marker.get("shards", []):
        if s["path"] not in keep:
            storage.delete(f"{region_id}/{SHARDS_DIR}/{s['path']}")
    return new


def retry_selection(storage: Storage, region_id: str, markers: Sequence[dict[str, Any]], selection: Optional[Iterable[str]]) -> dict[str, int]:
    """Point index -> failure reason of the rows of finished units that a retry pass
    re-attempts (`selection` None: every transient reason)."""
    points: dict[int, str] = {}
    for m in markers:
        for s in m["shards"]:
            cols = open_parquet(storage, f"{region_id}/{SHARDS_DIR}/{s['path']}").read(columns=["point_index", "status", "failure_reason"], use_threads=False).to_pydict()
            for idx, st, why in zip(cols["point_index"], cols["status"], cols["failure_reason"]):
                if st == "failed" and selected(why, selection):
                    points[idx] = why
    return points


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
