"""Fetch stage: a street-level capture and an aerial crop centred where the camera stood."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Sequence

import aiohttp

from .aio import LoopThread
from .errors import ConfigError, StageError
from .providers import AERIAL_PROVIDERS, STREET_PROVIDERS, AerialConfig, HttpConfig, StreetViewConfig
from .record import Record


@dataclass(frozen=True)
class FetchConfig:
    street_provider: str = "google_streetview"
    street: StreetViewConfig = field(default_factory=StreetViewConfig)
    aerial_provider: str = "xyz"
    aerial: AerialConfig = field(default_factory=AerialConfig)
    http: HttpConfig = field(default_factory=HttpConfig)


async def fetch_one(rec: Record, street, aerial) -> Record:
    if rec.failed:
        return rec
    t0 = time.perf_counter()
    try:
        capture = await street.capture(rec.lat, rec.lon)
        crop = await aerial.crop(capture.lat, capture.lon)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc)).timed("fetch", time.perf_counter() - t0)
    return rec.with_(street=capture, aerial=crop).timed("fetch", time.perf_counter() - t0)


async def fetch_all(records: Sequence[Record], street, aerial) -> list[Record]:
    return list(await asyncio.gather(*(fetch_one(r, street, aerial) for r in records)))


class Fetcher:
    """Per-worker fetch resources: one loop, one HTTP session, one client per provider."""

    def __init__(self, cfg: FetchConfig):
        if cfg.street_provider not in STREET_PROVIDERS:
            raise ConfigError(f"unknown street provider {cfg.street_provider!r}; known: {sorted(STREET_PROVIDERS)}")
        if cfg.aerial_provider not in AERIAL_PROVIDERS:
            raise ConfigError(f"unknown aerial provider {cfg.aerial_provider!r}; known: {sorted(AERIAL_PROVIDERS)}")
        self.cfg = cfg
        self._loop = LoopThread("corebuild-fetch")
        try:
            self._session, self._street, self._aerial = self._loop.run(self._open())
        except BaseException:
            self._loop.close()
            raise

    async def _open(self):
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.http.concurrency),
            headers={"User-Agent": "corebuild/0.1 (+dataset builder)"},
        )
        try:
            street = STREET_PROVIDERS[self.cfg.street_provider](session, self.cfg.street, self.cfg.http)
            aerial = AERIAL_PROVIDERS[self.cfg.aerial_provider](session, self.cfg.aerial, self.cfg.http)
        except BaseException:
            await session.close()
            raise
        return session, street, aerial

    def fetch(self, records: Sequence[Record]) -> list[Record]:
        return self._loop.run(fetch_all(records, self._street, self._aerial))

    def close(self) -> None:
        try:
            self._loop.run(self._session.close(), timeout=10)
        finally:
            self._loop.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
