"""Fetch stage: locate street-level imagery near each point, drop duplicates (two points on one
panorama or one Mapillary sequence), then download the views and an aerial crop centred where
the camera stood (plus an optional map crop)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import aiohttp

from .aio import LoopThread
from .cache import open_cache
from .errors import ConfigError, StageError
from .providers import AERIAL_PROVIDERS, STREET_PROVIDERS, AerialConfig, HttpClient, HttpConfig, StreetViewConfig, xyz_tiles
from .providers.http import rate_limiter
from .providers.localfolder import LocalFolderConfig
from .providers.mapillary import MapillaryConfig
from .record import Record
from .redact import register_url_secrets


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
    cache_url: Optional[str] = None  # content-addressed response cache: a directory or gs://bucket/prefix
    # Env var name -> Secret Manager resource name, for workers that have no such env (Dataflow).
    # Names a secret, never holds one (corebuild.secrets).
    secret_names: tuple[tuple[str, str], ...] = ()
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
    from .redact import redact_text

    return rec.fail(f"{stage}.internal_error", redact_text(f"{type(exc).__name__}: {exc}")[:500])


async def locate_one(rec: Record, street) -> Record:
    if rec.failed:
        return rec
    t0 = time.perf_counter()
    try:
        loc = await street.locate(rec.lat, rec.lon)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc)).timed("locate", time.perf_counter() - t0)
    except Exception as exc:  # a provider bug fails this record, not the worker
        return _internal(rec, "street", exc)
    return rec.with_(location=loc).timed("locate", time.perf_counter() - t0)


def location_key(location) -> str:
    return f"{location.provider}:{location.dedupe_key}"


def dedupe_key(rec: Record) -> tuple[str, str]:
    """Records that would duplicate each other share this key; failed ones never do."""
    if rec.failed or rec.location is None:
        return (rec.region_id, f"\0{rec.sample_id}")
    return (rec.region_id, location_key(rec.location))


DUPLICATE = "street.duplicate"
_AS = " as "


def imagery_kind(location) -> str:
    """What two points share when they duplicate each other, as the duplicate row says it."""
    return "Mapillary sequence" if location.sequence_id else "panorama"


def duplicate_of(rec: Record, what: str, shown: str, keeper_id: str) -> Record:
    return rec.fail(DUPLICATE, f"same {what} {shown}{_AS}{keeper_id}")


def keeper_named(rec: Record) -> Optional[str]:
    """The keeper a duplicate row names (sample ids hold no spaces), else None."""
    return rec.error.rsplit(_AS, 1)[-1] if rec.failure_reason == DUPLICATE and rec.error else None


def keep_first(group: Iterable[Record]) -> list[Record]:
    """Of records sharing a panorama/sequence, the lowest point index is kept; the others
    become failure rows naming the one they duplicate. Order-independent (Beam-safe)."""
    recs = sorted(group, key=lambda r: r.point_index)
    if len(recs) == 1 or recs[0].location is None:
        return recs
    first = recs[0]
    return [first] + [duplicate_of(r, imagery_kind(first.location), first.location.dedupe_key, first.sample_id) for r in recs[1:]]


def dedupe(records: Sequence[Record]) -> list[Record]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[dedupe_key(r)].append(r)
    out = {r.sample_id: r for g in groups.values() for r in keep_first(g)}
    return [out[r.sample_id] for r in records]


async def capture_one(rec: Record, street, aerial, map_tiles=None) -> Record:
    if rec.failed:
        return rec
    if rec.location is None:
        return rec.fail("street.not_located", "capture called before locate")
    t0 = time.perf_counter()
    try:
        capture = await street.capture(rec.location)
        crops = [aerial.crop(capture.lat, capture.lon)] + ([map_tiles.crop(capture.lat, capture.lon)] if map_tiles else [])
        crop, *maybe_map = await asyncio.gather(*crops)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc)).timed("fetch", time.perf_counter() - t0)
    except Exception as exc:
        return _internal(rec, "fetch", exc)
    return rec.with_(street=capture, aerial=crop, map=maybe_map[0] if maybe_map else None).timed("fetch", time.perf_counter() - t0)


class Fetcher:
    """Per-worker fetch resources: one loop, one HTTP session, one client per provider, each
    with its own rate limit; `cache` (optional) answers repeated requests on reruns."""

    def __init__(self, cfg: FetchConfig, cache=None):
        if cache is None and cfg.cache_url:
            cache = open_cache(cfg.cache_url)
        if cfg.street_provider not in STREET_PROVIDERS:
            raise ConfigError(f"unknown street provider {cfg.street_provider!r}; known: {sorted(STREET_PROVIDERS)}")
        if cfg.aerial_provider not in AERIAL_PROVIDERS:
            raise ConfigError(f"unknown aerial provider {cfg.aerial_provider!r}; known: {sorted(AERIAL_PROVIDERS)}")
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
            street = STREET_PROVIDERS[self.cfg.street_provider](self.cfg, self._client(session, "street"))
            aerial = AERIAL_PROVIDERS[self.cfg.aerial_provider](self.cfg, self._client(session, "aerial"))
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
