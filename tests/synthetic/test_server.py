"""The synthetic server speaks the Street View Static API and XYZ wire formats."""

import io
import json
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
from PIL import Image


def _get(server, path, **params):
    url = f"{server.base_url}{path}?{urlencode(params)}" if params else f"{server.base_url}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def _a_point_on_a_road(world):
    road = world.roads[1]
    p = road.line.interpolate(road.line.length / 2)
    return world.to_latlon(p.x, p.y)


def test_metadata_ok(tiny_server, tiny_world):
    lat, lon = _a_point_on_a_road(tiny_world)
    status, ctype, body = _get(tiny_server, "/maps/api/streetview/metadata", location=f"{lat},{lon}", key="k", radius=50, source="outdoor")
    doc = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert doc["status"] == "OK" and doc["pano_id"].startswith("SYN")
    assert set(doc) >= {"copyright", "date", "location", "pano_id", "status"}
    assert set(doc["location"]) == {"lat", "lng"}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"location": "0,0", "key": "k"}, "ZERO_RESULTS"),
        ({"location": "not-a-place", "key": "k"}, "INVALID_REQUEST"),
        ({"location": "95,0", "key": "k"}, "INVALID_REQUEST"),
        ({"location": "0,0"}, "REQUEST_DENIED"),
        ({"pano": "SYN3R0K999999", "key": "k"}, "ZERO_RESULTS"),
    ],
)
def test_metadata_errors(tiny_server, params, expected):
    status, _, body = _get(tiny_server, "/maps/api/streetview/metadata", **params)
    assert status == 200 and json.loads(body)["status"] == expected


def test_image_by_pano_and_heading(tiny_server, tiny_world):
    lat, lon = _a_point_on_a_road(tiny_world)
    meta = json.loads(_get(tiny_server, "/maps/api/streetview/metadata", location=f"{lat},{lon}", key="k")[2])
    status, ctype, body = _get(tiny_server, "/maps/api/streetview", pano=meta["pano_id"], size="320x240", heading=90, fov=90, pitch=0, key="k")
    assert status == 200 and ctype == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (320, 240)


@pytest.mark.parametrize(
    "params, code",
    [
        ({"location": "0,0", "size": "64x64"}, 403),  # no key
        ({"location": "0,0", "size": "64x64", "key": "k", "return_error_code": "true"}, 404),
        ({"location": "0,0", "size": "900x900", "key": "k"}, 400),
        ({"location": "0,0", "key": "k"}, 400),
        ({"location": "0,0", "size": "64x64", "fov": "200", "key": "k"}, 400),
    ],
)
def test_image_errors(tiny_server, params, code):
    assert _get(tiny_server, "/maps/api/streetview", **params)[0] == code


def test_no_imagery_without_return_error_code_is_a_grey_placeholder(tiny_server):
    status, ctype, body = _get(tiny_server, "/maps/api/streetview", location="0,0", size="64x64", key="k")
    assert status == 200 and ctype == "image/jpeg"
    img = Image.open(io.BytesIO(body)).convert("L")
    assert min(img.getextrema()) > 90  # uniformly light grey apart from the text


def test_tiles(tiny_server):
    status, ctype, body = _get(tiny_server, "/tiles/20/549000/370000.png")
    assert status == 200 and ctype == "image/png" and Image.open(io.BytesIO(body)).size == (256, 256)
    assert _get(tiny_server, "/tiles/3/9/0.png")[0] == 404
    assert _get(tiny_server, "/tiles/3/x/0.png")[0] == 400


def test_osm_map_tiles(tiny_server, tiny_world):
    import mercantile
    import numpy as np

    road = tiny_world.roads[0]
    p = road.line.interpolate(30)
    lat, lon = tiny_world.to_latlon(p.x, p.y)
    t = mercantile.tile(lon, lat, 19)
    status, ctype, body = _get(tiny_server, f"/osm/19/{t.x}/{t.y}.png")
    img = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert status == 200 and ctype == "image/png" and img.shape == (256, 256, 3)
    assert (img == 255).all(axis=-1).mean() > 0.02  # white road fill, map style
    assert _get(tiny_server, "/osm/20/0/0.png")[0] == 404
