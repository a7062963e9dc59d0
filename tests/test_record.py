import dataclasses

import pytest

from corebuild.record import STATUS_FAILED, STATUS_KEPT, Record, make_sample_id


def _rec(**kw):
    return Record(sample_id=make_sample_id("r", 1, 5), region_id="r", seed=1, point_index=5, lat=1.0, lon=2.0, **kw)


def test_sample_id_is_stable_and_distinct():
    assert make_sample_id("demo", 0, 12) == make_sample_id("demo", 0, 12) == "demo-s0-0000012"
    assert len({make_sample_id("demo", s, i) for s in range(3) for i in range(100)}) == 300


def test_first_failure_wins_and_finish_keeps_it():
    r = _rec().fail("fetch.timeout", "slow").fail("describe.error", "later")
    assert (r.status, r.failure_reason, r.error) == (STATUS_FAILED, "fetch.timeout", "slow")
    assert r.finish().status == STATUS_FAILED
    assert _rec().finish().status == STATUS_KEPT


def test_records_are_frozen_and_timed():
    r = _rec().timed("fetch", 0.123456)
    assert r.timings == (("fetch", 0.1235),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.status = "x"  # type: ignore[misc]
