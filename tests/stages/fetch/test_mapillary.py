import asyncio
import io
import json
import math
from collections import Counter

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from corebuild.aio import serve_app
from corebuild.errors import ConfigError, StageError
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.geo import distance_m
from corebuild.stages.fetch import STREET_PROVIDERS
from corebuild.stages.fetch.http import HttpClient, HttpConfig
from corebuild.stages.fetch.mapillary import Mapillary, MapillaryConfig, bbox_around, month_of_epoch_ms
from corebuild.record import StreetCapture, StreetLocation
from corebuild.synthetic.mapillary import MapillaryApi, compass_angle, creator
from corebuild.synthetic.world import PANO_STEP_M
from tests.stages.fetch.bombs import BIG_BODY_BYTES

SECRET = "MLY|1234567890|not-a-real-token-5f3e"


def _call(base_url, fn, token=SECRET, http=None, **cfg):
    async def go():
        async with aiohttp.ClientSession() as s:
            client = Mapillary(HttpClient(s, http or HttpConfig(attempts=2, backoff_initial_s=0.01)), MapillaryConfig(base_url=base_url, **cfg), token)
            return await fn(client)

    return asyncio.run(go())


def _near_road(world, k=2, off=(5.0, 5.0)):
    road = world.roads[k]
    p = road.line.interpolate(road.line.length / 2)
    return world.to_latlon(p.x + off[0], p.y + off[1])


def _all_panos(world):
    for road in world.roads:
        k = 0
        while k * PANO_STEP_M <= road.line.length + PANO_STEP_M / 2:
            yield world._pano_at(road, k)
            k += 1


# ----- against the synthetic world ------------------------------------------------------------


def test_locate_then_capture_near_a_road(tiny_server, tiny_world):
    lat, lon = _near_road(tiny_world)
    base = tiny_server.base_url + "/mapillary"

    async def both(c):
        loc = await c.locate(lat, lon)
        return loc, await c.capture(loc)

    loc, cap = _call(base, both)
    pano = tiny_world.pano(loc.image_id)
    assert pano is not None and loc.provider == "mapillary"
    # computed_geometry wins over the (offset) raw geometry
    assert (loc.lat, loc.lon) == (pano.lat, pano.lon)
    road = next(r for r in tiny_world.roads if r.id == pano.road_id)
    k = int(loc.image_id.rsplit("K", 1)[1])
    assert loc.heading == pytest.approx(compass_angle(road, k * PANO_STEP_M), abs=1e-3)  # computed, not raw
    assert loc.sequence_id == f"SEQ{tiny_world.seed}R{pano.road_id}" == loc.dedupe_key
    assert loc.capture_date == pano.date and loc.license == "CC-BY-SA-4.0"
    assert loc.copyright == f"Mapillary, CC BY-SA 4.0, by {creator(tiny_world, pano.road_id)['username']}"  # the uploader credited
    # the nearest panorama of the whole world, by brute force
    best = min(round(distance_m(lat, lon, p.lat, p.lon), 2) for p in _all_panos(tiny_world))
    assert loc.distance_m == best <= 50
    assert cap.provider == "mapillary" and cap.pano_id == loc.image_id and cap.sequence_id == loc.sequence_id
    assert cap == StreetCapture.of(loc, cap.views)  # every field the search gave, copyright and date included
    (view,) = cap.views
    assert (view.width, view.height, view.fov, view.pitch, view.image_format) == (1024, 768, 90.0, 0.0, "jpeg")
    assert view.heading == loc.heading
    assert Image.open(io.BytesIO(view.image)).size == (1024, 768)


def test_points_on_one_road_share_a_sequence(tiny_server, tiny_world):
    road = tiny_world.roads[2]
    pts = [road.line.interpolate(road.line.length * f) for f in (0.3, 0.5)]
    base = tiny_server.base_url + "/mapillary"
    locs = [_call(base, lambda c, p=p: c.locate(*tiny_world.to_latlon(p.x + 1, p.y + 1))) for p in pts]
    assert locs[0].image_id != locs[1].image_id
    assert locs[0].dedupe_key == locs[1].dedupe_key == f"SEQ{tiny_world.seed}R{road.id}"


def test_search_returns_exactly_the_panoramas_in_the_bbox(tiny_world):
    api = MapillaryApi(tiny_world)
    for k, radius in ((2, 50.0), (0, 120.0), (len(tiny_world.roads) - 1, 30.0)):
        lat, lon = _near_road(tiny_world, k, off=(17.0, -9.0))
        bb = bbox_around(lat, lon, radius)
        got = [p.id for p, _ in api.panos_in_bbox(*bb)]
        want = {p.id for p in _all_panos(tiny_world) if bb[1] <= p.lat <= bb[3] and bb[0] <= p.lon <= bb[2]}
        assert got and len(got) == len(set(got)) and set(got) == want


def test_no_token_is_unauthorized(tiny_server, tiny_world):
    lat, lon = _near_road(tiny_world)
    with pytest.raises(StageError) as err:
        _call(tiny_server.base_url + "/mapillary", lambda c: c.locate(lat, lon), token="")
    assert err.value.reason == "street.unauthorized"
    assert "MAPILLARY_ACCESS_TOKEN" in str(err.value)


def test_nowhere_is_zero_results(tiny_server):
    with pytest.raises(StageError) as err:
        _call(tiny_server.base_url + "/mapillary", lambda c: c.locate(0.0, 0.0))
    assert err.value.reason == "street.zero_results"


def test_unknown_thumbnail_is_404(tiny_server):
    loc = StreetLocation("mapillary", "SYN999R0K0", 0.0, 0.0, None, 1.0, "x", image_url=f"{tiny_server.base_url}/mapillary/thumb/SYN999R0K0.jpg")
    with pytest.raises(StageError) as err:
        _call(tiny_server.base_url + "/mapillary", lambda c: c.capture(loc))
    assert err.value.reason == "street.http_404"


# ----- against a misbehaving server -----------------------------------------------------------

LAT, LON = 10.0, 20.0


def _image(image_id, north_m=0.0, east_m=0.0, thumb="/thumb/ok.jpg", **extra):
    lat = LAT + north_m / 110574.0
    lon = LON + east_m / (111320.0 * math.cos(math.radians(LAT)))
    doc = {
        "id": image_id,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "captured_at": 1625400000000,  # 2021-07-04 UTC
        "compass_angle": 33.5,
        "sequence": f"seq-{image_id}",
    }
    if thumb:
        doc["thumb_1024_url"] = thumb
    doc.update(extra)
    return doc


class MapillaryFaults:
    """Canned Graph API answers, keyed by the first path segment."""

    def __init__(self):
        self.hits: Counter = Counter()
        self.seen: list[tuple[str, str, str]] = []  # (path, query, Authorization)
        self.url = ""
        self.hostile = ""  # the shared fault server: /image/{kind} serves bombs and endless bodies

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{case}/images", self.images)
        app.router.add_get("/thumb/ok.jpg", self.thumb_ok)
        app.router.add_get("/thumb/truncated.jpg", self.thumb_truncated)
        app.router.add_get("/thumb/missing.jpg", lambda r: web.Response(status=404, text="gone"))
        return app

    def _thumb(self, name):
        return f"{self.url}/thumb/{name}"

    async def images(self, request):
        case = request.match_info["case"]
        self.hits[case] += 1
        self.seen.append((request.path, request.query_string, request.headers.get("Authorization", "")))
        if case == "throttled" and self.hits[case] == 1:
            return web.Response(status=429, headers={"Retry-After": "0"}, text="rate limited")
        if case == "denied":
            return web.json_response({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}, status=401)
        if case == "nodata":
            return web.json_response({"images": []})
        if case == "notjson":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if case == "empty":
            return web.json_response({"data": []})
        if case == "far":  # in the bbox's corner, outside the circle
            return web.json_response({"data": [_image("1", north_m=45, east_m=45, thumb=self._thumb("ok.jpg"))]})
        if case == "nothumb":
            return web.json_response({"data": [_image("1", north_m=3, thumb=None)]})
        if case == "nogeom":
            return web.json_response({"data": [{"id": "1"}, {"id": "2", "geometry": {"type": "LineString", "coordinates": []}}]})
        if case == "tie":  # same spot: the numerically lowest id wins ("9" < "10")
            return web.json_response({"data": [_image("10", north_m=4, thumb=self._thumb("ok.jpg")), _image("9", north_m=4, thumb=self._thumb("ok.jpg"))]})
        thumbs = {"badthumb": "truncated.jpg", "lostthumb": "missing.jpg"}
        thumb = self._thumb(thumbs.get(case, "ok.jpg"))
        if case.startswith("image-"):  # image-bomb, image-endless, ...: a hostile thumbnail
            thumb = f"{self.hostile}/image/{case[len('image-'):]}"
        near = _image("42", north_m=6, thumb=thumb + "?oh=sig&oe=65A0B1C2", computed_compass_angle=None)
        return web.json_response({"data": [_image("7", north_m=30, thumb=self._thumb("ok.jpg")), near]})

    async def thumb_ok(self, request):
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), (10, 120, 200)).save(buf, "JPEG")
        return web.Response(body=buf.getvalue(), content_type="image/jpeg")

    async def thumb_truncated(self, request):
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), (10, 120, 200)).save(buf, "JPEG")
        return web.Response(body=buf.getvalue()[:300], content_type="image/jpeg")


@pytest.fixture(scope="module")
def faults(fault_server):
    srv = MapillaryFaults()
    running = serve_app(srv.app())
    srv.url, srv.hostile = running.url, fault_server.url
    yield srv
    running.stop()


def _reason(faults, case, fn=lambda c: c.locate(LAT, LON), http=None):
    with pytest.raises(StageError) as err:
        _call(f"{faults.url}/{case}", fn, http=http)
    assert SECRET not in str(err.value)
    return err.value.reason


def test_request_shape_and_nearest_pick(faults):
    async def both(c):
        loc = await c.locate(LAT, LON)
        return loc, await c.capture(loc)

    loc, cap = _call(f"{faults.url}/ok", both)
    path, query, auth = faults.seen[-1]
    assert auth == f"OAuth {SECRET}" and "MLY" not in query and "token" not in query
    q = dict(p.split("=", 1) for p in query.split("&"))
    assert q["limit"] == "100" and "thumb_1024_url" in q["fields"].replace("%2C", ",")
    west, south, east, north = (float(v) for v in q["bbox"].replace("%2C", ",").split(","))
    # the bbox edges are radius_m away on the ellipsoid (cos(lat) for longitude)
    for edge in (distance_m(LAT, LON, north, LON), distance_m(LAT, LON, south, LON), distance_m(LAT, LON, LAT, east), distance_m(LAT, LON, LAT, west)):
        assert edge == pytest.approx(50.0, abs=0.05)
    assert loc.image_id == "42" and loc.distance_m == pytest.approx(6.0, abs=0.05)
    assert loc.heading == 33.5  # compass_angle when computed_compass_angle is null
    assert loc.capture_date == "2021-07" and loc.sequence_id == loc.dedupe_key == "seq-42"
    assert cap.views[0].width == 96 and cap.views[0].heading == 33.5 and cap.views[0].image_format == "jpeg"


def test_429_is_retried(faults):
    loc = _call(f"{faults.url}/throttled", lambda c: c.locate(LAT, LON))
    assert loc.image_id == "42" and faults.hits["throttled"] == 2


def test_unauthorized_never_shows_the_token(faults):
    assert _reason(faults, "denied") == "street.unauthorized"


@pytest.mark.parametrize(
    "case, reason",
    [
        ("nodata", "street.bad_metadata"),
        ("notjson", "street.bad_metadata"),
        ("nogeom", "street.bad_metadata"),
        ("empty", "street.zero_results"),
        ("far", "street.zero_results"),
        ("nothumb", "street.no_thumbnail"),
    ],
)
def test_search_failures_become_reasons(faults, case, reason):
    assert _reason(faults, case) == reason


def test_ties_go_to_the_lowest_id(faults):
    assert _call(f"{faults.url}/tie", lambda c: c.locate(LAT, LON)).image_id == "9"


@pytest.mark.parametrize("case, reason", [("lostthumb", "street.http_404"), ("badthumb", "street.bad_image")])
def test_thumbnail_failures_become_reasons(faults, case, reason):
    async def both(c):
        return await c.capture(await c.locate(LAT, LON))

    assert _reason(faults, case, both) == reason


async def _locate_capture(c):
    return await c.capture(await c.locate(LAT, LON))


@pytest.mark.parametrize(
    "kind, reason, words",
    [
        ("bomb", "street.image_too_large", "Mapillary thumbnail of image 42"),  # 20000x20000 PNG in ~48 KB
        ("pixels", "street.image_too_large", "9000x9000"),
        ("truncated", "street.bad_image", "Mapillary thumbnail of image 42 does not decode"),
        ("big", "street.image_too_large", "declares"),
        ("endless", "street.image_too_large", "cut off after"),
    ],
)
def test_hostile_thumbnails_fail_with_their_reason(faults, kind, reason, words):
    http = HttpConfig(attempts=2, backoff_initial_s=0.01, max_image_bytes=BIG_BODY_BYTES)
    with pytest.raises(StageError) as err:
        _call(f"{faults.url}/image-{kind}", _locate_capture, http=http)
    assert err.value.reason == reason and words in str(err.value) and "\n" not in str(err.value)
    assert SECRET not in str(err.value)


def test_thumbnail_limits_are_configurable(faults):
    cap = _call(f"{faults.url}/image-ok", _locate_capture, http=HttpConfig(attempts=1))
    assert (cap.views[0].width, cap.views[0].height) == (96, 64)
    with pytest.raises(StageError) as err:
        _call(f"{faults.url}/image-ok", _locate_capture, http=HttpConfig(attempts=1, max_image_pixels=96 * 64 - 1))
    assert err.value.reason == "street.image_too_large" and "96x64" in str(err.value)


def test_captured_at_is_a_utc_month():
    assert month_of_epoch_ms(1625400000000) == "2021-07"
    assert month_of_epoch_ms(1640995199999) == "2021-12"  # 23:59:59.999 on Dec 31, UTC
    assert month_of_epoch_ms(None) is None and month_of_epoch_ms("soon") is None


def test_registry_reads_the_token_from_the_environment(monkeypatch):
    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN_FILE", raising=False)
    with pytest.raises(ConfigError, match="MAPILLARY_ACCESS_TOKEN"):
        STREET_PROVIDERS.load("mapillary")(FetchConfig(street_provider="mapillary"), None)
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", SECRET)
    provider = STREET_PROVIDERS.load("mapillary")(FetchConfig(street_provider="mapillary"), None)
    assert isinstance(provider, Mapillary) and provider.name == "mapillary"
    assert SECRET not in json.dumps(repr(provider.cfg))
