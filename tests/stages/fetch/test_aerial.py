import asyncio
import io

import aiohttp
import mercantile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from corebuild.errors import StageError
from corebuild.geo import mercator_gsd
from corebuild.stages.fetch.aerial import AerialConfig, XYZTiles, plan_crop, tile_url
from corebuild.stages.fetch.http import HttpClient, HttpConfig
from corebuild.synthetic.render import render_tile
from tests.stages.fetch.bombs import BIG_BODY_BYTES, bomb_png


@settings(max_examples=200, deadline=None)
@given(lat=st.floats(-84, 84), lon=st.floats(-179.999, 179.999), zoom=st.integers(1, 21), size=st.sampled_from([256, 300, 512]))
def test_crop_needs_exactly_the_tiles_covering_it(lat, lon, zoom, size):
    plan = plan_crop(lat, lon, zoom, size)
    assert len(plan.tiles) == len(set(plan.tiles)) or zoom <= 1  # tiny worlds wrap onto themselves
    assert len(plan.tiles) <= 9 if size <= 512 else True
    # Every tile overlaps the crop, and the crop is covered: offsets tile the square.
    covered = np.zeros((size, size), bool)
    for dx, dy in plan.offsets:
        assert -256 < dx < size and -256 < dy < size
        covered[max(0, dy) : max(0, dy + 256), max(0, dx) : max(0, dx + 256)] = True
    if plan.north < 85 and plan.south > -85:
        assert covered.all()
    # The true centre is within half a pixel of the asked point (a pixel is gsd metres).
    tol = mercator_gsd(lat, zoom) * 0.75 / (111320 * max(np.cos(np.radians(lat)), 1e-3))
    assert abs(plan.center_lon - lon) <= tol * 2 or zoom <= 2


def test_tile_set_agrees_with_mercantile():
    plan = plan_crop(47.0, 8.0, 20, 512)
    # Shrink the bounds by a hair so mercantile does not add tiles merely touching an edge.
    eps = 1e-9
    expected = set(mercantile.tiles(plan.west + eps, plan.south + eps, plan.east - eps, plan.north - eps, 20))
    assert set(plan.tiles) == expected


def test_templates():
    t = mercantile.Tile(3, 5, 4)
    assert tile_url("https://{s}.h/{z}/{x}/{y}.png", t, ("a", "b")) == "https://a.h/4/3/5.png"
    assert tile_url("https://h/{q}.jpg", t) == f"https://h/{mercantile.quadkey(t)}.jpg"
    assert tile_url("https://h/{z}/{x}/{-y}.png", t) == "https://h/4/3/10.png"
    with pytest.raises(StageError, match="subdomains"):
        tile_url("https://{s}.h/{z}/{x}/{y}", t)


def test_crop_is_stitched_from_the_server_tiles(tiny_server, tiny_world):
    road = tiny_world.roads[0]
    p = road.line.interpolate(40)
    lat, lon = tiny_world.to_latlon(p.x, p.y)
    cfg = AerialConfig(url_template=tiny_server.tile_template, image_format="png")

    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig()), cfg).crop(lat, lon)

    crop = asyncio.run(go())
    img = np.asarray(Image.open(io.BytesIO(crop.image)).convert("RGB"))
    assert img.shape == (512, 512, 3) and crop.zoom == 20 and 4 <= crop.tiles <= 9
    assert crop.west < lon < crop.east and crop.south < lat < crop.north
    assert crop.gsd_m == pytest.approx(mercator_gsd(lat, 20), rel=1e-3)
    # Lossless stitching: the crop equals the tiles rendered directly, placed by the plan.
    plan = plan_crop(lat, lon, 20, 512)
    ref = Image.new("RGB", (512, 512))
    for t, off in zip(plan.tiles, plan.offsets):
        ref.paste(render_tile(tiny_world, t.z, t.x, t.y), off)
    assert np.array_equal(img, np.asarray(ref))


def test_tile_errors_are_failures_with_reasons(tiny_server):
    cfg = AerialConfig(url_template=tiny_server.base_url + "/nothing/{z}/{x}/{y}.png")

    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig(attempts=1)), cfg).crop(47.0, 8.0)

    with pytest.raises(StageError) as err:
        asyncio.run(go())
    assert err.value.reason == "aerial.http_404"


@pytest.mark.parametrize("code", [429, 500, 503])
def test_tile_429_and_5xx_are_retried(fault_server, code):
    cfg = AerialConfig(url_template=f"{fault_server.url}/flaky-tile/{code}/{{z}}/{{x}}/{{y}}.png")

    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig(attempts=3, backoff_initial_s=0.01)), cfg).crop(47.0 + code * 1e-3, 8.0)

    crop = asyncio.run(go())
    assert crop.tiles >= 4 and Image.open(io.BytesIO(crop.image)).size == (512, 512)


def test_truncated_tile_is_a_bad_image(fault_server):
    cfg = AerialConfig(url_template=f"{fault_server.url}/truncated-tile/{{z}}/{{x}}/{{y}}.png")

    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig(attempts=1)), cfg).crop(47.0, 8.0)

    with pytest.raises(StageError) as err:
        asyncio.run(go())
    assert err.value.reason == "aerial.bad_image"


# ----- decode limits ---------------------------------------------------------------------------


def _crop_from(url_template, http, stage="aerial", cache=None):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, http, cache=cache), AerialConfig(url_template=url_template), stage=stage).crop(47.0, 8.0)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("bomb", "image_too_large"),  # 20000x20000 PNG in ~48 KB
        ("pixels", "image_too_large"),  # 9000x9000 PNG in ~10 KB
        ("truncated", "bad_image"),
        ("big", "image_too_large"),
        ("endless", "image_too_large"),
    ],
)
@pytest.mark.parametrize("stage", ["aerial", "map"])
def test_hostile_tiles_fail_the_crop_with_their_reason(fault_server, kind, reason, stage):
    http = HttpConfig(attempts=2, backoff_initial_s=0.01, max_image_bytes=BIG_BODY_BYTES)
    with pytest.raises(StageError) as err:
        _crop_from(f"{fault_server.url}/image-tile/{kind}/{{z}}/{{x}}/{{y}}.png", http, stage)
    assert err.value.reason == f"{stage}.{reason}" and "\n" not in str(err.value)
    if kind in ("bomb", "pixels", "truncated"):
        assert "tile 20/" in str(err.value)  # names the tile


def test_tile_limits_are_configurable(fault_server):
    url = f"{fault_server.url}/image-tile/ok/{{z}}/{{x}}/{{y}}.png"
    assert _crop_from(url, HttpConfig(attempts=1)).width == 512  # 256-px tiles pass the defaults
    with pytest.raises(StageError) as err:
        _crop_from(url, HttpConfig(attempts=1, max_image_pixels=256 * 256 - 1))
    assert err.value.reason == "aerial.image_too_large" and "256x256" in str(err.value)
    with pytest.raises(StageError) as err:
        _crop_from(url, HttpConfig(attempts=1, max_image_bytes=10_000))
    assert err.value.reason == "aerial.image_too_large" and "fetch.http.max_image_bytes" in str(err.value)


def test_a_bomb_from_the_cache_is_refused_too(fault_server):
    """Cache hits skip the download cap: the decode-time byte and pixel checks still apply."""

    class Planted:
        async def get(self, key):
            return bomb_png(9_000, 9_000)

        async def put(self, key, body):
            raise AssertionError("nothing is fetched")

    with pytest.raises(StageError) as err:
        _crop_from(f"{fault_server.url}/image-tile/ok/{{z}}/{{x}}/{{y}}.png", HttpConfig(attempts=1), cache=Planted())
    assert err.value.reason == "aerial.image_too_large" and "9000x9000" in str(err.value)


# ----- the antimeridian: tile x wraps modulo 2^z ------------------------------------------------


def _wrap_tile_pixels(z: int, x: int, y: int) -> np.ndarray:
    """The tile a loopback XYZ server serves at z/x/y: noise that differs per tile."""
    return np.random.default_rng([z, x, y]).integers(0, 256, (256, 256, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def xyz_world_server():
    """An XYZ tile server for the whole world: 404 for any x or y outside 0..2^z-1, as real
    tile servers answer; logs the tiles asked for."""
    from aiohttp import web

    from corebuild.aio import serve_app

    asked: list[tuple[int, int, int]] = []

    async def tile(request):
        z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        asked.append((z, x, y))
        if not (0 <= x < 2**z and 0 <= y < 2**z):
            return web.Response(status=404, text="no such tile")
        buf = io.BytesIO()
        Image.fromarray(_wrap_tile_pixels(z, x, y)).save(buf, "PNG")
        return web.Response(body=buf.getvalue(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/world/{z}/{x}/{y}.png", tile)
    running = serve_app(app)
    running.asked = asked
    yield running
    running.stop()


@pytest.mark.parametrize("lat, lon", [(0.0, 179.99), (0.0, -179.99), (-17.5, 179.995), (65.0, -179.997)])
def test_a_crop_across_the_antimeridian_wraps_tile_x_and_stitches_the_right_pixels(xyz_world_server, lat, lon):
    zoom, size = 14, 512  # a 512-px crop at z14 is ~5 km wide: it crosses lon 180 from 179.99
    n = 2**zoom
    plan = plan_crop(lat, lon, zoom, size)
    ox, oy = plan.origin_px
    # The crop's left edge, worked out without the plan: Web Mercator x is linear in longitude.
    assert abs(ox - ((lon + 180) / 360 * 256 * n - size / 2)) <= 0.5 + 1e-6
    assert ox < 0 or ox + size > 256 * n, "the crop should cross the antimeridian"
    assert all(0 <= t.x < n for t in plan.tiles)
    assert {n - 1, 0} <= {t.x for t in plan.tiles}  # the last column of tiles next to the first

    cfg = AerialConfig(url_template=f"{xyz_world_server.url}/world/{{z}}/{{x}}/{{y}}.png", zoom=zoom, size=size, image_format="png")
    xyz_world_server.asked.clear()

    async def go():
        async with aiohttp.ClientSession() as s:
            return await XYZTiles(HttpClient(s, HttpConfig(attempts=1)), cfg).crop(lat, lon)

    crop = asyncio.run(go())
    asked_x = {x for _, x, _ in xyz_world_server.asked}
    assert asked_x <= set(range(n)) and {n - 1, 0} <= asked_x, sorted(asked_x)
    assert crop.center_lon == pytest.approx(lon, abs=1e-3)

    # Every crop pixel is the world pixel (ox + i mod the world width, oy + j), from its tile.
    got = np.asarray(Image.open(io.BytesIO(crop.image)).convert("RGB"))
    gx = (ox + np.arange(size)) % (256 * n)
    gy = oy + np.arange(size)
    want = np.empty((size, size, 3), np.uint8)
    for ty in np.unique(gy // 256):
        for tx in np.unique(gx // 256):
            rows, cols = np.nonzero(gy // 256 == ty)[0], np.nonzero(gx // 256 == tx)[0]
            want[np.ix_(rows, cols)] = _wrap_tile_pixels(zoom, int(tx), int(ty))[np.ix_(gy[rows] % 256, gx[cols] % 256)]
    assert np.array_equal(got, want)
