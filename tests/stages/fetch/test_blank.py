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


def _flat_by_the_array(img, share=0.97, tol=6):
    """is_mostly_flat as it was written first: numpy median and share on the whole sample."""
    from corebuild.stages.fetch.blank import _pixels

    a = _pixels(img)
    median = np.median(a, axis=0)
    close = (np.abs(a - median) <= tol).all(axis=1).mean()
    return bool(close >= share and (median.max() - median.min()) <= 12)


def test_the_histogram_flat_check_answers_as_the_array_one_near_every_threshold():
    """Odd and even sample sizes (half-integer medians), greys and colours, 0-5 % stray pixels
    around the 97 % share, channel medians around the 12 apart bound, other modes, other share/tol."""
    rng = np.random.default_rng(3)
    answers = {True: 0, False: 0}
    for trial in range(1500):
        w, h = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        base = rng.integers(0, 256, size=3)
        if rng.random() < 0.7:  # near-grey: channel medians within ~16 of each other
            base = int(base.mean()) + rng.integers(-8, 9, size=3)
        a = np.tile(np.clip(base, 0, 255), (h, w, 1)).astype(np.int16)
        spread = int(rng.integers(0, 9))
        a += rng.integers(-spread, spread + 1, size=a.shape).astype(np.int16)
        stray = rng.random((h, w)) < rng.choice([0.0, 0.01, 0.03, 0.035, 0.05, 0.5])
        a[stray] = rng.integers(0, 256, size=(int(stray.sum()), 3))
        if rng.random() < 0.3:
            a[: h // 2] += int(rng.integers(1, 4))  # two middle values apart: a .5 median
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
        mode = str(rng.choice(["RGB", "RGB", "L", "RGBA", "P"]))
        img = img if mode == "RGB" else img.convert(mode)
        for share, tol in ((0.97, 6), (float(rng.uniform(0, 1)), int(rng.integers(0, 12)))):
            want = _flat_by_the_array(img, share, tol)
            assert is_mostly_flat(img, share, tol) == want, (trial, mode, w, h, share, tol)
            answers[want] += 1
    assert min(answers.values()) > 500  # both answers well exercised


def test_real_views_are_ruled_out_from_the_histogram_without_the_pixel_array(tiny_world, tiny_server, monkeypatch):
    """The per-view cost of the check: a real view is decided from the sample's histogram; only a
    (near-)placeholder has its joint share counted on the array."""
    from corebuild.stages.fetch import blank

    counted = []
    real_share = blank._flat_share
    monkeypatch.setattr(blank, "_flat_share", lambda *a: counted.append(1) or real_share(*a))
    rng = np.random.default_rng(2)
    for _ in range(10):
        road = tiny_world.roads[int(rng.integers(len(tiny_world.roads)))]
        p = road.line.interpolate(float(rng.uniform(0, road.line.length)))
        assert not is_mostly_flat(render_street(tiny_world, Camera(p.x, p.y, float(rng.uniform(0, 360)))))
    # A grey but busy view (overcast sky, asphalt): its channel medians agree, one channel's own share does not pass.
    grey = rng.integers(60, 200, size=(640, 640, 1)).repeat(3, axis=2) + rng.integers(0, 3, size=(640, 640, 3))
    assert not is_mostly_flat(Image.fromarray(grey.astype(np.uint8), "RGB"))
    assert counted == []
    with urllib.request.urlopen(f"{tiny_server.base_url}/maps/api/streetview?location=0,0&size=640x640&key=k") as r:
        assert is_mostly_flat(Image.open(io.BytesIO(r.read())))
    assert counted == [1]
