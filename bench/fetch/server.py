"""Loopback image server for the fetch benchmark: fixed injected latency, images from memory.

    python bench/fetch/server.py --port 0 --latency-ms 20 --images 64

prints `listening on http://127.0.0.1:PORT` once ready. Serves, in the providers' wire formats:

- `GET /maps/api/streetview/metadata?location=lat,lng&key=k`  Street View metadata JSON
- `GET /maps/api/streetview?pano=<id>&heading=<h>&size=640x640&key=k`  a 640x640 JPEG
- `GET /tiles/{z}/{x}/{y}.png`  a 256-px PNG tile
- `GET /stats`  request counters (JSON), `GET /healthz`

The pools (street JPEGs, quality 90, and aerial tiles) are rendered once at start with
corebuild's synthetic renderer, so the bytes are the kind the pipeline really fetches; every
request maps deterministically onto a pool entry (crc32 of its query). Each request sleeps
`--latency-ms` before answering (the network round trip being simulated); no rendering or
encoding happens per request, so the server's own CPU stays small and the client is measured.

Bounded: it exits after `--max-seconds` or `--max-requests`, and binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

HEADINGS = (0.0, 90.0, 180.0, 270.0)
STREET_SIZE = 640
TILE_ZOOM = 20


def render_pools(n_images: int, n_tiles: int, seed: int = 7, lat0: float = 48.8566, lon0: float = 2.3522):
    """(street JPEGs, tile PNGs) rendered from one synthetic town."""
    import mercantile
    import numpy as np

    from corebuild.synthetic.render import Camera, encode, render_street, render_tile
    from corebuild.synthetic.world import World

    world = World.generate(seed, lat0, lon0, 300.0, 300.0)
    rng = np.random.default_rng(seed)
    panos: dict[str, object] = {}
    n_panos = max(1, math.ceil(n_images / len(HEADINGS)))
    tries = 0
    while len(panos) < n_panos and tries < 100 * n_panos:
        tries += 1
        x, y = rng.uniform(-250, 250, size=2)
        pano = world.snap(*world.to_latlon(float(x), float(y)), 50.0)
        if pano is not None:
            panos.setdefault(pano.id, pano)
    street: list[bytes] = []
    for pano in panos.values():
        for h in HEADINGS:
            if len(street) < n_images:
                cam = Camera(pano.x, pano.y, h, 90.0, 0.0, STREET_SIZE, STREET_SIZE)
                street.append(encode(render_street(world, cam), "jpeg", quality=90))
    centre = mercantile.tile(lon0, lat0, TILE_ZOOM)
    side = max(1, math.ceil(math.sqrt(n_tiles)))
    tiles: list[bytes] = []
    for dy in range(side):
        for dx in range(side):
            if len(tiles) < n_tiles:
                x, y = centre.x - side // 2 + dx, centre.y - side // 2 + dy
                tiles.append(encode(render_tile(world, TILE_ZOOM, x, y), "png"))
    return street, tiles


class PoolServer:
    def __init__(self, street: list[bytes], tiles: list[bytes], latency_s: float, max_requests: int, done: asyncio.Event):
        self.street, self.tiles, self.latency = street, tiles, latency_s
        self.max_requests, self.done = max_requests, done
        self.counts = {"metadata": 0, "image": 0, "tile": 0, "rejected": 0}
        self.bytes_out = 0

    def _count(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.max_requests and sum(self.counts.values()) >= self.max_requests:
            self.done.set()

    async def metadata(self, request: web.Request) -> web.Response:
        self._count("metadata")
        await asyncio.sleep(self.latency)
        q = request.query
        if not q.get("key"):
            return web.json_response({"status": "REQUEST_DENIED", "error_message": "You must use an API key."})
        try:
            lat, lng = (float(v) for v in q.get("location", "").split(","))
        except ValueError:
            return web.json_response({"status": "INVALID_REQUEST"})
        pano = f"BENCH{zlib.crc32(q['location'].encode()):08x}"
        return web.json_response({"status": "OK", "pano_id": pano, "location": {"lat": lat, "lng": lng}, "date": "2020-01", "copyright": "bench"})

    async def image(self, request: web.Request) -> web.Response:
        self._count("image")
        await asyncio.sleep(self.latency)
        q = request.query
        if not q.get("key"):
            self.counts["rejected"] += 1
            return web.Response(status=403, text="API key missing.")
        if q.get("size") != f"{STREET_SIZE}x{STREET_SIZE}" or "pano" not in q:
            self.counts["rejected"] += 1
            return web.Response(status=400, text=f"this server has {STREET_SIZE}x{STREET_SIZE} views by pano id only")
        body = self.street[zlib.crc32(f"{q['pano']}|{q.get('heading', '0')}".encode()) % len(self.street)]
        self.bytes_out += len(body)
        return web.Response(body=body, content_type="image/jpeg")

    async def tile(self, request: web.Request) -> web.Response:
        self._count("tile")
        await asyncio.sleep(self.latency)
        m = request.match_info
        body = self.tiles[zlib.crc32(f"{m['z']}/{m['x']}/{m['y']}".encode()) % len(self.tiles)]
        self.bytes_out += len(body)
        return web.Response(body=body, content_type="image/png")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.counts, "bytes_out": self.bytes_out, "pool_street": len(self.street), "pool_tiles": len(self.tiles)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/maps/api/streetview/metadata", self.metadata)
        app.router.add_get("/maps/api/streetview", self.image)
        app.router.add_get("/tiles/{z}/{x}/{y}.png", self.tile)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        return app


async def serve(args) -> None:
    t0 = time.perf_counter()
    street, tiles = render_pools(args.images, args.tiles)
    sizes = sorted(len(b) for b in street)
    print(
        f"pool: {len(street)} street JPEGs (median {sizes[len(sizes) // 2] / 1024:.0f} KiB), {len(tiles)} tiles, "
        f"rendered in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    done = asyncio.Event()
    server = PoolServer(street, tiles, args.latency_ms / 1000.0, args.max_requests, done)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.wait_for(done.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    print(f"server exiting: {json.dumps(server.counts)}", file=sys.stderr, flush=True)
    await runner.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--images", type=int, default=64, help="distinct 640x640 street JPEGs in the pool")
    ap.add_argument("--tiles", type=int, default=64, help="distinct 256-px tiles in the pool")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long")
    ap.add_argument("--max-requests", type=int, default=0, help="exit after this many requests (0 = no bound)")
    ap.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    args = ap.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
