import io

import mercantile
import numpy as np
from PIL import Image

import shapely

from corebuild.synthetic import render as render_module
from corebuild.synthetic.render import ASPHALT, Camera, clean_signs, encode, render_street, render_tile


def _facing(world, sign, distance=14.0):
    """A camera on the street in front of a sign, looking at it."""
    cx, cy, _ = sign.center
    x, y = cx + sign.normal[0] * distance, cy + sign.normal[1] * distance
    heading = (np.degrees(np.arctan2(-sign.normal[0], -sign.normal[1]))) % 360
    return Camera(x, y, float(heading))


def test_street_render_is_deterministic(tiny_world):
    cam = _facing(tiny_world, tiny_world.signs[0])
    a = encode(render_street(tiny_world, cam), "jpeg")
    b = encode(render_street(tiny_world, cam), "jpeg")
    assert a == b and Image.open(io.BytesIO(a)).size == (640, 640)


def test_what_lies_wholly_in_view_is_drawn_unclipped_and_the_view_is_the_same(tiny_world, monkeypatch):
    """Shapes wholly inside the view's footprint skip the overlay (most road dashes and walls);
    the views are pixel for pixel those of clipping everything."""
    cam = _facing(tiny_world, tiny_world.signs[0])
    frustum = cam.frustum()
    ahead = (cam.x + cam.forward[0] * 20, cam.y + cam.forward[1] * 20)
    inside, across = shapely.box(ahead[0] - 1, ahead[1] - 1, ahead[0] + 1, ahead[1] + 1), shapely.box(cam.x - 500, cam.y - 500, cam.x + 500, cam.y + 500)
    kept, cut = render_module._clip([inside, across], frustum)
    assert kept is inside and cut.equals(shapely.intersection(across, frustum))
    cams = [Camera(s.center[0] + s.normal[0] * d, s.center[1] + s.normal[1] * d, h) for s in tiny_world.signs[:3] for d in (8, 30) for h in (0.0, 135.0)]
    fast = [np.asarray(render_street(tiny_world, c)) for c in cams]
    monkeypatch.setattr(render_module, "_clip", lambda geoms, frustum: shapely.intersection(np.asarray(geoms, dtype=object), frustum))
    assert all(np.array_equal(a, np.asarray(render_street(tiny_world, c))) for a, c in zip(fast, cams))


def test_a_sign_in_front_of_the_camera_is_clean_and_one_behind_is_not(tiny_world):
    sign = tiny_world.signs[0]
    cam = _facing(tiny_world, sign)
    assert sign in clean_signs(tiny_world, cam)
    behind = Camera(cam.x, cam.y, (cam.heading + 180) % 360)
    assert sign not in clean_signs(tiny_world, behind)


def test_aerial_tile_shows_the_same_building_colour_as_the_street(tiny_world):
    b = tiny_world.buildings[3]
    c = b.footprint.centroid
    lat, lon = tiny_world.to_latlon(c.x, c.y)
    t = mercantile.tile(lon, lat, 20)
    img = np.asarray(render_tile(tiny_world, 20, t.x, t.y))
    left, bottom, right, top = mercantile.bounds(t)
    px = int((lon - left) / (right - left) * 256)
    py = int((top - lat) / (top - bottom) * 256)
    got = img[py, px].astype(int)
    # The roof there is the building's own roof colour (unless a tree crown covers it).
    assert np.abs(got - np.array(b.roof_rgb)).sum() < 30 or got[1] > got[0] + 20


def test_tile_of_a_road_is_asphalt(tiny_world):
    road = tiny_world.roads[0]
    p = road.line.interpolate(road.line.length / 3)
    lat, lon = tiny_world.to_latlon(p.x + road.width / 4, p.y + road.width / 4)
    t = mercantile.tile(lon, lat, 21)
    img = np.asarray(render_tile(tiny_world, 21, t.x, t.y))
    left, bottom, right, top = mercantile.bounds(t)
    px, py = int((lon - left) / (right - left) * 256), int((top - lat) / (top - bottom) * 256)
    assert np.abs(img[py, px].astype(int) - np.array(ASPHALT)).sum() < 40
