import asyncio
import io

import aiohttp
import pytest
from PIL import Image

from corebuild.errors import StageError
from corebuild.providers.http import HttpClient, HttpConfig
from corebuild.providers.streetview import GoogleStreetView, StreetViewConfig, sign_url


def _client_call(server, fn, cfg=None, key="k-test"):
    async def go():
        async with aiohttp.ClientSession() as s:
            client = GoogleStreetView(HttpClient(s, HttpConfig(attempts=2)), cfg or StreetViewConfig(base_url=server.base_url, width=320, height=320), key)
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
