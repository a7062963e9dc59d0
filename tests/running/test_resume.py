"""Work units, completion markers and dedupe across attempts, without Beam."""

import itertools
import json

import pytest

from corebuild.errors import ConfigError
from corebuild.stages.dedupe import Claim, claims_of, dedupe, dedupe_key, resolve_duplicates
from corebuild.record import Record, StreetLocation, make_sample_id
from corebuild.running.resume import start_build
from corebuild.shards.units import check_units, done_units, marker_name, remove_orphans, write_unit
from corebuild.shards.storage import open_storage
from corebuild.shards.writer import ShardWriter


def located(i: int, pano: str | None, seq: str | None = None) -> Record:
    r = Record(make_sample_id("r", 0, i), "r", 0, i, 1.0, 2.0)
    if pano is None:
        return r.fail("street.zero_results", "none")
    return r.with_(location=StreetLocation("p", f"IMG{i}", 1.0, 2.0, None, 3.0, seq or pano, sequence_id=seq))


def as_claims(records):
    return [Claim.from_marker("r", item) for item in claims_of(records)]


def outcome(records):
    return {r.point_index: (r.status, r.failure_reason, r.error) for r in records}


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_dedupe_against_finished_units_equals_a_clean_dedupe(split):
    """Points 0..5 share panoramas across a unit boundary; whichever part finished first, the
    rest resolves exactly as the whole would have."""
    pts = [located(0, "A"), located(1, "B"), located(2, "A"), located(3, None), located(4, "B"), located(5, "S", seq="SEQ1"), located(6, "S", seq="SEQ1")]
    clean = outcome(dedupe(pts))
    for done_idx in itertools.combinations(range(len(pts)), split):
        done = [clean_r for clean_r in dedupe(pts) if clean_r.point_index in done_idx]
        pending = [p for p in pts if p.point_index not in done_idx]
        groups: dict = {}
        for r in pending:
            groups.setdefault(dedupe_key(r), []).append(r)
        for c in as_claims(done):
            groups.setdefault(("r", c.key), []).append(c)
        resumed = [r for g in groups.values() for r in resolve_duplicates(g)]
        assert outcome(resumed) == {k: v for k, v in clean.items() if k not in done_idx}, done_idx


def test_claims_keep_located_points_whatever_became_of_them():
    recs = [located(0, "A"), located(1, None), located(2, "A").fail("aerial.no_imagery", "blank")]
    assert [c[1] for c in claims_of(recs)] == [0, 2]


def _state(store, cfg_hash="h1", overwrite=False, unit_points=4, config=None):
    return start_build(store, "r", "r-build1", cfg_hash, config or {"a": 1, "b": {"c": 2}}, unit_points, "v1", overwrite)


def test_start_resume_refuse_and_overwrite(tmp_path):
    store = open_storage(str(tmp_path))
    first = _state(store)
    assert not first.resumed and first.done == frozenset() and first.attempt == 1
    store.write(marker_name("r", 2), json.dumps({"unit": 2}).encode())
    again = _state(store, config={"a": 1, "b": {"c": 2}})
    assert again.resumed and again.done == {2} and again.attempt == 2 and again.build_id == "r-build1"
    with pytest.raises(ConfigError, match=r"another config \(differs in: b\.c\).*--overwrite"):
        _state(store, cfg_hash="h2", config={"a": 1, "b": {"c": 3}})
    fresh = _state(store, cfg_hash="h2", overwrite=True)
    assert not fresh.resumed and done_units(store, "r") == frozenset()


def test_unresumable_leftovers_are_not_deleted_silently(tmp_path):
    store = open_storage(str(tmp_path))
    store.write("r/shards/part-0.parquet", b"old")
    with pytest.raises(ConfigError, match="cannot resume"):
        _state(store)
    assert store.exists("r/shards/part-0.parquet")


def test_write_unit_then_orphans_and_unit_checks(tmp_path):
    from corebuild.shards.schema import RunStamp, record_to_row

    store = open_storage(str(tmp_path))
    stamp = RunStamp("b", "h", "v")
    recs = [located(i, None) for i in range(4, 8)]

    def factory(storage, prefix):
        return ShardWriter(storage, prefix, row_group_rows=2, stable_names=True, target_bytes=1)  # one shard per row group

    marker = write_unit(store, "r", 1, [record_to_row(r, stamp) for r in recs], factory, attempt=1, claims=claims_of(recs))
    assert [s["path"] for s in marker["shards"]] == ["part-u00001-000.parquet", "part-u00001-001.parquet"]
    assert marker["points"] == [4, 5, 6, 7] and marker["rows"] == 4 and store.exists(marker_name("r", 1))
    store.write("r/shards/part-u00002-000.parquet", b"a killed attempt's shard")
    # A write killed before its rename leaves a temp file `list` never shows (found by the random-kill test).
    half = store.spool_path("r/shards/part-u00003-000.parquet")
    half.write_bytes(b"PAR1 half a shard")
    assert remove_orphans(store, "r", [marker]) == ["r/shards/part-u00002-000.parquet"]
    assert not half.exists() and sorted(p.name for p in (tmp_path / "r" / "shards").iterdir()) == [s["path"] for s in marker["shards"]]
    assert check_units([marker], 8, 4) == "1 of 2 units have no completion marker (first: u00000)"
    zero = dict(marker, unit=0, points=[0, 1, 2, 3])
    assert check_units([zero, marker], 8, 4) is None
    assert "markers cover" in check_units([zero, dict(marker, points=[4, 5, 6])], 8, 4)


def test_a_retried_lower_index_takes_the_panorama_back_and_finished_rows_follow():
    """Point 0 failed transiently in the first run, so 2 kept panorama A and 4 named 2 as its
    keeper. Retried, 0 locates on A: 0 is kept, and the finished 2 and 4 come back as duplicates
    naming 0, exactly as a clean dedupe says."""
    pts = [located(0, "A"), located(1, "B"), located(2, "A"), located(4, "A")]
    clean = outcome(dedupe(pts))
    unlocated = Record(pts[0].sample_id, "r", 0, 0, 1.0, 2.0).fail("street.over_query_limit", "quota")
    first = dedupe([unlocated] + pts[1:])
    assert outcome(first)[2] == ("pending", None, None) and "as r-s0-0000002" in outcome(first)[4][2]
    claims = [c for c in as_claims(first) if c.key == "p:A"]
    out = {r.point_index: r for r in resolve_duplicates([pts[0], *claims])}
    assert sorted(out) == [0, 2, 4] and outcome(out.values()) == {k: clean[k] for k in (0, 2, 4)}
    assert out[2].location == pts[2].location  # rebuilt from the marker, as it was located


def test_a_finished_duplicate_is_promoted_when_its_keeper_leaves_the_group():
    """1 was a duplicate of 0; 0 is retried and now locates elsewhere: 1 keeps panorama A."""
    first = dedupe([located(0, "A"), located(1, "A")])
    claims = [c for c in as_claims(first) if c.point_index == 1]
    moved = located(0, "Z")
    assert outcome(resolve_duplicates([moved])) == {0: ("pending", None, None)}
    promoted = resolve_duplicates(claims)
    assert outcome(promoted) == {1: ("pending", None, None)} and promoted[0].location.dedupe_key == "A"


def test_consistent_claims_come_back_as_nothing():
    first = dedupe([located(0, "A"), located(1, "A"), located(2, "A")])
    assert resolve_duplicates(as_claims(first)) == []


def _factory(storage, prefix):
    return ShardWriter(storage, prefix, row_group_rows=2, stable_names=True)


class _Dies(Exception):
    pass


@pytest.mark.parametrize("die_at", ["new shards stored", "marker switched", "never"])
def test_merge_unit_replaces_rows_and_survives_a_kill_anywhere(tmp_path, die_at):
    """A unit's changed rows are written as its next generation, then the marker switches, then
    the old generation goes. Killed after either step, the marker names one whole generation and
    remove_orphans takes the other."""
    from corebuild.shards.units import merge_unit, read_markers, read_unit_rows
    from corebuild.shards.schema import RunStamp, record_to_row

    store = open_storage(str(tmp_path))
    stamp = RunStamp("b", "h", "v")
    recs = [located(4, "A"), Record(make_sample_id("r", 0, 5), "r", 0, 5, 1.0, 2.0).fail("street.over_query_limit", "quota"), located(6, "B"), located(7, "A")]
    recs = dedupe(recs)
    write_unit(store, "r", 1, [record_to_row(r, stamp) for r in recs], _factory, attempt=1, claims=claims_of(recs))
    fixed = located(5, "C")
    real_write = store.write

    def write(rel, data):
        real_write(rel, data)
        if die_at == "marker switched" and rel == marker_name("r", 1):
            raise _Dies()

    store.write = write
    real_factory = _factory

    def factory(storage, prefix):
        w = real_factory(storage, prefix)
        close = w.close

        def close_then_die():
            out = close()
            if die_at == "new shards stored":
                raise _Dies()
            return out

        w.close = close_then_die
        return w

    if die_at == "never":
        merge_unit(store, "r", 1, [fixed], lambda r: record_to_row(r, stamp), factory, attempt=2, claims=claims_of([fixed]))
    else:
        with pytest.raises(_Dies):
            merge_unit(store, "r", 1, [fixed], lambda r: record_to_row(r, stamp), factory, attempt=2, claims=claims_of([fixed]))
    markers = read_markers(store, "r")
    remove_orphans(store, "r", markers)
    (marker,) = markers
    rows = read_unit_rows(store, "r", marker)
    assert [r["point_index"] for r in rows] == [4, 5, 6, 7] and marker["rows"] == 4
    assert sorted(p.name for p in (tmp_path / "r" / "shards").iterdir()) == sorted(s["path"] for s in marker["shards"])
    if die_at == "new shards stored":  # the old generation stands, the retry is still to do
        assert marker["generation"] == 0 and (rows[1]["failure_reason"], rows[1]["failure_class"]) == ("street.over_query_limit", "transient")
        assert marker["failure_classes"] == {"transient": 1, "permanent": 1}
    else:
        assert marker["generation"] == 1 and all("-g1-" in s["path"] for s in marker["shards"])
        assert rows[1]["status"] == "pending" and rows[1]["pano_id"] is None and rows[1]["failure_class"] is None
        assert marker["failure_classes"] == {"permanent": 1} and marker["retried"] == [{"attempt": 2, "points": [5]}]
        assert [c[1] for c in marker["claims"]] == [4, 5, 6, 7]
