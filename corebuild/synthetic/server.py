"""Serve the synthetic world over loopback HTTP in real providers' wire formats.

- Google Street View Static API: `GET /maps/api/streetview/metadata` (JSON with `status`,
  `pano_id`, `location`, `date`, `copyright`) and `GET /maps/api/streetview` (JPEG), with the
  API's parameters (`location` or `pano`, `size`, `heading`, `fov`, `pitch`, `radius`, `source`,
  `return_error_code`, `key`) and its error behaviour.
- XYZ tiles: `GET /tiles/{z}/{x}/{y}.png` (256-px Web Mercator PNG, imagery style) and
  `GET /osm/{z}/{x}/{y}.png` (OSM-style map tiles, zoom 0-19).
- Mapillary API v4: see `corebuild.synthetic.mapillary`.
- OpenAI-compatible `POST /v1/chat/completions`: see `corebuild.synthetic.llm`.

With a `FaultConfig` (`corebuild synthetic serve --fault-rate 0.2`) a seeded share of requests
misbehaves: see `corebuild.synthetic.faults`.

The real clients in `corebuild.stages.fetch` talk to it exactly as they talk to the real services.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import socket
import subprocess
import sys
import threading
from collections import OrderedDict, deque
from typing import Callable, Optional

from aiohttp import web
from PIL import Image, ImageDraw

from corebuild.licenses import SYNTHETIC_ATTRIBUTION
from corebuild.synthetic.faults import FaultConfig, FaultInjector
from corebuild.synthetic.llm import add_llm_routes
from corebuild.synthetic.mapillary import add_mapillary_routes
from corebuild.aio import RunningServer, serve_app
from corebuild.synthetic.render import Camera, encode, render_map_tile, render_street, render_tile
from corebuild.synthetic.signs import SIGN_TEXTURES, sign_texture
from corebuild.synthetic.world import World

MAX_SIZE = 640
_LOC_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")
_SIZE_RE = re.compile(r"^(\d{1,4})x(\d{1,4})$")
COPYRIGHT = SYNTHETIC_ATTRIBUTION  # Street View metadata's `copyright`: the credit a row records


def _status(status: str, message: Optional[str] = None) -> web.Response:
    body = {"status": status}
    if message:
        body["error_message"] = message
    return web.json_response(body)


def _no_imagery_image(w: int, h: int) -> bytes:
    # Street View answers "no imagery" with a grey placeholder unless return_error_code=true.
    img = Image.new("RGB", (w, h), (228, 227, 223))
    ImageDraw.Draw(img).text((w // 2 - 60, h // 2), "Sorry, we have no imagery here.", fill=(120, 120, 120))
    return encode(img, "jpeg")


TILE_CACHE_BYTES = 512 * 1024 * 1024


# The world of this process's render workers (set before the pool forks: inherited, never pickled).
_POOL_WORLD: Optional[World] = None


def _street_jpeg(world: World, *camera) -> bytes:
    """Camera(*camera) as a JPEG (the camera travels as its fields: Camera itself is a cached
    constructor, which does not pickle)."""
    return encode(render_street(world, Camera(*camera)), "jpeg")


def _tile_png(world: World, kind: str, z: int, x: int, y: int) -> bytes:
    return encode((render_tile if kind == "aerial" else render_map_tile)(world, z, x, y), "png")


def _render_worker(conn, servers_ends: list) -> None:
    """A render worker: (fn, args) in, (True, fn(world, *args)) or (False, error) out, in order.
    `servers_ends`: the server's ends of the pipes so far, inherited by the fork and closed here,
    so that when the server goes, every worker reads the end of its pipe and exits."""
    for end in servers_ends:
        end.close()
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the server is gone
            return
        try:
            answer = (True, fn(_POOL_WORLD, *args))
        except Exception as exc:  # noqa: BLE001 - the request fails, the worker goes on
            answer = (False, RuntimeError(f"render failed: {exc!r}"))
        try:
            conn.send(answer)
        except OSError:  # the server is gone
            return


class RenderWorkers:
    """Forked processes that render for the server, so imagery is not capped at one core, each on
    a pipe that the event loop itself watches: an image comes back as the loop reads its pipe, with
    no pool threads and wake-ups between (multiprocessing.Pool's cost the demo's server ~20 % more
    CPU than rendering in the loop: README, The synthetic world). A request goes to the worker with
    the fewest waiting; past IN_FLIGHT they wait here, so the loop never blocks writing to a pipe
    whose worker is blocked writing back."""

    IN_FLIGHT = 16

    def __init__(self, world: World, processes: int):
        global _POOL_WORLD
        import multiprocessing

        _POOL_WORLD = world
        # Every sign's texture drawn here once, before the fork, and shared by the workers (copy on
        # write); each worker drawing its own, from a cache of fewer, drew 6 of 10 a second time.
        for sign in world.signs[:SIGN_TEXTURES]:
            sign_texture(sign.text, sign.background, sign.foreground, sign.script)
        ctx = multiprocessing.get_context("fork")
        self._conns, self._procs = [], []
        for _ in range(processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_render_worker, args=(theirs, [*self._conns, ours]), daemon=True)
            proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)
        self._sent: list[deque] = [deque() for _ in self._procs]  # futures of requests sent, in order
        self._queued: list[deque] = [deque() for _ in self._procs]  # (future, fn, args) not sent yet
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._dead: set[int] = set()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i, conn in enumerate(self._conns):
            if i not in self._dead:
                loop.add_reader(conn.fileno(), self._answer, i)

    async def render(self, fn: Callable[..., bytes], *args) -> bytes:
        """fn(world, *args) in a worker."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._watch(loop)
        live = [k for k in range(len(self._conns)) if k not in self._dead]
        if not live:
            raise RuntimeError(f"every render worker exited (exit codes {[p.exitcode for p in self._procs]})")
        i = min(live, key=lambda k: len(self._sent[k]) + len(self._queued[k]))
        fut = loop.create_future()
        self._queued[i].append((fut, fn, args))
        self._send(i)
        return await fut

    def _send(self, i: int) -> None:
        while self._queued[i] and len(self._sent[i]) < self.IN_FLIGHT:
            fut, fn, args = self._queued[i].popleft()
            if fut.done():  # its request went away while it waited
                continue
            try:
                self._conns[i].send((fn, args))
            except OSError:  # the worker is gone: its pipe is closed
                self._queued[i].appendleft((fut, fn, args))
                self._bury(i)
                return
            self._sent[i].append(fut)

    def _answer(self, i: int) -> None:
        try:
            ok, value = self._conns[i].recv()
        except (EOFError, OSError):
            self._bury(i)
            return
        fut = self._sent[i].popleft()
        if not fut.done():  # else its request went away
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._send(i)

    def _bury(self, i: int) -> None:
        """A worker that exited: what it was given fails (the client retries), and no more goes to it."""
        self._dead.add(i)
        self._loop.remove_reader(self._conns[i].fileno())
        self._procs[i].join(timeout=1)
        dead = RuntimeError(f"render worker {i} exited (exit code {self._procs[i].exitcode})")
        for fut in [*self._sent[i], *(q[0] for q in self._queued[i])]:
            if not fut.done():
                fut.set_exception(dead)
        self._sent[i].clear()
        self._queued[i].clear()

    def terminate(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc, conn in zip(self._procs, self._conns):
            proc.join()
            conn.close()


def render_pool(world: World, processes: int) -> Optional[RenderWorkers]:
    """`processes` render workers for the server (the event loop only parses requests and
    answers). None for 0 or 1: render in the loop."""
    return RenderWorkers(world, processes) if processes > 1 else None


class TileCache:
    """Encoded tiles by address, least recently used dropped past `max_bytes`: a tile is a pure
    function of the world and its address, and neighbouring crops share most of theirs (the demo
    asks for 4,900 tiles, 3,100 of them distinct), as a real tile service's CDN serves them."""

    def __init__(self, max_bytes: int = TILE_CACHE_BYTES):
        self.max_bytes, self.size, self.hits = max_bytes, 0, 0
        self._items: "OrderedDict[tuple, bytes]" = OrderedDict()

    def peek(self, key: tuple) -> Optional[bytes]:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return body

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        body = self.peek(key)
        if body is None:
            body = make()
            self._items[key] = body
            self.size += len(body)
            while self.size > self.max_bytes and self._items:
                self.size -= len(self._items.popitem(last=False)[1])
        return body


class SyntheticServer:
    def __init__(self, world: World, faults: Optional[FaultConfig] = None, pool=None):
        self.world = world
        self.requests = {"metadata": 0, "image": 0, "tile": 0}
        self.tiles = TileCache()
        self.pool = pool  # render_pool(...), or None: render on the event loop
        self.faults = FaultInjector(faults) if faults and faults.rate > 0 else None
        self._pending: dict[tuple, asyncio.Future] = {}

    async def _render(self, fn: Callable[..., bytes], *args) -> bytes:
        """fn(world, *args), in the render workers when there are some."""
        if self.pool is None:
            return fn(self.world, *args)
        return await self.pool.render(fn, *args)

    async def _tile(self, kind: str, z: int, x: int, y: int) -> bytes:
        key = (kind, z, x, y)
        body = self.tiles.peek(key)
        if body is not None:
            return body
        if key not in self._pending:  # the same tile asked for twice at once is rendered once
            self._pending[key] = asyncio.ensure_future(self._render(_tile_png, kind, z, x, y))
            self._pending[key].add_done_callback(lambda _: self._pending.pop(key, None))
        body = await asyncio.shield(self._pending[key])
        return self.tiles.get(key, lambda: body)

    def _find(self, q) -> tuple[Optional[str], Optional[object]]:
        """(error status, pano) for the location/pano parameters of a request."""
        radius = q.get("radius", "50")
        try:
            radius_m = float(radius)
        except ValueError:
            return "INVALID_REQUEST", None
        if "pano" in q:
            pano = self.world.pano(q["pano"])
            return (None, pano) if pano else ("ZERO_RESULTS", None)
        m = _LOC_RE.match(q.get("location", ""))
        if not m:
            return "INVALID_REQUEST", None
        lat, lon = float(m.group(1)), float(m.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or radius_m < 0:
            return "INVALID_REQUEST", None
        pano = self.world.snap(lat, lon, radius_m)
        return (None, pano) if pano else ("ZERO_RESULTS", None)

    async def metadata(self, request: web.Request) -> web.Response:
        self.requests["metadata"] += 1
        q = request.query
        if not q.get("key") and not q.get("client"):
            return _status("REQUEST_DENIED", "You must use an API key to authenticate each request to Google Maps Platform APIs.")
        err, pano = self._find(q)
        if err:
            return _status(err)
        return web.json_response(
            {
                "copyright": COPYRIGHT,
                "date": pano.date,
                "location": {"lat": pano.lat, "lng": pano.lon},
                "pano_id": pano.id,
                "status": "OK",
            }
        )

    async def image(self, request: web.Request) -> web.Response:
        self.requests["image"] += 1
        q = request.query
        if not q.get("key") and not q.get("client"):
            return web.Response(status=403, text="The Google Maps Platform server rejected your request. API key missing.")
        m = _SIZE_RE.match(q.get("size", ""))
        if not m:
            return web.Response(status=400, text="Invalid request. Missing the 'size' parameter.")
        w, h = int(m.group(1)), int(m.group(2))
        if not (1 <= w <= MAX_SIZE and 1 <= h <= MAX_SIZE):
            return web.Response(status=400, text=f"Invalid request. size must be at most {MAX_SIZE}x{MAX_SIZE}.")
        try:
            heading = float(q.get("heading", "0")) % 360
            fov = float(q.get("fov", "90"))
            pitch = float(q.get("pitch", "0"))
        except ValueError:
            return web.Response(status=400, text="Invalid request. heading, fov and pitch must be numbers.")
        if not (10 <= fov <= 120 and -90 <= pitch <= 90):
            return web.Response(status=400, text="Invalid request. fov must be 10..120 and pitch -90..90.")
        err, pano = self._find(q)
        if err == "INVALID_REQUEST":
            return web.Response(status=400, text="Invalid request. Invalid 'location' or 'pano' parameter.")
        if err:
            if q.get("return_error_code") == "true":
                return web.Response(status=404, text="No imagery at this location.")
            return web.Response(body=_no_imagery_image(w, h), content_type="image/jpeg")
        body = await self._render(_street_jpeg, pano.x, pano.y, heading, fov, pitch, w, h)
        return web.Response(body=body, content_type="image/jpeg")

    async def tile(self, request: web.Request) -> web.Response:
        self.requests["tile"] += 1
        try:
            z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        except ValueError:
            return web.Response(status=400, text="bad tile address")
        if not (0 <= z <= 22 and 0 <= x < 2**z and 0 <= y < 2**z):
            return web.Response(status=404, text="tile out of range")
        body = await self._tile("aerial", z, x, y)
        return web.Response(body=body, content_type="image/png", headers={"Cache-Control": "max-age=86400"})

    async def map_tile(self, request: web.Request) -> web.Response:
        """OSM-style raster map tiles of the same world (the second aerial modality)."""
        self.requests["map"] = self.requests.get("map", 0) + 1
        try:
            z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        except ValueError:
            return web.Response(status=400, text="bad tile address")
        if not (0 <= z <= 19 and 0 <= x < 2**z and 0 <= y < 2**z):
            return web.Response(status=404, text="tile out of range (OSM serves zoom 0-19)")
        body = await self._tile("map", z, x, y)
        return web.Response(body=body, content_type="image/png", headers={"Cache-Control": "max-age=86400"})

    def app(self) -> web.Application:
        # Describer requests carry four base64 images: well past aiohttp's 1 MiB default.
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self.faults.middleware] if self.faults else [])
        app.router.add_get("/maps/api/streetview/metadata", self.metadata)
        app.router.add_get("/maps/api/streetview", self.image)
        app.router.add_get("/tiles/{z}/{x}/{y}.png", self.tile)
        app.router.add_get("/osm/{z}/{x}/{y}.png", self.map_tile)
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        add_mapillary_routes(app, self.world)
        add_llm_routes(app)
        return app


def serve_in_thread(world: World, host: str = "127.0.0.1", port: int = 0, faults: Optional[FaultConfig] = None) -> RunningServer:
    """Start the server on a background thread (tests); returns once it is listening. With
    `faults`, the running server's `server` attribute has the injector's counts."""
    server = SyntheticServer(world, faults)
    return dataclasses.replace(serve_app(server.app(), host, port), server=server)


def serve_forever(world: World, host: str = "127.0.0.1", port: int = 0, faults: Optional[FaultConfig] = None, processes: int = 0,
                  sock: Optional[socket.socket] = None) -> None:
    """Run in the foreground; prints `listening on <url>` once ready (the parent reads it).
    processes: render workers (0: one per core; 1: render in the event loop). sock: a listening
    socket to serve on instead of binding host:port (the build's, inherited)."""
    pool = render_pool(world, processes or os.cpu_count() or 1)  # forked before the loop starts

    async def _main():
        runner = web.AppRunner(SyntheticServer(world, faults, pool).app(), access_log=None)
        await runner.setup()
        await (web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)).start()
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"listening on http://{bound_host}:{bound_port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(_main())


class ServerStart:
    """`corebuild synthetic serve` started as a child process (its own core) on a socket this
    process bound, so its URL is known at once and the build prepares while the server generates
    its world (seconds for the demo, minutes for a town of a million points, 160 km2); a client
    that connects before then waits in the socket's backlog. `wait()` returns once it listens."""

    def __init__(self, region_id: str, manifests_dir: str, host: str = "127.0.0.1"):
        self.region_id = region_id
        with socket.create_server((host, 0)) as sock:
            self.url = f"http://{host}:{sock.getsockname()[1]}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "corebuild", "synthetic", "serve", "--region", region_id, "--manifests", manifests_dir, "--fd", str(sock.fileno())],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(sock.fileno(),),
            )  # the child has its own copy of the socket; ours closes here

    def wait(self, timeout_s: float = 900.0) -> subprocess.Popen:
        proc = self.proc
        expired = threading.Event()

        def expire():
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            line = proc.stdout.readline() if proc.stdout else ""
        finally:
            timer.cancel()
        if not line.startswith("listening on "):
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            why = f"not listening after {timeout_s:.0f} s (still generating the world of {self.region_id}?)" if expired.is_set() else err.strip()[-2000:] or repr(line)
            raise RuntimeError(f"synthetic imagery server failed to start: {why}")
        return proc


def serve_in_subprocess(region_id: str, manifests_dir: str, timeout_s: float = 900.0) -> tuple[subprocess.Popen, str]:
    """ServerStart, waited for: (proc, url) once it listens."""
    start = ServerStart(region_id, manifests_dir)
    return start.wait(timeout_s), start.url
