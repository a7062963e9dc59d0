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


SAMPLING_DIR = "_sampling"  # one JSON per region: points requested and sampled, any shortfall


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
    take: Optional[int] = None  # points of the rank order this round samples; None: the region's target
    grow: frozenset[int] = frozenset()  # point indices a longer sample adds to finished units that end short

    @property
    def retry_units(self) -> frozenset[int]:
        """Finished units that this run rewrites (retried points, points added)."""
        return frozenset(unit_of(i, self.unit_points) for i in self.retry | self.grow)

    def units_to_run(self, take: int) -> frozenset[int]:
        """The units a round of `take` points runs: those without a marker, and those it rewrites
        (the pipeline's own filter, point by point: pipelines/build_region.py, "Pending")."""
        return (frozenset(range(units_for(take, self.unit_points))) - self.done) | self.retry_units


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
    changed) or extend (a top-up round's points past the end of a unit that ends short): the
    whole unit is written again as its next generation of shards, then its marker switches to
    them (the commit), then the old generation is deleted. Killed anywhere, the marker names one
    whole generation and the other is an orphan the next run removes."""
    marker = json.loads(storage.read(marker_name(region_id, unit)) or b"{}")
    have = set(marker.get("points", []))
    added = [r for r in records if r.point_index not in have]
    misplaced = sorted(r.point_index for r in added if r.point_index <= max(have, default=-1))
    if misplaced:  # a unit only grows at its end
        raise ValueError(f"unit u{unit:05d} of {region_id} has no points {misplaced[:5]}")
    replace = {r.sample_id: r for r in records if r.point_index in have}
    old = read_unit_rows(storage, region_id, marker)
    rows = [row_of(replace[row["sample_id"]]) if row["sample_id"] in replace else {**row, "failure_class": failure_class(row["failure_reason"])} for row in old]
    rows = sorted(rows + [row_of(r) for r in added], key=lambda row: row["point_index"])
    kept_claims = {r.sample_id for r in records}
    claims = [c for c in marker.get("claims", []) if c[2] not in kept_claims] + claims
    claims.sort(key=lambda c: c[1])
    history = {}
    if replace:
        history["retried"] = marker.get("retried", []) + [{"attempt": attempt, "points": sorted(replace[s].point_index for s in replace)}]
    if added:
        history["grown"] = marker.get("grown", []) + [{"attempt": attempt, "points": [min(r.point_index for r in added), max(r.point_index for r in added)]}]
    return _next_generation(storage, region_id, marker, rows, claims, writer_factory, attempt, **history)


def _next_generation(storage: Storage, region_id: str, marker: dict[str, Any], rows: Sequence[dict], claims: list, writer_factory, attempt: int, **extra) -> dict[str, Any]:
    """Store `rows` as the unit's next generation, switch its marker to them (the commit), then
    delete the old generation's shards."""
    unit = int(marker["unit"])
    generation = int(marker.get("generation", 0)) + 1
    shards = _store_rows(storage, shard_prefix(region_id, unit, generation), rows, writer_factory)
    history = {k: marker[k] for k in ("retried", "grown", "cut") if k in marker}
    new = _marker(region_id, unit, rows, shards, claims, attempt, generation, **{**history, **extra})
    storage.write(marker_name(region_id, unit), json.dumps(new).encode())
    keep = {s["path"] for s in shards}
    for s in marker.get("shards", []):
        if s["path"] not in keep:
            storage.delete(f"{region_id}/{SHARDS_DIR}/{s['path']}")
    return new


def cut_unit(storage: Storage, region_id: str, marker: dict[str, Any], below: int, writer_factory, attempt: int) -> dict[str, Any]:
    """A finished unit that straddles the end of a trimmed sample: only its points below `below`
    stay, written as its next generation (rows and dedupe claims alike). Returns the marker."""
    rows = [{**row, "failure_class": failure_class(row["failure_reason"])} for row in read_unit_rows(storage, region_id, marker) if row["point_index"] < below]
    rows.sort(key=lambda row: row["point_index"])
    claims = [c for c in marker.get("claims", []) if c[1] < below]
    cut = marker.get("cut", []) + [{"attempt": attempt, "below": below, "dropped": len(marker["points"]) - len(rows)}]
    return _next_generation(storage, region_id, marker, rows, claims, writer_factory, attempt, cut=cut)


def drop_unit(storage: Storage, region_id: str, marker: dict[str, Any]) -> None:
    """A finished unit wholly past the end of a trimmed sample: its marker first (from then on
    its shards are orphans, which any later run removes), then its shards."""
    storage.delete(marker_name(region_id, int(marker["unit"])))
    for s in marker.get("shards", []):
        storage.delete(f"{region_id}/{SHARDS_DIR}/{s['path']}")


def finished_units(markers: Sequence[dict[str, Any]], take: int, unit_points: int) -> tuple[frozenset[int], frozenset[int]]:
    """(units done for a sample of `take` points, points to add to them). A unit whose marker
    holds a prefix of its points (the last unit of a shorter sample, or one a trim cut short)
    is done and grows by the rest of its points below `take`; any other gap redoes the unit."""
    done: set[int] = set()
    grow: set[int] = set()
    for m in markers:
        lo = int(m["unit"]) * unit_points
        hi = min(lo + unit_points, take)
        points = set(m["points"])
        if lo >= take or points != set(range(lo, lo + len(points))):
            continue
        done.add(int(m["unit"]))
        grow.update(range(lo + len(points), hi))
    return frozenset(done), frozenset(grow)


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
