"""A loopback server speaking every HTTP provider's documented wire format (Street View metadata
and images, Mapillary Graph API search and CDN thumbnails, XYZ tiles for the aerial and the map
modalities), noting when each request arrived: for tests of what reaches the network."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Optional

import mercantile
from aiohttp import web

from corebuild.aio import serve_app
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.stages.fetch.aerial import AerialConfig
from corebuild.stages.fetch.http import HttpConfig
from corebuild.stages.fetch.mapillary import MapillaryConfig
from corebuild.stages.fetch.streetview import StreetViewConfig
from corebuild.record import Record
from tests.stages.fetch.bombs import noise_jpeg, noise_png

KEY_ENV = "COREBUILD_TEST_PROVIDER_KEY"
MLY_CREATOR = "alice_maps"  # the uploader every Mapillary image of this server has
ZOOM = 17


class ProviderApis:
    """`status` other than 200: every route answers it, with a JSON error body."""

    def __init__(self, status: int = 200):
        self.status = status
        self.log: list[tuple[float, str]] = []  # (time.monotonic() on arrival, route)
        self.hits: Counter = Counter()  # path -> requests
        self._jpeg: dict[tuple[int, int], bytes] = {}
        self._tile = noise_png(256, 256, seed=1)
        self.url = ""

    def times(self, route: str) -> list[float]:
        return [t for t, r in self.log if r == route]

    def _note(self, request: web.Request, route: str) -> Optional[web.Response]:
        self.log.append((time.monotonic(), route))
        self.hits[request.path] += 1
        if self.status == 200:
            return None
        error = {"error": {"code": self.status, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}
        return web.json_response(error, status=self.status)

    def _image(self, w: int, h: int) -> web.Response:
        if (w, h) not in self._jpeg:
            self._jpeg[(w, h)] = noise_jpeg(w, h)
        return web.Response(body=self._jpeg[(w, h)], content_type="image/jpeg")

    async def sv_metadata(self, request: web.Request) -> web.Response:
        if (err := self._note(request, "sv_metadata")) is not None:
            return err
        lat, lon = (float(v) for v in request.query["location"].split(","))
        return web.json_response(
            {"copyright": "© Google", "date": "2024-05", "location": {"lat": lat, "lng": lon}, "pano_id": f"PANO{lat:.6f}_{lon:.6f}", "status": "OK"}
        )

    async def sv_image(self, request: web.Request) -> web.Response:
        if (err := self._note(request, "sv_image")) is not None:
            return err
        w, h = (int(v) for v in request.query["size"].split("x"))
        return self._image(w, h)

    async def mly_search(self, request: web.Request) -> web.Response:
        if (err := self._note(request, "mly_search")) is not None:
            return err
        w, s, e, n = (float(v) for v in request.query["bbox"].split(","))
        lat, lon = (s + n) / 2, (w + e) / 2
        image_id = str(abs(hash((round(lat, 6), round(lon, 6)))) % 10**15)
        base = f"{request.scheme}://{request.host}"
        item = {
            "id": image_id,
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "compass_angle": 90.0,
            "captured_at": 1714521600000,
            "sequence": f"seq{image_id}",
            "thumb_1024_url": f"{base}/mapillary-cdn/{image_id}.jpg?stp=dst-jpg&_nc_oh=signed",
        }
        if "creator" in request.query.get("fields", "").split(","):  # as the Graph API: only when asked for
            item["creator"] = {"username": MLY_CREATOR, "id": "102030405060"}
        return web.json_response({"data": [item]})

    async def mly_thumb(self, request: web.Request) -> web.Response:
        return self._note(request, "mly_thumb") or self._image(128, 96)

    async def tile(self, request: web.Request) -> web.Response:
        route = request.match_info["modality"]
        return self._note(request, route) or web.Response(body=self._tile, content_type="image/png")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/maps/api/streetview/metadata", self.sv_metadata)
        app.router.add_get("/maps/api/streetview", self.sv_image)
        app.router.add_get("/mapillary/images", self.mly_search)
        app.router.add_get("/mapillary-cdn/{name}", self.mly_thumb)
        app.router.add_get("/{modality:aerial|map}/{z}/{x}/{y}.png", self.tile)
        return app


@contextmanager
def serving(status: int = 200) -> Iterator[ProviderApis]:
    apis = ProviderApis(status)
    running = serve_app(apis.app())
    apis.url = running.url
    try:
        yield apis
    finally:
        running.stop()


def fetch_config(url: str, street_provider: str = "google_streetview", http: Optional[HttpConfig] = None, **extra) -> FetchConfig:
    """Every HTTP provider pointed at `url` (keys from KEY_ENV): one view per point, and aerial
    and map crops that fit in one tile each at points from `points`."""
    tiles = dict(zoom=ZOOM, size=128, attribution="test")
    return FetchConfig(
        street_provider=street_provider,
        streetview=StreetViewConfig(base_url=url, api_key_env=KEY_ENV, headings=(0.0,), width=64, height=64),
        mapillary=MapillaryConfig(base_url=f"{url}/mapillary", token_env=KEY_ENV),
        aerial=AerialConfig(url_template=f"{url}/aerial/{{z}}/{{x}}/{{y}}.png", provider_name="test_aerial", **tiles),
        map=AerialConfig(url_template=f"{url}/map/{{z}}/{{x}}/{{y}}.png", image_format="png", provider_name="test_map", **tiles),
        http=http or HttpConfig(),
        **extra,
    )


def points(n: int) -> list[Record]:
    """`n` records at the centres of neighbouring zoom-17 tiles (~300 m apart: no two share a
    panorama, and a 128 px crop around each needs exactly one tile)."""
    x0, y0 = mercantile.tile(8.54, 47.37, ZOOM)[:2]
    out = []
    for i in range(n):
        b = mercantile.bounds(x0 + i, y0, ZOOM)
        lat, lon = (b.south + b.north) / 2, (b.west + b.east) / 2
        out.append(Record(f"apis-s0-{i:07d}", "apis", 0, i, lat, lon))
    return out
