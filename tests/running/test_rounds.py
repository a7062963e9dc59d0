"""Top-up rounds' arithmetic and bookkeeping, without Beam (the builds: tests/pipelines/test_rounds.py)."""

from __future__ import annotations

import pytest

from corebuild.running.rounds import Tally, next_take, quota_summary, stop_reason, tally
from corebuild.shards.units import finished_units
from corebuild.stages.sample import SampleConfig

CFG = SampleConfig()


def test_the_next_round_is_sized_from_the_measured_yield():
    # The demo's first round: 525 of 600 kept. 75 more at 87.5%, with a 10% margin: 95 points.
    assert next_take(CFG, 600, Tally(600, 525, 0)) == 600 + 95
    # Transient failures are expected to be kept at the settled yield once retried: 500 of the
    # 550 settled points kept (90.9%), 50 transient count as 45.5 kept; 54.5 more / 0.909 x 1.1.
    assert next_take(CFG, 600, Tally(600, 500, 50)) == 600 + 66
    assert next_take(SampleConfig(round_margin=2.0), 600, Tally(600, 525, 0)) == 600 + 172
    assert next_take(CFG, 40, Tally(40, 39, 0)) == 42  # 1 / 0.975 x 1.1: whole points, rounded up


@pytest.mark.parametrize(
    "t, exhausted, rounds, last, expect",
    [
        (Tally(780, 600, 0), True, 2, 180, "yield 77% and candidates exhausted after 2 rounds"),
        (Tally(40, 0, 0), False, 1, 40, "nothing kept of 40 sampled points after 1 round"),
        (Tally(100, 20, 60), False, 1, 100, "60 transient failure(s) after 1 round: rerun with --retry-failed"),
        (Tally(600, 590, 12), False, 1, 600, "12 transient failure(s)"),  # retrying them is expected to fill the quota
        (Tally(900, 500, 0), False, 5, 100, "yield 56%, stopped after 5 rounds (--max-rounds 5)"),
        (Tally(600, 525, 3), False, 1, 600, None),  # a few transient failures: top up anyway
    ],
)
def test_why_rounds_stop_short(t, exhausted, rounds, last, expect):
    reason = stop_reason(CFG, 600, t, exhausted, rounds, last)
    assert reason == expect if expect is None else reason.startswith(expect)


def test_tally_reads_the_markers():
    markers = [
        {"points": [0, 1, 2], "status_counts": {"kept": 2, "failed": 1}, "failure_classes": {"transient": 1}},
        {"points": [3, 4], "status_counts": {"kept": 2}, "failure_classes": {}},
    ]
    assert tally(markers) == Tally(5, 4, 1) and Tally(5, 4, 1).settled_yield == 1.0 and Tally(5, 4, 1).yield_ == 0.8


def test_finished_units_grow_a_unit_that_ends_short_and_redo_one_with_a_gap():
    m = lambda u, pts: {"unit": u, "points": list(pts)}  # noqa: E731
    markers = [m(0, range(0, 10)), m(1, range(10, 14)), m(2, [20, 21, 23]), m(3, range(30, 40))]
    done, grow = finished_units(markers, 17, 10)
    assert done == {0, 1} and grow == {14, 15, 16}  # unit 1 grows; unit 3 lies past the sample
    done, grow = finished_units(markers, 40, 10)
    assert done == {0, 1, 3} and grow == set(range(14, 20))  # unit 2 has a gap: redone whole
    assert finished_units(markers, 12, 10) == ({0, 1}, frozenset())  # holds more than the sample: a trim's work


def test_the_manifest_block_says_how_the_region_stands():
    counts = {"sampled": 689, "kept": 600, "failed": 89}
    doc = {"rounds": [{"round": 1}, {"round": 2}], "trimmed": 6}
    q = quota_summary(CFG, 600, 600, counts, doc)
    assert q == {
        "of": "kept", "quota": 600, "target": 600, "kept": 600, "sampled": 689, "rounds": 2, "yield": 0.8708,
        "expected_yield": 0.5, "missing": 0, "shortfall": None, "trimmed": 6,
    }
    short = quota_summary(CFG, 600, 600, {"sampled": 780, "kept": 590}, {"rounds": [{}] * 3, "stop": "yield 76% and candidates exhausted after 3 rounds"})
    assert short["missing"] == 10 and short["shortfall"].startswith("yield 76%")
    sampled = quota_summary(SampleConfig(quota_of="sampled"), 600, 600, {"sampled": 600, "kept": 525, "sampling_shortfall": None}, {"rounds": [{}]})
    assert sampled["missing"] == 0 and sampled["shortfall"] is None and sampled["expected_yield"] is None
