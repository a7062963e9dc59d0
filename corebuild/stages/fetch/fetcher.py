"""Fetch stage: locate street-level imagery near each point, drop duplicates (two points on one
panorama or one Mapillary sequence), then download the views and an aerial crop centred where
the camera stood (plus an optional map crop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Optional, Sequence

import aiohttp

from corebuild.aio import LoopThread
from corebuild.shards.cache import open_cache
from corebuild.errors import ConfigError, StageError
from corebuild.options import option
from corebuild.stages.fetch import AERIAL_PROVIDERS, STREET_PROVIDERS, AerialConfig, HttpClient, HttpConfig, StreetViewConfig
from corebuild.stages.fetch.aerial import xyz_tiles
from corebuild.stages.fetch.http import rate_limiter
from corebuild.stages.fetch.localfolder import LocalFolderConfig
from corebuild.stages.fetch.mapillary import MapillaryConfig
from corebuild.record import Record
from corebuild.stages.dedupe import dedupe
from corebuild.redact import register_url_secrets


FETCH_STAGES = ("street", "aerial", "map")  # the stages whose HTTP settings can differ


@dataclass(frozen=True)
class FetchConfig:
    street_provider: str = "google_streetview"
    streetview: StreetViewConfig = field(default_factory=StreetViewConfig)
    aerial_provider: str = "xyz"
    aerial: AerialConfig = field(default_factory=AerialConfig)
    map: Optional[AerialConfig] = None  # a second aerial modality (OSM map tiles); None = off
    http: HttpConfig = field(default_factory=HttpConfig)
    mapillary: MapillaryConfig = field(default_factory=MapillaryConfig)
    local: LocalFolderConfig = field(default_factory=LocalFolderConfig)
    # Content-addressed response cache: a directory or gs://bucket/prefix. A cache changes speed, not rows.
    cache_url: Optional[str] = option(None, flag="--cache", hashed=False, help="response cache (directory or gs://bucket/prefix): reruns do not refetch")
    # Env var name -> Secret Manager resource name, for workers that have no such env (Dataflow).
    # Names a secret, never holds one (corebuild.secrets).
    secret_names: tuple[tuple[str, str], ...] = option((), hashed=False)  # where keys come from changes no row
    # Stage (FETCH_STAGES) -> the HttpConfig its provider uses instead of `http` (attempts and
    # max_retry_wait_s differ by provider: quota answers, free vs billed requests).
    http_by_stage: tuple[tuple[str, HttpConfig], ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted({s for s, _ in self.http_by_stage} - set(FETCH_STAGES))
        if unknown:
            raise ConfigError(f"fetch.http_by_stage: unknown stage(s) {', '.join(map(repr, unknown))}; known: {', '.join(FETCH_STAGES)}")

    def secret_name(self, env_name: str) -> str:
        return dict(self.secret_names).get(env_name, "")

    def http_for(self, stage: str) -> HttpConfig:
        return dict(self.http_by_stage).get(stage, self.http)


def _internal(rec: Record, stage: str, exc: Exception) -> Record:
    from corebuild.redact import redact_text

    return rec.fail(f"{stage}.internal_error", redact_text(f"{type(exc).__name__}: {exc}")[:500])


async def locate_one(rec: Record, street) -> Record:
    if rec.failed:
        return rec
    try:
        loc = await street.locate(rec.lat, rec.lon)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc))
    except Exception as exc:  # a provider bug fails this record, not the worker
        return _internal(rec, "street", exc)
    return rec.with_(location=loc)


async def capture_one(rec: Record, street, aerial, map_tiles=None) -> Record:
    if rec.failed:
        return rec
    if rec.location is None:
        return rec.fail("street.not_located", "capture called before locate")
    try:
        capture = await street.capture(rec.location)
        crops = [aerial.crop(capture.lat, capture.lon)] + ([map_tiles.crop(capture.lat, capture.lon)] if map_tiles else [])
        crop, *maybe_map = await asyncio.gather(*crops)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc))
    except Exception as exc:
        return _internal(rec, "fetch", exc)
    return rec.with_(street=capture, aerial=crop, map=maybe_map[0] if maybe_map else None)


class Fetcher:
    """Per-worker fetch resources: one loop, one HTTP session, one client per provider, each
    with its own rate limit; `cache` (optional) answers repeated requests on reruns."""

    def __init__(self, cfg: FetchConfig, cache=None):
        if cache is None and cfg.cache_url:
            cache = open_cache(cfg.cache_url)
        STREET_PROVIDERS.backend(cfg.street_provider)  # an unknown name: ConfigError naming the known ones
        AERIAL_PROVIDERS.backend(cfg.aerial_provider)
        self.cfg, self.cache = cfg, cache
        # Credentials written inline in a URL are secrets of this process too: redacted wherever they turn up.
        register_url_secrets(cfg.streetview.base_url, cfg.mapillary.base_url, cfg.aerial.url_template, cfg.map.url_template if cfg.map else None, cfg.cache_url)
        self._loop = LoopThread("corebuild-fetch")
        try:
            self._session, self.street, self.aerial = self._loop.run(self._open())
        except BaseException:
            self._loop.close()
            raise

    def _client(self, session: aiohttp.ClientSession, stage: str) -> HttpClient:
        h = self.cfg.http_for(stage)
        return HttpClient(session, h, rate_limiter(h.rate_per_s), self.cache)

    async def _open(self):
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.http.concurrency),
            headers={"User-Agent": "corebuild/0.1 (+dataset builder)"},
        )
        try:
            street = STREET_PROVIDERS.load(self.cfg.street_provider)(self.cfg, self._client(session, "street"))
            aerial = AERIAL_PROVIDERS.load(self.cfg.aerial_provider)(self.cfg, self._client(session, "aerial"))
            self.map = xyz_tiles(self.cfg.map, self._client(session, "map"), "map", self.cfg.secret_name(self.cfg.map.api_key_env or "")) if self.cfg.map else None
        except BaseException:
            await session.close()
            raise
        return session, street, aerial

    def locate(self, records: Sequence[Record]) -> list[Record]:
        async def run():
            return list(await asyncio.gather(*(locate_one(r, self.street) for r in records)))

        return self._loop.run(run())

    def capture(self, records: Sequence[Record]) -> list[Record]:
        async def run():
            return list(await asyncio.gather(*(capture_one(r, self.street, self.aerial, self.map) for r in records)))

        return self._loop.run(run())

    def fetch(self, records: Sequence[Record]) -> list[Record]:
        """locate -> dedupe -> capture on one batch (the stage without Beam)."""
        return self.capture(dedupe(self.locate(records)))

    def close(self) -> None:
        try:
            self._loop.run(self._session.close(), timeout=10)
        finally:
            self._loop.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
