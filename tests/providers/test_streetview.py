import asyncio
import io

import aiohttp
import pytest
from PIL import Image

from corebuild.errors import StageError
from corebuild.fetch import FetchConfig, Fetcher
from corebuild.providers.aerial import AerialConfig
from corebuild.providers.http import HttpClient, HttpConfig
from corebuild.providers.streetview import GoogleStreetView, StreetViewConfig, sign_url
from corebuild.record import Record
from tests.providers.bombs import BIG_BODY_BYTES, IMAGE_KINDS


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


def test_capture_gets_metadata_then_four_headings(tiny_server, tiny_world):
    lat, lon = _on_road(tiny_world)
    cap = _client_call(tiny_server, lambda c: _locate_capture(c, lat, lon))
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
