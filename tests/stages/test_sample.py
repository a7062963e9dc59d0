import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from shapely.geometry import Point

from corebuild.errors import ManifestError
from corebuild.geo import distance_m, equal_area
from corebuild.regions.landmask import is_land
from corebuild.regions import parse_region
from corebuild.stages.sample import SampleConfig, SamplingPlan, sample_chunks, sample_records, sample_region

from tests.conftest import rect_manifest


def _region(lat, lon, w, h, quota, **extra):
    doc = rect_manifest("r", lat, lon, w, h, quota)
    doc.update(extra)
    return parse_region(doc, "test.json")


def _min_distance(points):
    """Smallest geodesic distance between any two points (closest pairs found in a local plane)."""
    if len(points) < 2:
        return math.inf
    lat0, lon0 = np.mean(points, axis=0)
    fwd, _ = equal_area(float(lat0), float(lon0))
    xy = np.column_stack(fwd.transform([p[1] for p in points], [p[0] for p in points]))
    d, j = cKDTree(xy).query(xy, k=2)
    i = int(np.argmin(d[:, 1]))
    return distance_m(*points[i], *points[int(j[i, 1])])


def _union_of_chunks(region, cfg):
    parts = [s for _, s in sample_chunks(region, cfg)]
    return SamplingPlan(region, cfg).select(*(np.concatenate([p[k] for p in parts]) for k in range(3)))


def test_inside_spaced_on_land_and_deterministic(tiny_region):
    cfg = SampleConfig(seed=4)
    a, b = sample_region(tiny_region, cfg), sample_region(tiny_region, cfg)
    assert a == b and len(a.points) == tiny_region.quota and a.shortfall_reason is None
    assert all(tiny_region.polygon.contains(Point(lon, lat)) for lat, lon in a.points)
    assert is_land([p[0] for p in a.points], [p[1] for p in a.points]).all()
    assert _min_distance(a.points) >= 25 * 0.999  # equal-area plane vs geodesic: sub-mm
    assert sample_region(tiny_region, dataclasses.replace(cfg, seed=5)).points != a.points


def test_limit_gives_a_prefix_and_stable_ids(tiny_region):
    full = sample_records(tiny_region, SampleConfig(seed=1))
    part = sample_records(tiny_region, SampleConfig(seed=1, limit=7))
    assert part == full[:7]
    assert [r.sample_id for r in part] == [f"tiny-s1-{i:07d}" for i in range(7)]


def test_chunking_does_not_change_the_set():
    region = _region(35.0, 139.0, 2600, 1900, quota=900)
    whole = sample_region(region, SampleConfig(seed=2))
    for k in (1, 2, 5):
        cfg = SampleConfig(seed=2, chunk_cells=k)
        assert len(SamplingPlan(region, cfg).chunks()) > 1 or k == 5
        assert _union_of_chunks(region, cfg) == whole


def test_sea_is_not_sampled_and_a_sea_region_is_a_recorded_shortfall():
    sea = _region(0.0, -30.0, 1000, 1000, quota=50)  # mid-Atlantic
    res = sample_region(sea, SampleConfig())
    assert res.points == () and res.shortfall_reason == "no land inside the polygon (wanted 50)"
    assert len(sample_region(sea, SampleConfig(land_only=False)).points) == 50


def test_shortfall_when_the_polygon_cannot_hold_the_quota():
    region = _region(47.0, 8.0, 60, 60, quota=500)  # 120 m square: ~25 points at 25 m spacing
    res = sample_region(region, SampleConfig(min_spacing_m=25))
    assert 0 < len(res.points) < 500 and "holds only" in res.shortfall_reason
    assert _min_distance(res.points) >= 25 * 0.999


def test_equal_area_not_equal_degrees():
    # A box 60-62 N: its southern half (by degrees) holds more area, so more points.
    doc = rect_manifest("r", 61.0, 10.0, 1, 1, quota=4000)
    doc["polygon"]["coordinates"] = [[[9.0, 60.0], [11.0, 60.0], [11.0, 62.0], [9.0, 62.0], [9.0, 60.0]]]
    region = parse_region(doc, "t.json")
    pts = sample_region(region, SampleConfig(seed=9, min_spacing_m=0, land_only=False)).points
    south = sum(lat < 61.0 for lat, _ in pts) / len(pts)
    expected = (math.sin(math.radians(61)) - math.sin(math.radians(60))) / (math.sin(math.radians(62)) - math.sin(math.radians(60)))
    assert abs(south - expected) < 3 * math.sqrt(expected * (1 - expected) / len(pts))
    assert expected > 0.505  # the test can tell the difference from 50/50


def _star(lat, lon, radius_m, spikes, jitter, rot):
    fwd, inv = equal_area(lat, lon)
    n = spikes * 2
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rot
    radii = np.where(np.arange(n) % 2 == 0, radius_m, radius_m * (1 - jitter))
    lons, lats = inv.transform(radii * np.cos(angles), radii * np.sin(angles))
    ring = [[float(a), float(b)] for a, b in zip(lons, lats)]
    return ring + [ring[0]]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat=st.floats(-60, 75),
    lon=st.floats(-175, 175),
    radius=st.floats(300, 3000),
    spikes=st.integers(3, 9),
    jitter=st.floats(0, 0.8),
    rot=st.floats(0, 6.28),
    spacing=st.sampled_from([0.0, 10.0, 40.0]),
    quota=st.integers(1, 300),
    seed=st.integers(0, 2**31),
    chunk=st.integers(1, 4),
)
def test_property_inside_spaced_counted_deterministic_chunk_invariant(lat, lon, radius, spikes, jitter, rot, spacing, quota, seed, chunk):
    doc = rect_manifest("r", lat, lon, 100, 100, quota)
    doc["polygon"]["coordinates"] = [_star(lat, lon, radius, spikes, jitter, rot)]
    region = parse_region(doc, "t.json")
    cfg = SampleConfig(seed=seed, min_spacing_m=spacing, land_only=False, chunk_cells=chunk)
    res = sample_region(region, cfg)
    assert res == sample_region(region, cfg)
    assert all(region.polygon.contains(Point(lo, la)) for la, lo in res.points)
    assert len(res.points) == quota or (res.shortfall_reason and len(res.points) < quota)
    if spacing:
        assert _min_distance(res.points) >= spacing * 0.999
    assert _union_of_chunks(region, cfg) == res


def test_antimeridian_and_polar_polygons_are_rejected_clearly():
    crossing = rect_manifest("r", -17.0, 179.9, 30000, 5000, 10)  # lon bounds wrap past 180
    crossing["polygon"]["coordinates"] = [[[179.9, -17.1], [-179.9, -17.1], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.1]]]
    with pytest.raises(ManifestError, match="crosses the antimeridian"):
        parse_region(crossing, "x.json")
    polar = rect_manifest("r", 89.8, 0.0, 1000, 1000, 10)
    with pytest.raises(ManifestError, match="around a pole"):
        parse_region(polar, "p.json")


def test_a_kept_quota_samples_a_pool_sized_for_the_expected_yield(tiny_region):
    """Under --quota-of kept about oversample x quota / expected_yield candidates survive (the
    top-up rounds draw on them); under --quota-of sampled oversample x quota, as before."""
    from corebuild.stages.sample import SamplingPlan

    for cfg, pool in ((SampleConfig(quota_of="sampled"), 40), (SampleConfig(), 80), (SampleConfig(expected_yield=0.25), 160)):
        survivors = len(SamplingPlan(tiny_region, cfg).survivors()[0])
        assert 0.8 * 1.3 * pool <= survivors <= 1.2 * 1.3 * pool, (cfg.expected_yield, survivors)
