"""A loopback server that misbehaves on purpose: 5xx, 429 with Retry-After, hangs, bad bodies,
decompression bombs and endless bodies."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter

import pytest
from aiohttp import web
from PIL import Image

from corebuild.aio import serve_app

from tests.stages.fetch.bombs import IMAGE_KINDS, image_body, noise_jpeg, noise_png


class FaultServer:
    def __init__(self):
        self.hits: Counter = Counter()
        self.seen_queries: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/flaky/{name}/{fails}", self.flaky)
        app.router.add_get("/retry-after/{name}", self.retry_after)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/hang", self.hang)
        app.router.add_get("/truncated.jpg", self.truncated)
        app.router.add_get("/blank/{z}/{x}/{y}.png", self.blank_tile)
        app.router.add_get("/sv/{status}/maps/api/streetview/metadata", self.sv_status)
        app.router.add_post("/flaky-post/{name}/{fails}", self.flaky_post)
        app.router.add_get("/flaky-tile/{code}/{z}/{x}/{y}.png", self.flaky_tile)
        app.router.add_get("/truncated-tile/{z}/{x}/{y}.png", self.truncated_tile)
        app.router.add_get("/count/{z}/{x}/{y}.png", self.counted_tile)
        app.router.add_get("/image/{kind}", self.image)
        app.router.add_get("/image-tile/{kind}/{z}/{x}/{y}.png", self.image_tile)
        app.router.add_get("/svimg/maps/api/streetview/metadata", self.svimg_metadata)
        app.router.add_get("/svimg/maps/api/streetview", self.svimg_view)
        return app

    async def _image(self, request, kind: str, ok: bytes, content_type: str):
        self.hits[f"image:{kind}"] += 1
        if kind != "endless":
            return web.Response(body=image_body(kind, ok), content_type=content_type)
        resp = web.StreamResponse(headers={"Content-Type": content_type})  # chunked: no Content-Length
        await resp.prepare(request)
        try:
            for _ in range(3200):  # 200 MB at most, should nobody hang up
                await resp.write(b"\xff" * 65536)
        except (ConnectionError, asyncio.CancelledError):
            self.hits["endless:hung_up"] += 1
            raise
        return resp

    async def image(self, request):
        return await self._image(request, request.match_info["kind"], noise_jpeg(96, 64), "image/jpeg")

    async def image_tile(self, request):
        x = int(request.match_info["x"])
        return await self._image(request, request.match_info["kind"], noise_png(256, 256, seed=x), "image/png")

    async def svimg_metadata(self, request):
        """Street View metadata: OK everywhere; the panorama id is the image kind picked by the
        latitude (IMAGE_KINDS[round(lat) - 1]), so one fetch can mix good and hostile images."""
        lat, lon = (float(v) for v in request.query["location"].split(","))
        kind = IMAGE_KINDS[round(lat) - 1]
        return web.json_response({"status": "OK", "pano_id": kind, "location": {"lat": lat, "lng": lon}, "date": "2024-05"})

    async def svimg_view(self, request):
        w, h = (int(v) for v in request.query["size"].split("x"))
        heading = int(float(request.query["heading"]))
        return await self._image(request, request.query["pano"], noise_jpeg(w, h, seed=heading), "image/jpeg")

    async def flaky_post(self, request):
        """Fails `fails` times with 503, then echoes the JSON body."""
        name, fails = request.match_info["name"], int(request.match_info["fails"])
        self.hits[f"post:{name}"] += 1
        if self.hits[f"post:{name}"] <= fails:
            return web.Response(status=503, text="busy")
        return web.Response(body=json.dumps(await request.json()).encode(), content_type="application/json")

    async def sv_status(self, request):
        """Street View metadata answering with a given documented status."""
        status = request.match_info["status"]
        body = {"status": status}
        if status in ("REQUEST_DENIED", "OVER_QUERY_LIMIT"):
            body["error_message"] = "The provided API key is invalid."
        return web.json_response(body)

    async def flaky_tile(self, request):
        """Each tile answers `code` once (429 with Retry-After, or a 5xx), then the tile."""
        key = "tile:" + request.path
        self.hits[key] += 1
        if self.hits[key] == 1:
            code = int(request.match_info["code"])
            return web.Response(status=code, headers={"Retry-After": "0"} if code == 429 else {}, text="busy")
        return await self.counted_tile(request)

    async def truncated_tile(self, request):
        buf = io.BytesIO()
        Image.new("RGB", (256, 256), (10, 120, 10)).save(buf, "PNG")
        return web.Response(body=buf.getvalue()[:200], content_type="image/png")

    async def blank_tile(self, request):
        buf = io.BytesIO()
        Image.new("RGB", (256, 256), (204, 204, 204)).save(buf, "PNG")  # "no imagery" tile
        return web.Response(body=buf.getvalue(), content_type="image/png")

    async def counted_tile(self, request):
        self.hits["count"] += 1
        buf = io.BytesIO()
        rng = __import__("numpy").random.default_rng(int(request.match_info["x"]))
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype="uint8")).save(buf, "PNG")
        return web.Response(body=buf.getvalue(), content_type="image/png")

    async def flaky(self, request):
        name, fails = request.match_info["name"], int(request.match_info["fails"])
        self.hits[name] += 1
        self.seen_queries.append(request.query_string)
        if self.hits[name] <= fails:
            return web.Response(status=503, text="try later")
        return web.Response(text="ok")

    async def retry_after(self, request):
        name = request.match_info["name"]
        self.hits[name] += 1
        if self.hits[name] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        return web.Response(text="ok")

    async def status(self, request):
        self.hits["status"] += 1
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def hang(self, request):
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def truncated(self, request):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
        return web.Response(body=buf.getvalue()[:300], content_type="image/jpeg")


@pytest.fixture(scope="module")
def fault_server():
    srv = FaultServer()
    running = serve_app(srv.app())
    srv.url = running.url
    yield srv
    running.stop()
