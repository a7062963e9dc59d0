import asyncio
import time

import aiohttp
import pytest

from corebuild.stages.fetch.fetcher import Fetcher
from corebuild.stages.fetch.http import HttpClient, HttpConfig, rate_limiter
from tests.stages.fetch.apis import KEY_ENV, fetch_config, points, serving


class DictCache:
    def __init__(self):
        self.store = {}

    async def get(self, key):
        return self.store.get(key)

    async def put(self, key, body):
        self.store[key] = body


def test_token_bucket_paces_requests(fault_server):
    async def go():
        async with aiohttp.ClientSession() as s:
            client = HttpClient(s, HttpConfig(), rate_limiter(10.0))
            t0 = time.monotonic()
            await asyncio.gather(*(client.get(f"{fault_server.url}/count/1/{i}/0.png", {}, "aerial", cacheable=False) for i in range(25)))
            return time.monotonic() - t0

    elapsed = asyncio.run(go())
    assert 1.2 <= elapsed < 5.0  # 10 at once, then 10/s: 15 more need ~1.5 s


def test_cache_hook_serves_repeats_without_network(fault_server):
    cache = DictCache()

    async def go():
        async with aiohttp.ClientSession() as s:
            a = HttpClient(s, HttpConfig(), cache=cache)
            b = HttpClient(s, HttpConfig(), cache=cache)
            first = await a.get(f"{fault_server.url}/count/2/77/0.png", {"key": "SECRET-1"}, "aerial")
            again = await b.get(f"{fault_server.url}/count/2/77/0.png", {"key": "SECRET-1"}, "aerial")
            return a, b, first, again

    before = fault_server.hits["count"]
    a, b, first, again = asyncio.run(go())
    assert first.body == again.body and again.cached and (a.requests, b.requests, b.cache_hits) == (1, 0, 1)
    assert fault_server.hits["count"] == before + 1
    assert all("SECRET-1" not in k for k in cache.store)


RATE, N = 10.0, 20  # a burst of 10, then 10/s: 20 requests take >= 1 s; unlimited, a few ms


def _span(times: list[float]) -> float:
    return max(times) - min(times)


PACED = HttpConfig(rate_per_s=RATE, attempts=1)


@pytest.mark.parametrize(
    "street_provider, unpaced_stage, routes",
    [
        ("google_streetview", None, ("sv_metadata", "sv_image")),
        ("mapillary", None, ("mly_search", "mly_thumb")),
        # A crop is asked for once its street images are in, so paced street requests would pace
        # the tiles too: here street goes unlimited (a per-stage setting) and the tiles show
        # their own buckets.
        ("google_streetview", "street", ("aerial", "map")),
    ],
)
def test_the_rate_limit_reaches_every_provider_through_the_fetcher(monkeypatch, street_provider, unpaced_stage, routes):
    """Fetcher -> HttpClient -> every request of every provider takes a token from its
    provider's bucket: the server sees each provider's requests spread at the configured rate."""
    monkeypatch.setenv(KEY_ENV, "k-test")
    by_stage = ((unpaced_stage, HttpConfig(attempts=1)),) if unpaced_stage else ()
    with serving() as api:
        with Fetcher(fetch_config(api.url, street_provider, PACED, http_by_stage=by_stage)) as f:
            out = f.fetch(points(N))
    assert [r.failure_reason for r in out] == [None] * N
    assert {route: len(api.times(route)) for route in routes} == dict.fromkeys(routes, N)
    # locate and capture are separate phases, so every route starts with a full bucket at worst:
    # (N - burst) / rate = 1 s, with room for timer slack (unlimited, they take < 0.45 s here).
    spans = {route: round(_span(api.times(route)), 2) for route in routes}
    unpaced = {route: span for route, span in spans.items() if span < 0.7 * (N - RATE) / RATE}
    assert not unpaced, f"{N} requests within these seconds, not paced at {RATE:g}/s: {unpaced} (all: {spans})"


def test_a_rate_below_one_per_second_works(monkeypatch):
    """--rate 0.2: one request every 5 s (AsyncLimiter(0.2, 1.0) would refuse every acquire)."""
    monkeypatch.setenv(KEY_ENV, "k-test")
    with serving() as api:
        with Fetcher(fetch_config(api.url, http=HttpConfig(rate_per_s=0.2))) as f:
            t0 = time.monotonic()
            out = f.locate(points(1))  # the first token is there at once
            limiter = f.street.http.limiter
    assert (out[0].failure_reason, out[0].error) == (None, None) and time.monotonic() - t0 < 2
    assert (limiter.max_rate, limiter.time_period) == (1, 5.0)  # one token, refilled every 5 s
    assert rate_limiter(0) is None and (rate_limiter(2.5).max_rate, rate_limiter(2.5).time_period) == (2.5, 1.0)
