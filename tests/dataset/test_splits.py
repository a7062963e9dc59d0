"""Geographic splits: no block and no pair closer than the limit crosses splits, checked by brute force."""

from __future__ import annotations

import argparse
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Geod, Transformer

from corebuild.dataset.reader import find_builds
from corebuild.errors import ConfigError, CorebuildError
from corebuild.dataset.splits import (
    SplitConfig,
    add_arguments,
    assign_splits,
    block_ids,
    block_polygon,
    check_splits,
    load_split,
    main,
    read_points,
    write_splits,
)
from tests.builds import write_fake_build

R = 6371008.8
TO_EASE = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)


def haversine_m(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * R * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def cloud(rng: np.random.Generator, lat0: float, lon0: float, n: int, half_km: float, fail_frac: float = 0.1) -> pa.Table:
    """Uniform points in a box; some rows failed."""
    dy, dx = rng.uniform(-half_km * 1000, half_km * 1000, (2, n))
    lat = np.clip(lat0 + dy / 111320, -89.9, 89.9)
    lon = (lon0 + dx / (111320 * math.cos(math.radians(lat0))) + 180) % 360 - 180
    status = np.where(rng.random(n) < fail_frac, "failed", "kept")
    return pa.table({
        "sample_id": [f"p{i}" for i in range(n)], "region_id": ["r"] * n, "continent": ["Europe"] * n,
        "lat": lat, "lon": lon, "status": status.tolist(),
    })


def assert_no_leak(points: pa.Table, table: pa.Table, cfg: SplitConfig) -> None:
    """Independent of the code under test: blocks recomputed here, distances by brute-force haversine."""
    kept = [s for s, st_ in zip(points["sample_id"].to_pylist(), points["status"].to_pylist()) if st_ == "kept"]
    ids = table["sample_id"].to_pylist()
    assert sorted(ids) == sorted(kept) and len(set(ids)) == len(ids)  # every kept sample once, no failed row
    lat, lon, split = (np.asarray(table[c].to_pylist()) for c in ("lat", "lon", "split"))
    x, y = TO_EASE.transform(lon, lat)
    size = cfg.block_km * 1000
    blocks = [f"{int(math.floor(a / size))}_{int(math.floor(b / size))}" for a, b in zip(x, y)]
    assert blocks == table["block"].to_pylist()
    live = split != "excluded"
    if cfg.scheme == "blocks":
        seen: dict[str, str] = {}
        for b, s in zip(np.asarray(blocks)[live], split[live]):
            assert seen.setdefault(b, s) == s, f"block {b} in {seen[b]} and {s}"
    la, lo, sp = lat[live], lon[live], split[live]
    d = haversine_m(la[:, None], lo[:, None], la[None, :], lo[None, :])
    cross = sp[:, None] != sp[None, :]
    if cross.any() and cfg.min_distance_m > 0:
        assert d[cross].min() >= cfg.min_distance_m
    reasons = np.asarray(table["excluded_reason"].to_pylist(), dtype=object)
    assert set(reasons.tolist()) <= {None, "near_val", "near_test"}
    assert all((r is None) == (s != "excluded") for r, s in zip(reasons, split))
    # Minimal-ish: each excluded point has a surviving point of the named split within the limit.
    for k in np.flatnonzero(~live):
        near = haversine_m(lat[k], lon[k], la, lo) < cfg.min_distance_m
        assert (near & (sp == reasons[k][len("near_"):])).any()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat0=st.floats(-80, 80), lon0=st.floats(-180, 180), block_km=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
    min_m=st.sampled_from([0.0, 300.0, 1000.0, 2500.0]), seed=st.integers(0, 2**31), rng_seed=st.integers(0, 2**31),
    ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.4, 0.3, 0.3), (0.5, 0.5, 0.0)]),
)
def test_random_clouds_never_leak(lat0, lon0, block_km, min_m, seed, rng_seed, ratios):
    points = cloud(np.random.default_rng(rng_seed), lat0, lon0, 250, half_km=2.5 * block_km)
    cfg = SplitConfig(block_km=block_km, min_distance_m=min_m, seed=seed, ratios=ratios)
    table = assign_splits(points, cfg)
    assert_no_leak(points, table, cfg)
    assert check_splits(table, cfg)["ok"]


def test_border_pairs_are_resolved_and_only_train_val_dropped():
    # Dense enough that many pairs straddle block borders at < 1 km; the antimeridian too.
    for lat0, lon0 in ((0.3, 10.0), (59.9, 30.0), (-12.0, 179.99)):
        points = cloud(np.random.default_rng(7), lat0, lon0, 1500, half_km=12)
        cfg = SplitConfig(block_km=2.0, ratios=(0.4, 0.3, 0.3))
        lat, lon = points["lat"].to_numpy(), points["lon"].to_numpy()
        blocks = block_ids(lat, lon, 2.0)
        d = haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        assert ((d < 1000) & (blocks[:, None] != blocks[None, :])).sum() > 1000  # the test means something
        table = assign_splits(points, cfg)
        assert_no_leak(points, table, cfg)
        reasons = table["excluded_reason"].to_pylist()
        assert {"near_val", "near_test"} <= set(reasons)
        # Test points are never dropped: everything in a test block is still test.
        t = table.to_pylist()
        test_blocks = {r["block"] for r in t if r["split"] == "test"}
        assert all(r["split"] == "test" for r in t if r["block"] in test_blocks)
        assert check_splits(table)["min_cross_split_distance_m"] >= 1000


def test_adding_regions_never_moves_existing_assignments():
    a = cloud(np.random.default_rng(1), 45.0, 7.0, 800, half_km=20)
    b = cloud(np.random.default_rng(2), 45.05, 7.05, 800, half_km=20)
    b = b.set_column(0, "sample_id", pa.array([f"q{i}" for i in range(b.num_rows)]))
    cfg = SplitConfig(block_km=3.0)
    alone = {r["sample_id"]: r["split"] for r in assign_splits(a, cfg).to_pylist()}
    together = {r["sample_id"]: r["split"] for r in assign_splits(pa.concat_tables([a, b]), cfg).to_pylist()}
    # A point keeps its split, or is newly excluded because a new neighbour sits across a border.
    assert all(together[k] in (v, "excluded") for k, v in alone.items())
    assert sum(together[k] == v for k, v in alone.items()) > 0.8 * len(alone)


def test_ratios_roughly_respected_on_a_large_cloud():
    points = cloud(np.random.default_rng(3), 20.0, 100.0, 40000, half_km=60, fail_frac=0.0)
    table = assign_splits(points, SplitConfig(block_km=1.0, ratios=(0.7, 0.2, 0.1), min_distance_m=0.0))
    split = np.asarray(table["split"].to_pylist())
    for s, want in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs((split == s).mean() - want) < 0.02


def test_blocks_are_equal_area_anywhere():
    geod = Geod(ellps="WGS84")
    areas = []
    for lat, lon in ((0.01, 0.01), (60.0, 10.0), (-45.0, -70.0)):
        block = block_ids(np.array([lat]), np.array([lon]), 10.0)[0]
        ring = block_polygon(block, 10.0)
        lons, lats = zip(*ring)
        assert min(lats) <= lat <= max(lats)
        area, _ = geod.polygon_area_perimeter(lons, lats)
        areas.append(abs(area))
    assert all(abs(a / 100e6 - 1) < 0.01 for a in areas), areas


@pytest.fixture()
def three_continents(tmp_path) -> Path:
    root = tmp_path / "out"
    write_fake_build(root, "za", -33.9, 18.4, 60, continent="Africa", spread_m=15000)
    write_fake_build(root, "fr", 48.8, 2.3, 60, continent="Europe", country="FR", spread_m=15000, seed=1)
    write_fake_build(root, "br", -23.5, -46.6, 60, continent="South America", country="BR", spread_m=15000, seed=2)
    return root


def _kept_ids(root: Path) -> set[str]:
    ids = set()
    for b in find_builds(str(root)):
        for name in b.shard_names():
            t = b.read_table(name, ["sample_id", "status"]).to_pylist()
            ids |= {r["sample_id"] for r in t if r["status"] == "kept"}
    return ids


def test_write_splits_files_and_summary(three_continents):
    cfg = SplitConfig(block_km=2.0, ratios=(0.5, 0.25, 0.25))
    res = write_splits(find_builds(str(three_continents)), cfg, str(three_continents))
    assert res.parquet_url == str(three_continents / "splits" / "blocks-2km.parquet")
    table = pq.read_table(res.parquet_url)
    assert table.column_names == ["sample_id", "region_id", "continent", "lat", "lon", "block", "split", "excluded_reason"]
    assert set(table["sample_id"].to_pylist()) == _kept_ids(three_continents) and table.num_rows == 144
    summary = json.loads(Path(res.json_url).read_text())
    assert summary == res.summary
    assert summary["config"] == {"scheme": "blocks", "block_km": 2.0, "ratios": [0.5, 0.25, 0.25], "min_distance_m": 1000.0,
                                 "seed": 0, "test_continents": [], "val_continents": []}
    assert summary["samples"] == 144 and summary["failed_skipped"] == 36
    split = table["split"].to_pylist()
    assert summary["counts"] == {s: split.count(s) for s in ("train", "val", "test", "excluded")}
    assert summary["excluded"] == split.count("excluded") == sum(summary["excluded_by_reason"].values())
    assert set(summary["counts_by_continent"]) == {"Africa", "Europe", "South America"}
    assert sum(sum(v.values()) for v in summary["counts_by_continent"].values()) == 144
    checks = summary["checks"]
    assert checks["ok"] and checks["problems"] == [] and checks["blocks_shared"] == 0 and checks["duplicate_sample_ids"] == 0
    assert checks["min_cross_split_distance_m"] >= 1000
    assert [b["region_id"] for b in summary["builds"]] == ["br", "fr", "za"]
    for s in ("train", "val", "test", "excluded"):
        assert load_split(res.parquet_url, s) == {r["sample_id"] for r in table.to_pylist() if r["split"] == s}


def test_deterministic_bytes(three_continents, tmp_path):
    builds = find_builds(str(three_continents))
    cfg = SplitConfig(block_km=1.0, seed=5)
    a = write_splits(builds, cfg, str(tmp_path / "a"), "x")
    b = write_splits(builds, cfg, str(tmp_path / "b"), "x")
    assert Path(a.parquet_url).read_bytes() == Path(b.parquet_url).read_bytes()
    assert Path(a.json_url).read_bytes() == Path(b.json_url).read_bytes()
    other = write_splits(builds, SplitConfig(block_km=1.0, seed=6), str(tmp_path / "c"), "x")
    assert pq.read_table(other.parquet_url)["split"] != pq.read_table(a.parquet_url)["split"]


def test_intercontinental(three_continents):
    builds = find_builds(str(three_continents))
    res = write_splits(builds, SplitConfig(scheme="continents", test_continents=("Africa",)), str(three_continents))
    assert res.parquet_url.endswith("splits/continents-test-Africa.parquet")
    rows = pq.read_table(res.parquet_url).to_pylist()
    assert {r["split"] for r in rows if r["continent"] == "Africa"} == {"test"}
    assert {r["continent"] for r in rows if r["split"] == "test"} == {"Africa"}
    # No val continent: val is carved from blocks of the train continents, blocks not shared.
    assert {r["split"] for r in rows if r["continent"] != "Africa"} == {"train", "val"}
    checks = res.summary["checks"]
    assert checks["ok"] and checks["continents_shared_with_test"] == [] and checks["blocks_shared"] == 0
    assert checks["continents_by_split"]["test"] == ["Africa"]

    res = write_splits(builds, SplitConfig(scheme="continents", test_continents=("Africa",), val_continents=("South America",)), str(three_continents))
    rows = pq.read_table(res.parquet_url).to_pylist()
    assert {(r["continent"], r["split"]) for r in rows} == {("Africa", "test"), ("South America", "val"), ("Europe", "train")}
    assert res.summary["checks"]["continents_shared"] == [] and res.summary["name"] == "continents-test-Africa-val-SouthAmerica"


def test_intercontinental_neighbours_keep_min_distance(tmp_path):
    # Istanbul: Europe and Asia a strait apart; the test continent's points win.
    write_fake_build(tmp_path, "eu", 41.04, 28.98, 80, continent="Europe", country="TR", spread_m=1500)
    write_fake_build(tmp_path, "as", 41.04, 29.01, 80, continent="Asia", country="TR", spread_m=1500, seed=1)
    builds = find_builds(str(tmp_path))
    cfg = SplitConfig(scheme="continents", test_continents=("Asia",))
    res = write_splits(builds, cfg, str(tmp_path), allow_small=True)  # Europe's 64 points leave val empty
    assert_no_leak(read_points(builds), pq.read_table(res.parquet_url), cfg)
    rows = pq.read_table(res.parquet_url).to_pylist()
    assert any(r["split"] == "excluded" and r["continent"] == "Europe" for r in rows)
    assert all(r["split"] == "test" for r in rows if r["continent"] == "Asia")


def test_config_errors(tmp_path, three_continents):
    cases = [
        (lambda: SplitConfig(ratios=(0.8, 0.1, 0.2)), "ratios must be three numbers"),
        (lambda: SplitConfig(ratios=(0.0, 0.5, 0.5)), "train > 0"),
        (lambda: SplitConfig(block_km=0), "block_km must be a positive"),
        (lambda: SplitConfig(min_distance_m=-1), "min_distance_m must be >= 0"),
        (lambda: SplitConfig(scheme="grid"), "scheme 'grid' not one of blocks, continents"),
        (lambda: SplitConfig(scheme="continents", test_continents=("Atlantis",)), "unknown continent 'Atlantis'; one of Africa"),
        (lambda: SplitConfig(scheme="continents"), "needs at least one test continent"),
        (lambda: SplitConfig(test_continents=("Africa",)), "need scheme 'continents'"),
        (lambda: SplitConfig(scheme="continents", test_continents=("Asia",), val_continents=("Asia",)), "Asia both a test and a val"),
    ]
    for make, msg in cases:
        with pytest.raises(ConfigError, match=msg) as e:
            make()
        assert "\n" not in str(e.value)
    builds = find_builds(str(three_continents))
    with pytest.raises(ConfigError, match="no kept samples on Asia; builds are on Africa, Europe, South America"):
        write_splits(builds, SplitConfig(scheme="continents", test_continents=("Asia",)), str(tmp_path))
    with pytest.raises(ConfigError, match="train would be empty"):
        write_splits(builds, SplitConfig(scheme="continents", test_continents=("Africa", "Europe"), val_continents=("South America",)), str(tmp_path))
    with pytest.raises(ConfigError, match="plain file name"):
        write_splits(builds, SplitConfig(), str(tmp_path), "a/b")
    write_fake_build(tmp_path / "bad", "dead", 10.0, 10.0, 6, fail_every=1)
    with pytest.raises(ConfigError, match="no kept samples in the given builds"):
        write_splits(find_builds(str(tmp_path / "bad")), SplitConfig(), str(tmp_path))
    with pytest.raises(ConfigError, match="split 'holdout' not one of"):
        load_split(str(tmp_path / "x.parquet"), "holdout")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_cli(three_continents, capsys):
    assert main(_parse([str(three_continents), "--block-km", "5", "--ratios", "0.6,0.2,0.2", "--seed", "3"])) == 0
    out = capsys.readouterr().out
    assert "blocks shared: 0" in out and "South America" in out and "blocks-5km.parquet" in out
    summary = json.loads((three_continents / "splits" / "blocks-5km.json").read_text())
    assert summary["config"]["ratios"] == [0.6, 0.2, 0.2] and summary["config"]["seed"] == 3
    argv = [str(three_continents / "fr"), "--scheme", "continents", "--test-continents", "South America", "--out", str(three_continents), "--name", "one"]
    with pytest.raises(ConfigError, match="no kept samples on South America"):
        main(_parse(argv))
    main(_parse([str(three_continents), "--scheme", "continents", "--test-continents", "South America,Europe", "--name", "two", "--allow-small"]))
    assert json.loads((three_continents / "splits" / "two.json").read_text())["config"]["test_continents"] == ["South America", "Europe"]
    for bad, msg in (("0.8,0.1", "need three values"), ("a,b,c", "are not numbers")):
        with pytest.raises(ConfigError, match=msg):
            main(_parse([str(three_continents), "--ratios", bad]))


def test_splits_on_gcs(gcs_emulator):
    root = f"gs://{gcs_emulator['bucket']}/splits-{uuid.uuid4().hex[:8]}"
    write_fake_build(root, "za", -33.9, 18.4, 30, continent="Africa", spread_m=8000)
    write_fake_build(root, "fr", 48.8, 2.3, 30, continent="Europe", country="FR", spread_m=8000, seed=1)
    res = write_splits(find_builds(root), SplitConfig(scheme="continents", test_continents=("Europe",)), root, allow_small=True)
    assert res.json_url == f"{root}/splits/continents-test-Europe.json"
    assert load_split(res.parquet_url, "test") == {f"fr-s1-{i}" for i in range(30) if i % 5 != 4}
    assert res.summary["checks"]["ok"]


def test_an_empty_or_tiny_split_is_refused_with_the_numbers(tmp_path, capsys):
    """One town in one 10 km block: every sample lands in one split. Refused, saying why; written
    only when asked, and then the .json carries the warning."""
    write_fake_build(tmp_path, "town", 47.0, 8.0, 100, continent="Europe", country="CH", spread_m=800)
    builds = find_builds(str(tmp_path / "town"))
    with pytest.raises(CorebuildError) as err:
        write_splits(builds, SplitConfig(), str(tmp_path))
    msg = str(err.value)
    counts = {s: msg.count(f"{s} has 0 samples") for s in ("train", "val", "test")}
    assert sum(counts.values()) == 2 and "80 samples fall in 1 block(s) of 10 km: smaller blocks" in msg and "--allow-small" in msg
    assert not (tmp_path / "splits").exists()
    # Smaller blocks spread the town: written, no warning.
    ok = write_splits(builds, SplitConfig(block_km=0.3, ratios=(0.6, 0.2, 0.2), min_distance_m=0), str(tmp_path))
    assert "warnings" not in ok.summary and min(ok.summary["counts"][s] for s in ("train", "val", "test")) >= 10
    # Tiny, not empty: the threshold is the caller's.
    with pytest.raises(CorebuildError, match="under 30"):
        write_splits(builds, SplitConfig(block_km=0.3, ratios=(0.6, 0.2, 0.2), min_distance_m=0), str(tmp_path), min_per_split=30)
    assert main(_parse([str(tmp_path / "town"), "--allow-small", "--name", "one-block"])) == 0
    assert "WARNING: splits: " in capsys.readouterr().err
    assert json.loads((tmp_path / "town" / "splits" / "one-block.json").read_text())["warnings"]
