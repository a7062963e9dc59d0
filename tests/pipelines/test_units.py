"""Work units cross the groupings packed, one element per unit (or part of one): parts and
dedupe's verdicts join again into the unit's records, without Beam."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from corebuild.record import Record, StreetLocation, make_sample_id
from corebuild.stages.dedupe import DUPLICATE, Duplicate
from pipelines.build_region import PackUnitsDoFn, unit_with_verdicts
from pipelines.record_coder import grouping_coder, grouping_packer


def _located(i: int) -> Record:
    r = Record(make_sample_id("r", 0, i), "r", 0, i, 1.0, 2.0)
    return r.with_(location=StreetLocation("p", f"IMG{i}", 1.0, 2.0, None, 3.0, f"PANO{i // 3}"))


def _pack_all(dofn: PackUnitsDoFn, items) -> list:
    dofn.start_bundle()
    out = [kv for item in items for kv in dofn.process(item)]
    return out + [wv.value for wv in dofn.finish_bundle()]


def test_a_bundle_holds_at_most_hold_items_and_the_parts_join_again():
    coder = grouping_coder()
    recs = [_located(i) for i in range(250)]
    parts = _pack_all(PackUnitsDoFn(coder.encode, hold=64), [(("r", r.point_index // 100), r) for r in recs])
    # Flushed after 64, 128, 192 items and at the bundle's end: unit 0 leaves in 2 parts, unit 1 in 3, unit 2 in 1.
    assert sorted(key[1] for key, _ in parts) == [0, 0, 1, 1, 1, 2]
    by_unit = defaultdict(list)
    for key, packed in parts:
        by_unit[key].append(packed)
    joined = dict(unit_with_verdicts(key, packed, coder.decode) for key, packed in by_unit.items())
    assert {k: [r.point_index for r in v] for k, v in joined.items()} == {("r", u): list(range(u * 100, min(250, u * 100 + 100))) for u in range(3)}
    assert joined[("r", 0)] == recs[:100]


def test_verdicts_reach_their_points_and_rebuilt_claims_join_the_unit():
    coder = grouping_coder()
    recs = [_located(i) for i in range(6)]
    rebuilt = _located(7)  # a finished point brought back by dedupe
    parts = [coder.encode(tuple(recs[:3])), coder.encode(tuple(recs[3:])), coder.encode((Duplicate(4, recs[3].sample_id), rebuilt))]
    _, out = unit_with_verdicts(("r", 0), parts[::-1], coder.decode)
    assert [r.point_index for r in out] == [0, 1, 2, 3, 4, 5, 7]
    assert [r.point_index for r in out if r.failure_reason == DUPLICATE] == [4]
    assert out[4].error == f"same panorama PANO1 as {recs[3].sample_id}"


def test_a_unit_crosses_deflated_and_comes_back_the_same():
    def located(i: int) -> Record:
        # Pano ids look random (a hash here), coordinates differ in their last digits: what
        # repeats across a unit is the rest (provider, date, copyright, the digits they share).
        pano = hashlib.sha256(str(i // 3).encode()).hexdigest()[:22]
        r = Record(make_sample_id("lagos", 0, i), "lagos", 0, i, 6.4531 + i * 3.1e-5, 3.3958 + i * 2.7e-5)
        return r.with_(location=StreetLocation("google", pano, 6.4531 + i * 3.3e-5, 3.3958 + i * 2.5e-5, "2021-06", 3.7 + (i % 11) * 1.3,
                                               pano, heading=(i * 37.1) % 360, copyright="© Google"))

    unit = tuple(located(i) for i in range(100))
    pack, unpack = grouping_packer()
    packed = pack(unit)
    assert unpack(packed) == unit
    assert len(packed) < 0.7 * len(grouping_coder().encode(unit))  # 0.55 here
