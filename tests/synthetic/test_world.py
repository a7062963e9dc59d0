import math

from corebuild.synthetic.world import PANO_STEP_M, World


def test_same_seed_same_world_and_different_seed_differs(tiny_region):
    a, b = World.for_region(tiny_region), World.for_region(tiny_region)
    assert [s.text for s in a.signs] == [s.text for s in b.signs]
    assert [bl.footprint.wkt for bl in a.buildings] == [bl.footprint.wkt for bl in b.buildings]
    lat0, lon0 = tiny_region.centroid
    c = World.generate(99, lat0, lon0, *a.extent[2:])
    assert [s.text for s in c.signs] != [s.text for s in a.signs]


def test_world_has_every_feature_and_unique_sign_texts(demo_world):
    w = demo_world
    assert len(w.roads) > 10 and len(w.buildings) > 500 and len(w.trees) > 100 and w.lake is not None
    texts = [s.text for s in w.signs]
    assert len(texts) > 200 and len(set(texts)) == len(texts)
    # Buildings never overlap roads or each other's footprints (sampled check).
    for b in w.buildings[:200]:
        assert not b.footprint.intersects(w.road_area)


def test_snap_finds_a_pano_within_radius_and_round_trips(tiny_world):
    w = tiny_world
    road = w.roads[0]
    p = road.line.interpolate(road.line.length / 2)
    lat, lon = w.to_latlon(p.x + 12, p.y + 12)
    pano = w.snap(lat, lon, 50)
    assert pano is not None
    assert math.hypot(pano.x - (p.x + 12), pano.y - (p.y + 12)) <= 50
    assert w.pano(pano.id) == pano
    # Panos sit on a 10 m grid along the road.
    along = w.roads[pano.road_id].line.project(__import__("shapely").geometry.Point(pano.x, pano.y))
    assert abs(along / PANO_STEP_M - round(along / PANO_STEP_M)) < 1e-6


def test_no_pano_in_the_middle_of_the_lake(demo_world):
    c = demo_world.lake.centroid
    assert demo_world.snap(*demo_world.to_latlon(c.x, c.y), 50) is None
    assert demo_world.pano("SYN999R0K0") is None and demo_world.pano("garbage") is None
