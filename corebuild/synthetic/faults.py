"""Fault injection for the loopback servers (Street View, XYZ tiles, Mapillary, the OpenAI-compatible
describer): an aiohttp middleware that makes a seeded share of requests misbehave the ways real
services do, so a build can be run against a hostile network and checked row by row.

Which request faults, and how, is a pure function of (seed, request): the method, path, the query
without credentials, and the body's digest. So a rerun meets the same faults, and a *transient*
fault answers badly the first one or two times a request is made and well after that (what a
retry should cure), while a *persistent* one answers badly every time (what must end as a failure
row with its reason). Placeholder tiles are persistent whatever the mode: "no imagery here" is
the server's answer, not a glitch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from aiohttp import web
from PIL import Image

from corebuild.redact import SECRET_PARAMS
from corebuild.synthetic.render import encode

# What a faulty answer can be, per kind of route. `truncated`: the connection drops mid-body
# (Content-Length promised more); `corrupt`: a complete 200 whose body is cut short, so it does
# not decode or parse; `malformed`: a well-formed reply whose answer is not the schema's JSON.
COMMON = ("http_429", "http_5xx", "timeout", "reset", "truncated", "corrupt")
KINDS_BY_ROUTE = {
    "street_metadata": COMMON,
    "street_image": COMMON,
    "tile": COMMON + ("placeholder",),
    "mapillary": COMMON,
    "llm": COMMON + ("malformed",),
}
ALL_KINDS = tuple(sorted({k for kinds in KINDS_BY_ROUTE.values() for k in kinds}))
ALWAYS_PERSISTENT = frozenset({"placeholder"})


def route_of(path: str) -> Optional[str]:
    if path == "/maps/api/streetview/metadata":
        return "street_metadata"
    if path == "/maps/api/streetview":
        return "street_image"
    if path.startswith(("/tiles/", "/osm/")):
        return "tile"
    if path.startswith("/mapillary/"):
        return "mapillary"
    if path == "/v1/chat/completions":
        return "llm"
    return None  # health checks and anything else: never faulted


@dataclass(frozen=True)
class FaultConfig:
    rate: float = 0.0  # share of distinct requests that misbehave
    seed: int = 0
    kinds: tuple[str, ...] = ALL_KINDS  # the kinds to draw from (each route uses those it has)
    persistent: bool = False  # every attempt fails (else the first 1-2 attempts of a faulty request)
    hang_s: float = 3.0  # how long a `timeout` fault stalls before answering (set above the client's timeout)
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {list(ALL_KINDS)}")


def _unit(*parts: object) -> float:
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


class FaultInjector:
    """`middleware` for an aiohttp app. `injected` counts faults served by kind; `log` lists
    (route, kind, request key, attempt) for tests that map faults back to samples."""

    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg
        self.attempts: Counter = Counter()
        self.injected: Counter = Counter()
        self.log: list[tuple[str, str, str, int]] = []

    async def _key(self, request: web.Request) -> str:
        query = "&".join(f"{k}={v}" for k, v in sorted(request.query.items()) if k.lower() not in SECRET_PARAMS)
        body = hashlib.sha256(await request.read()).hexdigest()[:16] if request.can_read_body else ""
        return f"{request.method} {request.path}?{query} {body}"

    def fault_for(self, route: str, key: str) -> Optional[str]:
        kinds = [k for k in KINDS_BY_ROUTE[route] if k in self.cfg.kinds]
        if not kinds or _unit(self.cfg.seed, "faulty", key) >= self.cfg.rate:
            return None
        return kinds[int(_unit(self.cfg.seed, "kind", key) * len(kinds))]

    def _fails_times(self, key: str, kind: str) -> float:
        if self.cfg.persistent or kind in ALWAYS_PERSISTENT:
            return float("inf")
        return 1 + int(_unit(self.cfg.seed, "times", key) * 2)  # 1 or 2: within any retry budget of 3+

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        route = route_of(request.path)
        if route is None or self.cfg.rate <= 0:
            return await handler(request)
        key = await self._key(request)
        kind = self.fault_for(route, key)
        if kind is None:
            return await handler(request)
        self.attempts[key] += 1
        attempt = self.attempts[key]
        if attempt > self._fails_times(key, kind):
            return await handler(request)
        self.injected[kind] += 1
        self.log.append((route, kind, key, attempt))
        return await self._serve(kind, request, handler, key)

    async def _serve(self, kind: str, request: web.Request, handler, key: str) -> web.StreamResponse:
        if kind == "http_429":
            return web.Response(status=429, headers={"Retry-After": str(self.cfg.retry_after_s)}, text="Too Many Requests")
        if kind == "http_5xx":
            code = (500, 502, 503, 504)[int(_unit(self.cfg.seed, "code", key) * 4)]
            return web.Response(status=code, text="upstream trouble")
        if kind == "timeout":
            await asyncio.sleep(self.cfg.hang_s)
            return await handler(request)
        if kind == "reset":
            _abort(request)
            return web.Response(status=500)  # never reaches the client: the connection is gone
        if kind == "placeholder":
            tile = Image.new("RGB", (256, 256), (204, 204, 204))  # "map data not yet available"
            return web.Response(body=encode(tile, "png"), content_type="image/png")
        resp = await handler(request)
        body = resp.body if isinstance(resp, web.Response) else None
        if resp.status != 200 or not isinstance(body, (bytes, bytearray)) or len(body) < 4:
            return resp  # nothing to damage (an error answer, a streamed body)
        body = bytes(body)
        if kind == "corrupt":
            return web.Response(body=body[: len(body) // 2], content_type=resp.content_type)
        if kind == "malformed":
            reply = json.loads(body)
            for choice in reply.get("choices", []):
                choice["message"]["content"] = "Sure! Here is a description of the street: " + str(choice["message"].get("content"))[:40]
            return web.json_response(reply)
        # truncated: promise the whole body, send half, drop the connection
        stream = web.StreamResponse(status=200, headers={"Content-Type": resp.content_type, "Content-Length": str(len(body))})
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        _abort(request)
        return stream


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()  # RST, no answer: what a dropped connection looks like to the client
