import math

from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from corebuild.geo import distance_m
from corebuild.regions import parse_region
from corebuild.sample import SampleConfig, sample_records, sample_region

from .conftest import rect_manifest


def _region(lat, lon, w, h, quota):
    return parse_region(rect_manifest("r", lat, lon, w, h, quota), "test.json")


def _min_pair_distance(points):
    best = math.inf
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            best = min(best, distance_m(*points[i], *points[j]))
    return best


def test_demo_sample_inside_spaced_deterministic(tiny_region):
    cfg = SampleConfig(seed=4, min_spacing_m=25)
    a, b = sample_region(tiny_region, cfg), sample_region(tiny_region, cfg)
    assert a == b and len(a.points) == tiny_region.quota and a.shortfall_reason is None
    assert all(tiny_region.polygon.contains(Point(lon, lat)) for lat, lon in a.points)
    assert _min_pair_distance(a.points) >= 25 * 0.999  # equal-area projection vs geodesic
    assert sample_region(tiny_region, SampleConfig(seed=5)).points != a.points


def test_limit_gives_a_prefix_and_stable_ids(tiny_region):
    full = sample_records(tiny_region, SampleConfig(seed=1))
    part = sample_records(tiny_region, SampleConfig(seed=1, limit=7))
    assert part == full[:7]
    assert [r.sample_id for r in part] == [f"tiny-s1-{i:07d}" for i in range(7)]


def test_shortfall_is_recorded_not_hidden():
    region = _region(0.0, 0.0, 60, 60, quota=500)  # 120 m square cannot hold 500 points 25 m apart
    res = sample_region(region, SampleConfig(min_spacing_m=25, max_candidates_per_point=20))
    assert 0 < len(res.points) < 500
    assert "holds only" in res.shortfall_reason


@settings(max_examples=25, deadline=None)
@given(
    lat=st.floats(-70, 70),
    lon=st.floats(-179, 179),
    w=st.floats(200, 3000),
    h=st.floats(200, 3000),
    spacing=st.sampled_from([0.0, 10.0, 40.0]),
    seed=st.integers(0, 2**31),
)
def test_property_inside_and_spaced(lat, lon, w, h, spacing, seed):
    region = _region(lat, lon, w, h, quota=60)
    res = sample_region(region, SampleConfig(seed=seed, min_spacing_m=spacing))
    assert len(res.points) == 60
    assert all(region.polygon.contains(Point(lo, la)) for la, lo in res.points)
    if spacing:
        assert _min_pair_distance(res.points) >= spacing * 0.99
