import asyncio
import io
import urllib.request

import aiohttp
import numpy as np
import pytest
from PIL import Image

from corebuild.errors import ConfigError, StageError
from corebuild.stages.fetch.aerial import AERIAL_PRESETS, AerialConfig, XYZTiles, tile_url
from corebuild.stages.fetch.blank import is_mostly_flat, is_placeholder, is_uniform
from corebuild.stages.fetch.http import HttpClient, HttpConfig
from corebuild.synthetic.render import Camera, render_street, render_tile


def test_uniform_and_flat_detection_on_real_renders_and_placeholders(tiny_world, tiny_server):
    assert is_uniform(Image.new("RGB", (256, 256), (204, 204, 204)))
    assert not is_uniform(render_tile(tiny_world, 20, *_tile_on_road(tiny_world)))
    with urllib.request.urlopen(f"{tiny_server.base_url}/maps/api/streetview?location=0,0&size=640x640&key=k") as r:
        assert is_mostly_flat(Image.open(io.BytesIO(r.read())))  # Street View's grey picture
    rng = np.random.default_rng(1)
    for _ in range(30):  # real views are never mistaken for the placeholder
        road = tiny_world.roads[int(rng.integers(len(tiny_world.roads)))]
        p = road.line.interpolate(float(rng.uniform(0, road.line.length)))
        assert not is_mostly_flat(render_street(tiny_world, Camera(p.x, p.y, float(rng.uniform(0, 360)))))
    assert is_placeholder(b"abc", ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"])
    assert not is_placeholder(b"abc", [])


def _tile_on_road(world):
    import mercantile

    road = world.roads[0]
    p = road.line.interpolate(30)
    lat, lon = world.to_latlon(p.x, p.y)
    t = mercantile.tile(lon, lat, 20)
    return t.x, t.y


def _crop(cfg, key=""):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig(attempts=1)), cfg, key).crop(47.0, 8.0)

    return asyncio.run(go())


def test_blank_tiles_are_no_imagery_failures(fault_server):
    with pytest.raises(StageError) as err:
        _crop(AerialConfig(url_template=fault_server.url + "/blank/{z}/{x}/{y}.png"))
    assert err.value.reason == "aerial.no_imagery"


def test_presets_and_key_templates(fault_server):
    assert tile_url(AERIAL_PRESETS["mapbox_satellite"].url_template, __import__("mercantile").Tile(1, 2, 3), key="pk.SECRET") .endswith("access_token=pk.SECRET")
    assert AERIAL_PRESETS["mapbox_satellite"].tile_size == 512 and AERIAL_PRESETS["osm"].max_zoom == 19
    with pytest.raises(ConfigError, match="needs \\{key\\}"):
        XYZTiles(None, AerialConfig(url_template="https://h/{z}/{x}/{y}?key={key}"))
    with pytest.raises(ConfigError, match="beyond this source's maximum 19"):
        XYZTiles(None, AERIAL_PRESETS["osm"].__class__(**{**AERIAL_PRESETS["osm"].__dict__, "zoom": 20}))
    # 512-px tiles: a 512 crop needs up to 4 of them, and the key never shows in an error.
    cfg = AerialConfig(url_template=fault_server.url + "/status/404?tile={z}/{x}/{y}&access_token={key}", tile_size=512)
    with pytest.raises(StageError) as err:
        _crop(cfg, key="pk.TOPSECRET")
    assert err.value.reason == "aerial.http_404" and "TOPSECRET" not in str(err.value)


def test_no_synthetic_aerial_tile_near_a_road_is_blank(tiny_world):
    """Grass- or water-only tiles still carry grain, as real imagery does."""
    import mercantile

    seen = 0
    for road in tiny_world.roads:
        for t in (0.2, 0.5, 0.8):
            p = road.line.interpolate(road.line.length * t)
            lat, lon = tiny_world.to_latlon(p.x, p.y)
            c = mercantile.tile(lon, lat, 20)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    assert not is_uniform(render_tile(tiny_world, 20, c.x + dx, c.y + dy))
                    seen += 1
    assert seen > 100
