import asyncio
import time

import aiohttp
from aiolimiter import AsyncLimiter

from corebuild.providers.http import HttpClient, HttpConfig


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
            client = HttpClient(s, HttpConfig(), AsyncLimiter(10, 1.0))
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
