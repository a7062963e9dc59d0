import asyncio
import socket
import time

import aiohttp
import pytest

from corebuild.errors import StageError
from corebuild.stages.fetch.http import HttpClient, HttpConfig, decode_image, http_get, redact_url
from tests.stages.fetch.bombs import BIG_BODY_BYTES

FAST = HttpConfig(attempts=3, backoff_initial_s=0.01, backoff_max_s=2.0, timeout_s=5)


def _get(url, cfg=FAST, params=None):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await http_get(s, url, params or {}, cfg, "street")

    return asyncio.run(go())


def test_transient_5xx_is_retried_then_succeeds(fault_server):
    res = _get(f"{fault_server.url}/flaky/a/2")
    assert res.status == 200 and res.body == b"ok" and fault_server.hits["a"] == 3


def test_persistent_5xx_gives_a_reasoned_failure(fault_server):
    with pytest.raises(StageError) as err:
        _get(f"{fault_server.url}/flaky/b/99")
    assert err.value.reason == "street.http_503" and fault_server.hits["b"] == FAST.attempts


def test_retry_after_is_honoured(fault_server):
    t0 = time.monotonic()
    res = _get(f"{fault_server.url}/retry-after/c")
    assert res.status == 200 and time.monotonic() - t0 >= 1.0


def test_4xx_is_an_answer_not_retried(fault_server):
    before = fault_server.hits["status"]
    assert _get(f"{fault_server.url}/status/403").status == 403
    assert fault_server.hits["status"] == before + 1


def test_timeout_and_unreachable_are_failures_with_reasons(fault_server):
    with pytest.raises(StageError) as err:
        _get(f"{fault_server.url}/hang", HttpConfig(attempts=1, timeout_s=0.3))
    assert err.value.reason == "street.timeout"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with pytest.raises(StageError) as err:
        _get(f"http://127.0.0.1:{dead_port}/x", params={"key": "SECRET123"})
    assert err.value.reason == "street.unreachable"
    assert "SECRET123" not in str(err.value) and "REDACTED" in str(err.value)


def test_redact_url_hides_every_secret_parameter():
    url = redact_url("https://h/p?location=1,2&key=AIzaSECRET&signature=S1GVALUE&access_token=T0KVALUE&size=640x640")
    assert not any(s in url for s in ("AIzaSECRET", "S1GVALUE", "T0KVALUE")) and url.count("REDACTED") == 3
    assert "location=1,2" in url and "size=640x640" in url


def test_truncated_image_fails_to_decode(fault_server):
    res = _get(f"{fault_server.url}/truncated.jpg")
    with pytest.raises(StageError) as err:
        decode_image(res.body, "street", "test image", FAST.image_limits)
    assert err.value.reason == "street.bad_image"


def _get_image(url, cfg=FAST, max_image_bytes=None):
    async def go():
        async with aiohttp.ClientSession() as s:
            client = HttpClient(s, cfg)
            res = await client.get(url, {"key": "SECRET123"}, "street", max_image_bytes=max_image_bytes or cfg.max_image_bytes)
            return res, client.requests

    return asyncio.run(go())


def test_image_body_past_the_limit_is_cut_off_not_retried(fault_server):
    before = fault_server.hits["image:big"]
    with pytest.raises(StageError) as err:
        _get_image(f"{fault_server.url}/image/big", max_image_bytes=BIG_BODY_BYTES)
    assert err.value.reason == "street.image_too_large" and "declares" in str(err.value)  # Content-Length: refused unread
    assert "fetch.http.max_image_bytes" in str(err.value) and "SECRET123" not in str(err.value)
    assert fault_server.hits["image:big"] == before + 1  # the next answer would be the same: no retry


def test_endless_image_body_is_abandoned_at_the_limit(fault_server):
    t0 = time.monotonic()
    with pytest.raises(StageError) as err:
        _get_image(f"{fault_server.url}/image/endless", HttpConfig(attempts=3, max_image_bytes=1_000_000))
    assert err.value.reason == "street.image_too_large" and "cut off after" in str(err.value)
    assert time.monotonic() - t0 < 5 and fault_server.hits["image:endless"] == 1


def test_image_body_limit_is_the_configured_one(fault_server):
    res, _ = _get_image(f"{fault_server.url}/image/big")  # default limit: 64 MiB
    assert res.status == 200 and len(res.body) > BIG_BODY_BYTES
    assert decode_image(res.body, "street", "x", FAST.image_limits).size == (96, 64)  # trailing bytes are ignored
    with pytest.raises(StageError) as err:
        decode_image(res.body, "street", "x", HttpConfig(max_image_bytes=BIG_BODY_BYTES).image_limits)
    assert err.value.reason == "street.image_too_large"
    # Without max_image_bytes (JSON answers, model endpoints) nothing changes.
    assert _get(f"{fault_server.url}/image/big").body == res.body


def test_post_json_is_retried_like_get(fault_server):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await HttpClient(s, FAST).post_json(f"{fault_server.url}/flaky-post/p/1", {"a": 1}, "describe")

    res = asyncio.run(go())
    assert res.status == 200 and res.body == b'{"a": 1}' and fault_server.hits["post:p"] == 2


def _damaged_once_app(good: bytes):
    """Answers a complete 200 cut to half its length the first time, then the whole body."""
    from aiohttp import web

    hits = {"n": 0}

    async def handler(request):
        hits["n"] += 1
        return web.Response(body=good[: len(good) // 2] if hits["n"] == 1 else good, content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", handler)
    return app, hits


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype="uint8")).save(buf, "PNG")
    return buf.getvalue()


class _DictCache:
    def __init__(self, entries=None):
        self.entries = dict(entries or {})

    async def get(self, key):
        return self.entries.get(key)

    async def put(self, key, body):
        self.entries[key] = body


def test_a_body_that_does_not_decode_is_fetched_again_and_only_a_good_one_cached():
    from corebuild.aio import serve_app
    from corebuild.stages.fetch.http import image_validator

    good = _png()
    app, hits = _damaged_once_app(good)
    server = serve_app(app)
    url = f"{server.url}/img.png"
    cache = _DictCache({url: b"\x89PNG a damaged entry from an older version"})
    try:

        async def go():
            async with aiohttp.ClientSession() as s:
                return await HttpClient(s, FAST, cache=cache).get(url, {}, "aerial", validate=image_validator("aerial", "tile", FAST.image_limits))

        res = asyncio.run(go())
    finally:
        server.stop()
    assert res.status == 200 and res.value.size == (64, 64) and res.body == good
    assert hits["n"] == 2  # the damaged cache entry was skipped, the damaged answer refetched
    assert cache.entries[url] == good


def test_a_body_damaged_every_time_fails_with_its_reason():
    from corebuild.stages.fetch.http import json_validator

    from aiohttp import web
    from corebuild.aio import serve_app

    hits = {"n": 0}

    async def handler(request):
        hits["n"] += 1
        return web.Response(body=b'{"status": "OK", "pano_', content_type="application/json")

    app = web.Application()
    app.router.add_get("/meta", handler)
    server = serve_app(app)
    try:

        async def go():
            async with aiohttp.ClientSession() as s:
                return await HttpClient(s, FAST).get(f"{server.url}/meta", {"key": "s3cret"}, "street", validate=json_validator("street.bad_metadata", "metadata"))

        with pytest.raises(StageError) as err:
            asyncio.run(go())
    finally:
        server.stop()
    assert err.value.reason == "street.bad_metadata" and hits["n"] == FAST.attempts
    assert "3 attempts" in str(err.value) and "s3cret" not in str(err.value)


# ----- Retry-After (RFC 9110 section 10.2.3): delta-seconds or an HTTP-date, up to a cap -------

QUICK = HttpConfig(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05, max_retry_wait_s=10, timeout_s=5)


def _busy_then_ok(retry_after):
    """A loopback API answering its first request 429 Too Many Requests with a JSON error body
    and `Retry-After: retry_after()` (computed per answer: an HTTP-date is relative to then), then
    200. Returns (server, hits)."""
    from aiohttp import web

    from corebuild.aio import serve_app

    hits = {"n": 0}

    async def handler(request):
        hits["n"] += 1
        if hits["n"] == 1:
            error = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
            return web.json_response(error, status=429, headers={"Retry-After": retry_after()})
        return web.json_response({"status": "OK"})

    app = web.Application()
    app.router.add_get("/api", handler)
    return serve_app(app), hits


def _timed_get(retry_after, cfg=QUICK):
    server, hits = _busy_then_ok(retry_after)
    try:
        t0 = time.monotonic()
        try:
            return _get(f"{server.url}/api", cfg, params={"key": "SECRET123"}), time.monotonic() - t0, hits["n"]
        except StageError as exc:
            return exc, time.monotonic() - t0, hits["n"]
    finally:
        server.stop()


def test_retry_after_reads_both_forms():
    from email.utils import formatdate

    from corebuild.stages.fetch.http import _retry_after

    assert _retry_after({"Retry-After": "7"}) == 7.0
    assert 28 <= _retry_after({"Retry-After": formatdate(time.time() + 30, usegmt=True)}) <= 30
    assert _retry_after({"Retry-After": formatdate(time.time() - 600, usegmt=True)}) == 0.0  # past: now
    assert _retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # RFC 9110's example
    assert _retry_after({"Retry-After": "soon"}) is None and _retry_after({}) is None


@pytest.mark.parametrize(
    "form, retry_after",
    [
        ("seconds", lambda: "2"),
        # IMF-fixdate has whole seconds: two seconds from now is a wait of 1 to 2 s.
        ("http-date", lambda: __import__("email.utils").utils.formatdate(time.time() + 2, usegmt=True)),
    ],
)
def test_retry_after_is_waited_for_in_both_forms(form, retry_after):
    res, elapsed, hits = _timed_get(retry_after)
    # Longer than our own backoff could be (backoff_max_s 0.05 s): the server's wait, not shortened.
    assert res.status == 200 and hits == 2
    assert (1.9 if form == "seconds" else 0.95) <= elapsed < 4, elapsed


@pytest.mark.parametrize("retry_after", [lambda: "600", lambda: __import__("email.utils").utils.formatdate(time.time() + 3600, usegmt=True)])
def test_retry_after_past_the_cap_fails_at_once(retry_after):
    err, elapsed, hits = _timed_get(retry_after, HttpConfig(attempts=4, max_retry_wait_s=5, timeout_s=5))
    assert isinstance(err, StageError) and err.reason == "street.http_429"
    assert hits == 1 and elapsed < 1  # one request, no wait: neither shortened nor sat out
    msg = str(err)
    assert "more than the 5 s cap" in msg and "--max-retry-wait" in msg and "--retry-failed" in msg
    assert ("asked to wait 600 s" in msg) or ("asked to wait 3600 s" in msg or "asked to wait 3599 s" in msg)
    assert "SECRET123" not in msg


def test_http_config_refuses_impossible_retry_settings():
    from corebuild.errors import ConfigError

    for bad in ({"attempts": 0}, {"max_retry_wait_s": -1}, {"max_retry_wait_s": float("nan")}, {"rate_per_s": float("inf")}):
        with pytest.raises(ConfigError):
            HttpConfig(**bad)
