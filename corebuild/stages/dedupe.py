"""The dedupe stage: one row per panorama or Mapillary sequence. Points located on the same
imagery form a group; the lowest point index keeps it and the others become `street.duplicate`
rows naming their keeper. Order-independent, so it is the same however Beam groups it.

Dedupe crosses work units, so a finished unit's marker keeps *claims* (which panorama each
located point took); a rerun feeds them back into the groups in place of the finished points.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from corebuild.record import Record, StreetLocation

log = logging.getLogger("corebuild.stages.dedupe")


def location_key(location) -> str:
    return f"{location.provider}:{location.dedupe_key}"


def dedupe_key(rec: Record) -> tuple[str, str]:
    """Records that would duplicate each other share this key; failed ones never do."""
    if rec.failed or rec.location is None:
        return (rec.region_id, f"\0{rec.sample_id}")
    return (rec.region_id, location_key(rec.location))


DUPLICATE = "street.duplicate"
_AS = " as "


def imagery_kind(location) -> str:
    """What two points share when they duplicate each other, as the duplicate row says it."""
    return "Mapillary sequence" if location.sequence_id else "panorama"


def duplicate_of(rec: Record, what: str, shown: str, keeper_id: str) -> Record:
    return rec.fail(DUPLICATE, f"same {what} {shown}{_AS}{keeper_id}")


def keeper_named(rec: Record) -> Optional[str]:
    """The keeper a duplicate row names (sample ids hold no spaces), else None."""
    return rec.error.rsplit(_AS, 1)[-1] if rec.failure_reason == DUPLICATE and rec.error else None


def keep_first(group: Iterable[Record]) -> list[Record]:
    """Of records sharing a panorama/sequence, the lowest point index is kept; the others
    become failure rows naming the one they duplicate. Order-independent (Beam-safe)."""
    recs = sorted(group, key=lambda r: r.point_index)
    if len(recs) == 1 or recs[0].location is None:
        return recs
    first = recs[0]
    return [first] + [duplicate_of(r, imagery_kind(first.location), first.location.dedupe_key, first.sample_id) for r in recs[1:]]


def dedupe(records: Sequence[Record]) -> list[Record]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[dedupe_key(r)].append(r)
    out = {r.sample_id: r for g in groups.values() for r in keep_first(g)}
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
