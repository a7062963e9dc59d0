"""The synthetic server speaks the Street View Static API and XYZ wire formats."""

import asyncio
import io
import math
import os
import time
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


def test_tiles_are_rendered_once_and_served_again_from_the_cache(tiny_world, monkeypatch):
    from corebuild.synthetic import server as srv

    renders = []
    real = srv.render_tile
    monkeypatch.setattr(srv, "render_tile", lambda *a, **k: renders.append(a[1:]) or real(*a, **k))
    running = srv.serve_in_thread(tiny_world)
    try:
        first = _get(running, "/tiles/20/549000/370000.png")
        again = _get(running, "/tiles/20/549000/370000.png")
        other = _get(running, "/tiles/20/549001/370000.png")
    finally:
        running.stop()
    assert first == again and other[0] == 200 and other[2] != first[2]
    assert renders == [(20, 549000, 370000), (20, 549001, 370000)]
    assert running.server.tiles.hits == 1


def test_tile_cache_drops_the_least_recently_used_past_its_bytes():
    from corebuild.synthetic.server import TileCache

    cache, made = TileCache(max_bytes=10), []
    make = lambda key: (lambda: made.append(key) or b"x" * 4)  # noqa: E731
    for key in ("a", "b", "a", "c", "d", "a", "b"):
        assert cache.get((key,), make(key)) == b"xxxx"
    # a, b; a again (hit); c (12 bytes: b dropped, the least recently used); d (a dropped); a, b again
    assert made == ["a", "b", "c", "d", "a", "b"] and cache.hits == 1 and cache.size <= 10


def test_a_render_pool_serves_the_same_bytes_from_other_processes(tiny_world):
    """`synthetic serve` renders in forked workers (not capped at one core); what it serves is
    byte for byte what the loop itself renders."""
    from corebuild.aio import serve_app
    from corebuild.synthetic import server as srv
    from corebuild.synthetic.render import Camera, encode, render_street, render_tile

    pool = srv.render_pool(tiny_world, 2)
    jobs = []
    render = pool.render
    pool.render = lambda fn, *args: jobs.append(fn.__name__) or render(fn, *args)
    running = serve_app(srv.SyntheticServer(tiny_world, pool=pool).app(), "127.0.0.1", 0)
    try:
        pano = tiny_world.snap(*_a_point_on_a_road(tiny_world), 50)
        status, _, view = _get(running, "/maps/api/streetview", pano=pano.id, heading=90, size="320x240", key="k")
        _, _, tile = _get(running, "/tiles/20/549000/370000.png")
        _, _, again = _get(running, "/tiles/20/549000/370000.png")
    finally:
        running.stop()
        pool.terminate()
    assert status == 200 and view == encode(render_street(tiny_world, Camera(pano.x, pano.y, 90.0, 90.0, 0.0, 320, 240)), "jpeg")
    assert tile == again == encode(render_tile(tiny_world, 20, 549000, 370000), "png")
    assert jobs == ["_street_jpeg", "_tile_png"]  # rendered in the pool; the repeated tile from the cache


def test_a_server_still_generating_its_world_past_the_timeout_says_so(manifests_dir):
    from corebuild.synthetic.server import serve_in_subprocess

    with pytest.raises(RuntimeError, match=r"not listening after 0 s \(still generating the world of demo\?\)"):
        serve_in_subprocess("demo", str(manifests_dir), timeout_s=0.05)


def _texture_counts(world) -> tuple[int, int, int]:
    from corebuild.synthetic.signs import sign_texture

    info = sign_texture.cache_info()
    return info.hits, info.misses, info.currsize


def test_render_workers_draw_no_sign_texture_the_server_drew_before_forking(tiny_world):
    """Every sign's texture is drawn once before the render pool forks and shared by its workers;
    a worker rendering views of signs draws none of them again."""
    from corebuild.synthetic import server as srv
    from corebuild.synthetic.render import Camera
    from corebuild.synthetic.signs import sign_texture

    sign_texture.cache_clear()
    pool = srv.render_pool(tiny_world, 2)
    try:
        before = asyncio.run(pool.render(_texture_counts))
        for sign in tiny_world.signs[:4]:
            cx, cy, _ = sign.center
            heading = math.degrees(math.atan2(-sign.normal[0], -sign.normal[1])) % 360
            cam = Camera(cx + sign.normal[0] * 14, cy + sign.normal[1] * 14, heading)
            asyncio.run(pool.render(srv._street_jpeg, cam.x, cam.y, cam.heading, cam.fov, cam.pitch, cam.width, cam.height))
        after = asyncio.run(pool.render(_texture_counts))
    finally:
        pool.terminate()
    (hits, misses, size), (hits_after, misses_after, _) = before, after
    assert size == len(tiny_world.signs) > 0
    assert misses_after == misses and hits_after > hits  # signs drawn, each from the shared cache


def _echo(world, k: int) -> bytes:
    return f"{k}".encode()


def _fail(world) -> bytes:
    raise ValueError("no such view")


def test_render_workers_answer_every_request_past_their_in_flight_limit_and_say_when_one_fails_or_dies(tiny_world):
    """The event loop watches each render worker's pipe: every request is answered, in any number
    (past the limit sent at once, the rest wait in the server), a failing render fails its own
    request only, and a worker that dies fails what it was given and gets no more."""
    from corebuild.synthetic import server as srv

    pool = srv.render_pool(tiny_world, 2)
    n = 3 * pool.IN_FLIGHT * 2

    async def many():
        asks = [asyncio.ensure_future(pool.render(_echo, k)) for k in range(n)]
        await asyncio.sleep(0)  # every request made
        sent, held = [len(q) for q in pool._sent], [len(q) for q in pool._queued]
        return await asyncio.gather(*asks), sent, held

    try:
        answers, sent, held = asyncio.run(many())
        assert answers == [f"{k}".encode() for k in range(n)]
        assert sent == [pool.IN_FLIGHT] * 2 and held == [n // 2 - pool.IN_FLIGHT] * 2
        with pytest.raises(RuntimeError, match=r"render failed: ValueError\('no such view'\)"):
            asyncio.run(pool.render(_fail))
        assert asyncio.run(pool.render(_echo, 7)) == b"7"  # the worker lives on
        pool._procs[0].kill()
        pool._procs[0].join()

        async def after_death():
            return await asyncio.gather(*(pool.render(_echo, k) for k in range(4)), return_exceptions=True)

        answers = asyncio.run(after_death())
        assert isinstance(answers[0], RuntimeError) and "render worker 0 exited (exit code -9)" in str(answers[0])
        assert answers[1:] == [b"1", b"2", b"3"]  # on the live worker
        async def again():
            return await asyncio.gather(*(pool.render(_echo, k) for k in range(n)))

        assert asyncio.run(again()) == [f"{k}".encode() for k in range(n)]  # all on worker 1 now
    finally:
        pool.terminate()


def test_a_started_server_answers_a_request_sent_before_it_listens(manifests_dir):
    """A build starts its world's server on a socket it bound itself: the URL is there at once,
    and a client that connects while the world is still being made waits and is answered."""
    import threading
    import urllib.request

    from corebuild.synthetic.server import ServerStart

    start = ServerStart("tiny", str(manifests_dir))
    answered = []
    early = threading.Thread(target=lambda: answered.append(urllib.request.urlopen(f"{start.url}/healthz", timeout=60).read()))
    early.start()
    try:
        assert start.proc.poll() is None and not answered  # not listening yet: the world is being made
        proc = start.wait(120)
        early.join(60)
        assert answered == [b"ok"] and proc.poll() is None
        workers = [int(pid) for pid in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
        cores = os.cpu_count() or 1
        assert len(workers) == (cores if cores > 1 else 0)  # its render workers, one per core
    finally:
        start.proc.terminate()
        start.proc.wait(10)
    # The server gone (as a build ends it), its workers read the end of their pipes and exit.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
