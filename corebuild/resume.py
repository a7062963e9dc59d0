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

import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

from .errors import ConfigError
from .failures import failure_class, selected
from .fetch import duplicate_of, imagery_kind, keeper_named, location_key
from .record import Record, StreetLocation
from .storage import Storage

log = logging.getLogger("corebuild.resume")
BUILD_FILE = "_build.json"
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


@dataclass(frozen=True)
class Claim:
    """A finished point's hold on a panorama/sequence, read back from its unit's marker."""

    sample_id: str
    point_index: int
    key: str  # location_key: groups it with pending points on the same panorama/sequence
    what: str  # "panorama" | "Mapillary sequence"
    shown: str  # the provider's id, as a clean run's duplicate message names it
    dup_of: Optional[str] = None  # the keeper its row names, if its row is a street.duplicate
    # What rebuilds the located record when its row must change (markers of older versions lack it).
    base: Optional[tuple[str, int, float, float]] = None  # region_id, seed, lat, lon
    location: Optional[StreetLocation] = None

    @classmethod
    def from_marker(cls, region_id: str, item: Sequence[Any]) -> "Claim":
        key, index, sid, what, shown, *rest = item
        if len(rest) < 2:
            return cls(sid, index, key, what, shown)
        dup_of, extra = rest[0], rest[1]
        return cls(sid, index, key, what, shown, dup_of, (region_id, extra["seed"], extra["lat"], extra["lon"]), StreetLocation(**extra["location"]))

    def record(self) -> Record:
        """The located record again, to be carried on to its (new) outcome."""
        assert self.base is not None and self.location is not None
        region_id, seed, lat, lon = self.base
        return Record(self.sample_id, region_id, seed, self.point_index, lat, lon, location=self.location)


def claims_of(records: Iterable[Record]) -> list[list[Any]]:
    """What a unit's marker keeps for later dedupe: every point that was located, whatever
    became of it afterwards (a clean run's dedupe saw it too), which keeper its row names, and
    enough to rebuild the located record if a later attempt must change its row."""
    out = []
    for r in records:
        if r.location is not None:
            what = imagery_kind(r.location)
            extra = {"seed": r.seed, "lat": r.lat, "lon": r.lon, "location": dataclasses.asdict(r.location)}
            out.append([location_key(r.location), r.point_index, r.sample_id, what, r.location.dedupe_key, keeper_named(r), extra])
    return out


def resolve_duplicates(items: Sequence[Record | Claim]) -> list[Record]:
    """One dedupe group (points on one panorama/sequence): records being processed now and claims
    of finished points. The lowest point index keeps it, as in a clean run. Records come back kept
    or as duplicates; a claim comes back (as a record) only when its stored row no longer says
    what a clean run would: a point retried with a lower index took the panorama from it, or the
    point it lost to has left the group. Its unit is then rewritten."""
    recs = [i for i in items if isinstance(i, Record)]
    claims = [i for i in items if isinstance(i, Claim)]
    if not recs and not claims:
        return []
    keeper = min(recs + claims, key=lambda i: i.point_index)
    if isinstance(keeper, Record):
        if keeper.location is None:  # an unlocated record is alone in its group
            return recs
        what, shown = imagery_kind(keeper.location), keeper.location.dedupe_key
    else:
        what, shown = keeper.what, keeper.shown
    out = [r if r is keeper else duplicate_of(r, what, shown, keeper.sample_id) for r in recs]
    for c in claims:
        want_dup_of = None if c is keeper else keeper.sample_id
        if c.dup_of == want_dup_of:
            continue
        if c.location is None:
            log.warning("%s (a marker of an older version) should now %s but its marker cannot rebuild it", c.sample_id, f"be a duplicate of {want_dup_of}" if want_dup_of else "keep its panorama")
            continue
        rec = c.record()
        out.append(rec if want_dup_of is None else duplicate_of(rec, what, shown, keeper.sample_id))
    return out


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


def note_attempt(storage: Storage, region_id: str, **fields: Any) -> None:
    """Add what this attempt does (a retry pass) to its entry in _build.json."""
    doc = json.loads(storage.read(f"{region_id}/{BUILD_FILE}") or b"{}")
    doc["attempts"][-1].update(fields)
    storage.write(f"{region_id}/{BUILD_FILE}", json.dumps(doc, indent=2).encode())


def write_unit(storage: Storage, region_id: str, unit: int, records: Sequence[Record], rows: Sequence[dict], writer_factory, attempt: int) -> dict[str, Any]:
    """The unit's shards first (atomic writes), then its marker: a marker always means its
    shards are whole. Returns the marker."""
    shards = _store_rows(storage, shard_prefix(region_id, unit), rows, writer_factory)
    marker = _marker(region_id, unit, rows, shards, claims_of(records), attempt)
    storage.write(marker_name(region_id, unit), json.dumps(marker).encode())
    return marker


def read_unit_rows(storage: Storage, region_id: str, marker: dict[str, Any]) -> list[dict[str, Any]]:
    from .dataset import open_parquet

    rows = []
    for s in marker["shards"]:
        rows += open_parquet(storage, f"{region_id}/{SHARDS_DIR}/{s['path']}").read(use_threads=False).to_pylist()
    return rows


def merge_unit(
    storage: Storage, region_id: str, unit: int, records: Sequence[Record], row_of: Callable[[Record], dict], writer_factory, attempt: int
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
    claims = [c for c in marker.get("claims", []) if c[2] not in replace] + claims_of(records)
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
    from .dataset import open_parquet

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
