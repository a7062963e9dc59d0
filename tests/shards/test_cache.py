"""ContentCache over local and gs:// storage, and as HttpClient's response cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import Counter
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from corebuild.aio import serve_app
from corebuild.shards.cache import ContentCache, blob_name, open_cache, ref_name
from corebuild.stages.fetch.http import HttpClient, HttpConfig, redact_url
from corebuild.shards.storage import GCSStorage, LocalStorage, open_storage


@pytest.fixture(params=["local", "gcs"])
def cache(request, tmp_path) -> ContentCache:
    if request.param == "local":
        return ContentCache(open_storage(str(tmp_path / "cache")))
    emulator = request.getfixturevalue("gcs_emulator")
    return ContentCache(open_storage(f"gs://{emulator['bucket']}/cache-{uuid.uuid4().hex[:12]}"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_miss_then_hit(cache):
    key = "https://tiles.example/a.png?z=3&key=REDACTED"
    assert cache.get_sync(key) is None
    assert (cache.hits, cache.misses, cache.writes) == (0, 1, 0)
    cache.put_sync(key, b"\x89PNG body")
    assert cache.get_sync(key) == b"\x89PNG body"
    assert (cache.hits, cache.misses, cache.writes) == (1, 1, 1)
    h = sha(b"\x89PNG body")
    assert cache.storage.list() == sorted([f"blobs/{h[:2]}/{h}", ref_name(key)])
    assert cache.storage.read(ref_name(key)) == h.encode()


def test_async_interface(cache):
    async def go():
        assert await cache.get("k") is None
        await cache.put("k", b"body")
        return await cache.get("k")

    assert asyncio.run(go()) == b"body"
    assert (cache.hits, cache.misses, cache.writes) == (1, 1, 1)


def test_identical_bodies_share_one_blob(cache):
    cache.put_sync("key-1", b"same bytes")
    cache.put_sync("key-2", b"same bytes")
    assert cache.storage.list("blobs/") == [blob_name(sha(b"same bytes"))]
    assert len(cache.storage.list("refs/")) == 2
    assert cache.writes == 1
    assert cache.get_sync("key-1") == cache.get_sync("key-2") == b"same bytes"
    cache.put_sync("key-3", b"other bytes")
    assert len(cache.storage.list("blobs/")) == 2 and cache.writes == 2


def test_put_overwrites_a_key(cache):
    cache.put_sync("k", b"v1")
    cache.put_sync("k", b"v2")
    assert cache.get_sync("k") == b"v2"


def test_corrupted_blob_is_a_miss_and_repaired(cache, caplog):
    cache.put_sync("k", b"the real body")
    name = blob_name(sha(b"the real body"))
    cache.storage.write(name, b"the real bodY")  # bit rot / a bad copy
    with caplog.at_level(logging.WARNING, logger="corebuild.shards.cache"):
        assert cache.get_sync("k") is None
    assert cache.misses == 1 and cache.hits == 0
    assert any("does not match its sha256" in r.getMessage() and r.name == "corebuild.shards.cache" for r in caplog.records)
    assert not cache.storage.exists(name)  # removed, so the next put writes it again
    cache.put_sync("k", b"the real body")
    assert cache.get_sync("k") == b"the real body"


def test_ref_to_missing_blob_is_a_miss(cache, caplog):
    cache.put_sync("k", b"body")
    cache.storage.delete(blob_name(sha(b"body")))
    with caplog.at_level(logging.WARNING, logger="corebuild.shards.cache"):
        assert cache.get_sync("k") is None
    assert any("is missing" in r.getMessage() for r in caplog.records)


def test_damaged_ref_is_a_miss(cache, caplog):
    cache.put_sync("k", b"body")
    cache.storage.write(ref_name("k"), b"not a digest")
    with caplog.at_level(logging.WARNING, logger="corebuild.shards.cache"):
        assert cache.get_sync("k") is None
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_open_cache(tmp_path):
    assert open_cache(None) is None and open_cache("") is None
    local = open_cache(str(tmp_path / "c"))
    assert isinstance(local, ContentCache) and isinstance(local.storage, LocalStorage)
    gcs = open_cache("gs://bkt/cache")
    assert isinstance(gcs, ContentCache) and isinstance(gcs.storage, GCSStorage) and gcs.url == "gs://bkt/cache"


# --- as HttpClient's cache, against a loopback server ---


class TileServer:
    def __init__(self):
        self.hits: Counter = Counter()
        self.queries: list[str] = []

    async def tile(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        self.queries.append(request.query_string)
        return web.Response(body=f"tile {name} bytes".encode() + bytes(range(256)), content_type="image/png")


@pytest.fixture(scope="module")
def tile_server():
    srv = TileServer()
    app = web.Application()
    app.router.add_get("/tile/{name}", srv.tile)
    running = serve_app(app)
    srv.url = running.url
    yield srv
    running.stop()


def test_http_client_second_fetch_comes_from_cache(cache, tile_server):
    name = uuid.uuid4().hex  # the server is shared by both backends' runs
    url = f"{tile_server.url}/tile/{name}"
    params = {"key": "SECRET-XYZ", "z": "17"}
    cfg = HttpConfig(attempts=1, timeout_s=5)

    async def go():
        async with aiohttp.ClientSession() as session:
            first = HttpClient(session, cfg, cache=cache)
            r1 = await first.get(url, params, "test")
            second = HttpClient(session, cfg, cache=cache)
            r2 = await second.get(url, params, "test")
            # The key is the redacted URL: another key value finds the same entry.
            third = HttpClient(session, cfg, cache=cache)
            r3 = await third.get(url, {"key": "OTHER-KEY", "z": "17"}, "test")
            return first, r1, second, r2, third, r3

    first, r1, second, r2, third, r3 = asyncio.run(go())
    assert r1.status == 200 and not r1.cached and first.requests == 1 and first.cache_hits == 0
    assert r2.cached and r2.body == r1.body
    assert second.requests == 0 and second.cache_hits == 1
    assert r3.cached and r3.body == r1.body and third.requests == 0
    assert tile_server.hits[name] == 1
    assert "SECRET-XYZ" in tile_server.queries[-1]  # the secret did go over the wire...
    storage = cache.storage
    for obj in storage.list():  # ...and never into the cache
        assert "SECRET-XYZ" not in obj
        assert b"SECRET-XYZ" not in (storage.read(obj) or b"")
    redacted = redact_url(f"{url}?{urlencode(sorted(params.items()))}")
    assert "SECRET-XYZ" not in redacted and cache.get_sync(redacted) == r1.body
