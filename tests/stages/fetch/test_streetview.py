import asyncio
import io

import aiohttp
import pytest
from PIL import Image

from corebuild.errors import StageError
from corebuild.stages.fetch.fetcher import FetchConfig, Fetcher
from corebuild.stages.fetch.aerial import AerialConfig
from corebuild.stages.fetch.http import HttpClient, HttpConfig
from corebuild.stages.fetch.streetview import GoogleStreetView, StreetViewConfig, sign_url
from corebuild.record import Record, StreetCapture
from tests.stages.fetch.bombs import BIG_BODY_BYTES, IMAGE_KINDS


def _client_call(server, fn, cfg=None, key="k-test", http=None):
    async def go():
        async with aiohttp.ClientSession() as s:
            client = GoogleStreetView(HttpClient(s, http or HttpConfig(attempts=2)), cfg or StreetViewConfig(base_url=server.base_url, width=320, height=320), key)
            return await fn(client)

    return asyncio.run(go())


async def _locate_capture(client, lat, lon):
    return await client.capture(await client.locate(lat, lon))


def _on_road(world, k=2):
    road = world.roads[k]
    p = road.line.interpolate(road.line.length / 2)
    return world.to_latlon(p.x + 5, p.y + 5)


async def _locate_and_capture(client, lat, lon):
    loc = await client.locate(lat, lon)
    return loc, await client.capture(loc)


def test_capture_gets_metadata_then_four_headings(tiny_server, tiny_world):
    lat, lon = _on_road(tiny_world)
    loc, cap = _client_call(tiny_server, lambda c: _locate_and_capture(c, lat, lon))
    assert cap == StreetCapture.of(loc, cap.views) and cap.copyright == loc.copyright is not None  # all the metadata said
    assert cap.provider == "google_streetview" and cap.pano_id.startswith("SYN")
    assert [v.heading for v in cap.views] == [0, 90, 180, 270]
    assert all(Image.open(io.BytesIO(v.image)).size == (320, 320) for v in cap.views)
    assert 0 <= cap.distance_m <= 50 and len(cap.capture_date) == 7
    pano = tiny_world.pano(cap.pano_id)
    assert abs(pano.lat - cap.lat) < 1e-9 and abs(pano.lon - cap.lon) < 1e-9


def test_zero_results_and_denied_become_reasons(tiny_server):
    with pytest.raises(StageError) as err:
        _client_call(tiny_server, lambda c: c.locate(0.0, 0.0))
    assert err.value.reason == "street.zero_results"
    with pytest.raises(StageError) as err:
        _client_call(tiny_server, lambda c: c.locate(0.0, 0.0), key="")
    assert err.value.reason == "street.request_denied"


def test_url_signature_matches_googles_published_example():
    # Example from Google's "Digital signature" documentation.
    path = "/maps/api/geocode/json?address=New+York&client=clientID"
    assert sign_url(path, "vNIXE0xscrmjlyV-12Nj_BvUPaw=") == "chaRF2hTJKOScPr-RQCEhZbSzIE="


@pytest.mark.parametrize(
    "status, reason",
    [
        ("ZERO_RESULTS", "street.zero_results"),
        ("NOT_FOUND", "street.not_found"),
        ("OVER_QUERY_LIMIT", "street.over_query_limit"),
        ("REQUEST_DENIED", "street.request_denied"),
        ("INVALID_REQUEST", "street.invalid_request"),
        ("UNKNOWN_ERROR", "street.unknown_error"),
        ("SOMETHING_NEW", "street.unexpected_status"),
    ],
)
def test_every_documented_metadata_status_becomes_its_reason(fault_server, status, reason):
    class Server:
        base_url = f"{fault_server.url}/sv/{status}"

    with pytest.raises(StageError) as err:
        _client_call(Server, lambda c: c.locate(47.0, 8.0), key="AIzaSECRETKEY")
    assert err.value.reason == reason and status in str(err.value) and "AIzaSECRETKEY" not in str(err.value)


# ----- decode limits: bombs, truncated and oversized bodies ---------------------------------

SMALL_BODIES = HttpConfig(attempts=2, backoff_initial_s=0.01, max_image_bytes=BIG_BODY_BYTES)


def _svimg(fault_server):
    class Server:
        base_url = f"{fault_server.url}/svimg"

    return Server


def _at(kind):
    """(lat, lon) where the fault server's Street View answers with images of this kind."""
    return float(IMAGE_KINDS.index(kind) + 1), 8.0


@pytest.mark.parametrize(
    "kind, reason, words",
    [
        ("bomb", "street.image_too_large", "decompression-bomb guard"),  # 20000x20000 PNG, ~48 KB
        ("pixels", "street.image_too_large", "9000x9000"),  # 81 MP PNG, ~10 KB
        ("truncated", "street.bad_image", "does not decode"),
        ("big", "street.image_too_large", "declares"),  # Content-Length past max_image_bytes
        ("endless", "street.image_too_large", "cut off after"),  # chunked, never ends
    ],
)
def test_hostile_street_view_images_fail_with_their_reason(fault_server, kind, reason, words):
    with pytest.raises(StageError) as err:
        _client_call(_svimg(fault_server), lambda c: _locate_capture(c, *_at(kind)), http=SMALL_BODIES, key="AIzaSECRETKEY")
    assert err.value.reason == reason and words in str(err.value)
    assert "Street View image (heading" in str(err.value) or "image from" in str(err.value)
    assert "AIzaSECRETKEY" not in str(err.value) and "\n" not in str(err.value)


def test_street_view_pixel_limit_is_configurable(fault_server):
    cap = _client_call(_svimg(fault_server), lambda c: _locate_capture(c, *_at("ok")), http=SMALL_BODIES)
    assert [Image.open(io.BytesIO(v.image)).size for v in cap.views] == [(320, 320)] * 4
    tight = HttpConfig(attempts=1, max_image_pixels=320 * 320 - 1)
    with pytest.raises(StageError) as err:
        _client_call(_svimg(fault_server), lambda c: _locate_capture(c, *_at("ok")), http=tight)
    assert err.value.reason == "street.image_too_large" and "fetch.http.max_image_pixels" in str(err.value)


def test_bombs_become_failure_rows_and_the_fetch_goes_on(fault_server, monkeypatch):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "AIzaSECRETKEY")
    cfg = FetchConfig(
        streetview=StreetViewConfig(base_url=f"{fault_server.url}/svimg", width=320, height=320),
        aerial=AerialConfig(url_template=f"{fault_server.url}/count/{{z}}/{{x}}/{{y}}.png"),
        http=SMALL_BODIES,
    )
    records = [Record(f"t-s0-{i:07d}", "t", 0, i, *_at(kind)) for i, kind in enumerate(IMAGE_KINDS)]
    with Fetcher(cfg) as f:
        out = {IMAGE_KINDS[r.point_index]: r for r in f.fetch(records)}
    ok = out.pop("ok")
    assert not ok.failed and len(ok.street.views) == 4 and ok.aerial.width == 512
    assert {k: r.failure_reason for k, r in out.items()} == {
        "bomb": "street.image_too_large",
        "pixels": "street.image_too_large",
        "truncated": "street.bad_image",
        "big": "street.image_too_large",
        "endless": "street.image_too_large",
    }
    for r in out.values():
        assert r.failed and r.street is None and r.error and "Traceback" not in r.error and "\n" not in r.error
        assert "AIzaSECRETKEY" not in r.error


# ----- quota answers inside a 200 --------------------------------------------------------------

@pytest.fixture(scope="module")
def quota_server():
    """Street View metadata as Google documents it: quota trouble is HTTP 200 with a status. The
    first two requests for each location answer a retryable status (OVER_QUERY_LIMIT at longitude
    1, UNKNOWN_ERROR at 2), then OK. Counts requests per location."""
    from collections import Counter

    from aiohttp import web

    from corebuild.aio import serve_app

    hits: Counter = Counter()

    async def metadata(request):
        where = request.query["location"]
        hits[where] += 1
        lat, lon = (float(v) for v in where.split(","))
        if hits[where] <= 2:
            if round(lon) == 1:
                return web.json_response({"error_message": "You have exceeded your rate-limit for this API.", "status": "OVER_QUERY_LIMIT"})
            return web.json_response({"status": "UNKNOWN_ERROR"})
        return web.json_response({"copyright": "© Google", "date": "2024-05", "location": {"lat": lat, "lng": lon}, "pano_id": f"P{lat:g}", "status": "OK"})

    app = web.Application()
    app.router.add_get("/maps/api/streetview/metadata", metadata)
    running = serve_app(app)
    running.hits = hits
    yield running
    running.stop()


@pytest.mark.parametrize("lon, status, reason", [(1.0, "OVER_QUERY_LIMIT", "street.over_query_limit"), (2.0, "UNKNOWN_ERROR", "street.unknown_error")])
def test_quota_statuses_are_retried_within_the_request(quota_server, lon, status, reason):
    quick = dict(backoff_initial_s=0.01, backoff_max_s=0.05)
    loc = _client_call(quota_server, lambda c: c.locate(10.0, lon), http=HttpConfig(attempts=4, **quick))
    assert loc.image_id == "P10" and quota_server.hits[f"10.0000000,{lon:.7f}"] == 3  # two answers of `status`, then OK

    with pytest.raises(StageError) as err:
        _client_call(quota_server, lambda c: c.locate(11.0, lon), http=HttpConfig(attempts=2, **quick), key="AIzaSECRETKEY")
    assert err.value.reason == reason and status in str(err.value) and "2 attempts" in str(err.value)
    assert quota_server.hits[f"11.0000000,{lon:.7f}"] == 2 and "AIzaSECRETKEY" not in str(err.value)


def test_quota_answers_never_reach_a_cache(quota_server):
    """Even through a cacheable GET (metadata itself is never cached), only the OK answer is stored."""
    from corebuild.stages.fetch.streetview import metadata_validator

    class Cache(dict):
        async def get(self, key):
            return dict.get(self, key)

        async def put(self, key, body):
            self[key] = body

    cache = Cache()

    async def go(attempts):
        async with aiohttp.ClientSession() as s:
            client = HttpClient(s, HttpConfig(attempts=attempts, backoff_initial_s=0.01, backoff_max_s=0.05), cache=cache)
            url = f"{quota_server.base_url}/maps/api/streetview/metadata"
            return await client.get(url, {"location": "12.0000000,1.0000000"}, "street", validate=metadata_validator(50))

    with pytest.raises(StageError):
        asyncio.run(go(1))
    assert not cache
    assert asyncio.run(go(2)).value["status"] == "OK" and [b'"OK"' in body for body in cache.values()] == [True]


# ----- the grey "Sorry, we have no imagery here" picture -------------------------------------


def _no_imagery_jpeg(width: int, height: int) -> bytes:
    """Google's generic grey picture: a light grey field with "Sorry, we have no imagery here."
    in darker grey across the middle, at the size asked for."""
    from PIL import ImageDraw

    img = Image.new("RGB", (width, height), (228, 227, 223))
    draw = ImageDraw.Draw(img)
    text = "Sorry, we have no imagery here."
    x0, y0, x1, y1 = draw.textbbox((0, 0), text)
    draw.text(((width - (x1 - x0)) / 2, (height - (y1 - y0)) / 2), text, fill=(130, 130, 130))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def no_imagery_server():
    """The Street View Static API as Google documents it, where one heading of the panorama
    has no imagery. `return_error_code=true` turns that answer into a 404; without it the API
    answers HTTP 200 with the grey picture. Under /honours the server does what the documentation
    says; under /grey it sends the grey picture whatever the request said (what the API sends
    without the parameter, and what arrives through anything that drops it)."""
    from aiohttp import web

    from corebuild.aio import serve_app
    from tests.stages.fetch.bombs import noise_jpeg

    seen: list[dict] = []

    async def metadata(request):
        lat, lon = (float(v) for v in request.query["location"].split(","))
        return web.json_response({"status": "OK", "pano_id": "PANO-NO-IMAGERY-AT-180", "location": {"lat": lat, "lng": lon}, "date": "2019-04", "copyright": "© Google"})

    async def image(request):
        q = dict(request.query)
        seen.append(q)
        w, h = (int(v) for v in q["size"].split("x"))
        heading = float(q["heading"])
        if heading == 180 and q["pano"] == "PANO-NO-IMAGERY-AT-180":
            # Answered once the other headings' requests have arrived (or after 2 s): the client
            # gives up on the panorama at this answer, and a request still in flight would then
            # never reach the server, which made "every heading was asked" a race.
            for _ in range(200):
                if len({r["heading"] for r in seen if r["pano"] == q["pano"]}) >= 4:
                    break
                await asyncio.sleep(0.01)
            if request.match_info["mode"] == "honours" and q.get("return_error_code") == "true":
                return web.Response(status=404, text="no imagery")
            return web.Response(body=_no_imagery_jpeg(w, h), content_type="image/jpeg")
        return web.Response(body=noise_jpeg(w, h, seed=int(heading)), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{mode}/maps/api/streetview/metadata", metadata)
    app.router.add_get("/{mode}/maps/api/streetview", image)
    running = serve_app(app)
    running.seen = seen
    yield running
    running.stop()


def _server_at(base):
    class Server:
        base_url = base

    return Server


def test_the_grey_no_imagery_picture_fails_the_capture_as_no_imagery(no_imagery_server):
    from corebuild.stages.fetch.blank import is_mostly_flat

    assert is_mostly_flat(Image.open(io.BytesIO(_no_imagery_jpeg(320, 320))))  # the server's picture is the kind the check is for
    no_imagery_server.seen.clear()
    with pytest.raises(StageError) as err:
        _client_call(_server_at(f"{no_imagery_server.url}/grey"), lambda c: _locate_capture(c, 47.0, 8.0))
    assert err.value.reason == "street.no_imagery" and "heading 180" in str(err.value)
    assert {q["heading"] for q in no_imagery_server.seen} == {"0", "90", "180", "270"}
    assert all(q["return_error_code"] == "true" for q in no_imagery_server.seen)  # the client asks for the 404 too


def test_without_the_grey_heading_the_same_server_captures(no_imagery_server):
    cfg = StreetViewConfig(base_url=f"{no_imagery_server.url}/grey", width=320, height=320, headings=(0.0, 90.0, 270.0))
    cap = _client_call(None, lambda c: _locate_capture(c, 47.0, 8.0), cfg=cfg)
    assert [v.heading for v in cap.views] == [0.0, 90.0, 270.0]  # noise views are not mistaken for the placeholder


def test_return_error_code_gets_the_documented_404(no_imagery_server):
    """Where the API honours return_error_code the grey heading is a 404: a failure row too."""
    with pytest.raises(StageError) as err:
        _client_call(_server_at(f"{no_imagery_server.url}/honours"), lambda c: _locate_capture(c, 47.0, 8.0))
    assert err.value.reason == "street.http_404" and "heading 180" in str(err.value)


def test_no_imagery_rows_in_a_fetch(no_imagery_server, monkeypatch):
    """Through the Fetcher: the point whose panorama has the grey heading is a failure row."""
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "AIzaSECRETKEY")
    cfg = FetchConfig(
        streetview=StreetViewConfig(base_url=f"{no_imagery_server.url}/grey", width=320, height=320),
        aerial=AerialConfig(url_template=f"{no_imagery_server.url}/nothing/{{z}}/{{x}}/{{y}}.png"),
        http=HttpConfig(attempts=1),
    )
    with Fetcher(cfg) as f:
        (rec,) = f.fetch([Record("t-s0-0000000", "t", 0, 0, 47.0, 8.0)])
    assert rec.failed and rec.failure_reason == "street.no_imagery" and rec.street is None
