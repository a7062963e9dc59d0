"""The dedupe stage: one row per panorama or Mapillary sequence. Points located on the same
imagery form a group; the lowest point index keeps it and the others become `street.duplicate`
rows naming their keeper. Order-independent, so it is the same however Beam groups it.

Dedupe crosses work units, so a finished unit's marker keeps *claims* (which panorama each
located point took); a rerun feeds them back into the groups in place of the finished points.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from corebuild.record import Record, StreetLocation

log = logging.getLogger("corebuild.stages.dedupe")


def location_key(location) -> str:
    return f"{location.provider}:{location.dedupe_key}"


def joins_dedupe(rec: Record) -> bool:
    """A located point that has not failed: only these can duplicate each other."""
    return not rec.failed and rec.location is not None


def dedupe_key(rec: Record) -> tuple[str, str]:
    """Records that would duplicate each other share this key; failed ones never do."""
    if not joins_dedupe(rec):
        return (rec.region_id, f"\0{rec.sample_id}")
    assert rec.location is not None
    return (rec.region_id, location_key(rec.location))


def dedupe_bucket(key: str, buckets: int) -> int:
    """Which of `buckets` groups a location key falls in: the same in every process (crc32, not
    Python's per-process salted hash), so one panorama's points and claims always meet."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % buckets


DUPLICATE = "street.duplicate"
_AS = " as "


def imagery_kind(location) -> str:
    """What two points share when they duplicate each other, as the duplicate row says it."""
    return "Mapillary sequence" if location.sequence_id else "panorama"


def duplicate_of(rec: Record, keeper_id: str) -> Record:
    """`rec` as the duplicate of its group's keeper. What they share is said from rec's own
    location: one group shares provider and dedupe key, so it says what the keeper's would."""
    return rec.fail(DUPLICATE, f"same {imagery_kind(rec.location)} {rec.location.dedupe_key}{_AS}{keeper_id}")


def keeper_named(rec: Record) -> Optional[str]:
    """The keeper a duplicate row names (sample ids hold no spaces), else None."""
    return rec.error.rsplit(_AS, 1)[-1] if rec.failure_reason == DUPLICATE and rec.error else None


def dedupe(records: Sequence[Record]) -> list[Record]:
    """Dedupe in one process (no finished units): the records in their order, duplicates failed."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[dedupe_key(r)].append(r)
    out = {r.sample_id: r for g in groups.values() for r in resolve_duplicates(g)}
    return [out[r.sample_id] for r in records]


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


@dataclass(frozen=True)
class Duplicate:
    """Dedupe's verdict on a pending located point: its row becomes a street.duplicate naming
    its keeper. What the pipeline sends to the point's unit instead of the record itself."""

    point_index: int
    keeper_id: str


def settle(members: Sequence[int | Claim], sample_id_of: Callable[[int], str]) -> list[Duplicate | Record]:
    """One dedupe group (points on one panorama/sequence) by what decides it: the point indexes
    of pending located points and the claims of finished ones. The lowest index keeps it, as in a
    clean run. Returns only what changes: a Duplicate for each pending point that lost, and the
    located record again (kept or as a duplicate) of each claim whose stored row no longer says
    what a clean run would -- a point retried with a lower index took the panorama from it, or
    the point it lost to has left the group; its unit is then rewritten. Order-independent."""
    if not members:
        return []
    first = min(members, key=lambda m: m if isinstance(m, int) else m.point_index)
    keeper = first if isinstance(first, int) else first.point_index
    keeper_id = sample_id_of(first) if isinstance(first, int) else first.sample_id
    out: list[Duplicate | Record] = [Duplicate(m, keeper_id) for m in members if isinstance(m, int) and m != keeper]
    for c in members:
        if isinstance(c, int):
            continue
        want_dup_of = None if c.point_index == keeper else keeper_id
        if c.dup_of == want_dup_of:
            continue
        if c.location is None:
            log.warning("%s (a marker of an older version) should now %s but its marker cannot rebuild it", c.sample_id, f"be a duplicate of {want_dup_of}" if want_dup_of else "keep its panorama")
            continue
        rec = c.record()
        out.append(rec if want_dup_of is None else duplicate_of(rec, want_dup_of))
    return out


def settle_bucket(items: Iterable[tuple[str, int] | Claim], sample_id_of: Callable[[int], str]) -> list[Duplicate | Record]:
    """`settle` over every dedupe group in a bucket of them: `items` are pending located points as
    (location key, point index) and finished points' claims, in any order. A panorama one
    pending point took alone changes nothing and is skipped without a call."""
    groups: dict[str, list[int | Claim]] = defaultdict(list)
    for item in items:
        if isinstance(item, Claim):
            groups[item.key].append(item)
        else:
            key, index = item
            groups[key].append(index)
    out: list[Duplicate | Record] = []
    for members in groups.values():
        if len(members) > 1 or not isinstance(members[0], int):
            out += settle(members, sample_id_of)
    return out


def apply_verdicts(records: Iterable[Record], verdicts: Iterable[Duplicate]) -> list[Record]:
    """Pending records with their group's verdicts applied (a point without one kept its imagery)."""
    keeper_of = {v.point_index: v.keeper_id for v in verdicts}
    return [duplicate_of(r, keeper_of[r.point_index]) if r.point_index in keeper_of else r for r in records]


def resolve_duplicates(items: Sequence[Record | Claim]) -> list[Record]:
    """`settle` over whole records: the group's records come back kept or as duplicates, and
    the claims whose rows must change come back as records."""
    recs = [i for i in items if isinstance(i, Record)]
    if not all(joins_dedupe(r) for r in recs):  # an unlocated or failed record is alone in its group
        return recs
    by_index = {r.point_index: r for r in recs}
    members = [r.point_index for r in recs] + [i for i in items if isinstance(i, Claim)]
    changes = settle(members, lambda i: by_index[i].sample_id)
    verdicts = [c for c in changes if isinstance(c, Duplicate)]
    return apply_verdicts(recs, verdicts) + [c for c in changes if isinstance(c, Record)]
