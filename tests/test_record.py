import dataclasses

import pytest

from corebuild.record import STATUS_FAILED, STATUS_KEPT, Record, StreetCapture, StreetLocation, StreetView, make_sample_id


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


def test_a_street_capture_carries_what_its_location_said():
    loc = StreetLocation("mapillary", "IMG7", 1.5, 2.5, "2021-07", 12.25, "SEQ1", heading=33.0, sequence_id="SEQ1", copyright="(c) x", image_url="https://cdn/t.jpg")
    view = StreetView(0.0, 90.0, 0.0, 4, 3, b"jpeg", "jpeg")
    cap = StreetCapture.of(loc, [view])
    expected = ("mapillary", "IMG7", 1.5, 2.5, "2021-07", 12.25, (view,), "(c) x", "SEQ1")
    assert cap == StreetCapture(*expected)
    photo = StreetCapture.of_photo(loc, b"jpeg", 4, 3, "png", 70.0)
    assert photo.views == (StreetView(33.0, 70.0, 0.0, 4, 3, b"jpeg", "png"),) and photo.copyright == "(c) x"
    assert StreetCapture.of_photo(dataclasses.replace(loc, heading=None), b"j", 4, 3, "jpeg", 90.0).views[0].heading == 0.0  # unknown: north
