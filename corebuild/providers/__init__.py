"""Imagery providers, chosen by name from config (registries, not if/elif chains).

A street-level provider answers in two phases so duplicates can be dropped in between:
`locate(lat, lon)` (cheap: metadata or a search) and `capture(location)` (the images).
Every provider talks HTTP through its own `HttpClient` (shared session, its own rate limit,
the shared response cache). Failures are `StageError(reason, message)`.
"""

from __future__ import annotations

from typing import Callable, Protocol

from ..record import AerialCrop, StreetCapture, StreetLocation
from ..secrets import resolve_secret
from .aerial import AERIAL_PRESETS, AerialConfig, XYZTiles
from .http import HttpClient, HttpConfig
from .localfolder import LocalFolder
from .mapillary import Mapillary
from .streetview import GoogleStreetView, StreetViewConfig


class StreetProvider(Protocol):
    name: str

    async def locate(self, lat: float, lon: float) -> StreetLocation: ...

    async def capture(self, location: StreetLocation) -> StreetCapture: ...


class AerialProvider(Protocol):
    name: str

    async def crop(self, lat: float, lon: float) -> AerialCrop: ...


def _google(cfg, http: HttpClient) -> StreetProvider:
    sv = cfg.streetview
    key = resolve_secret(sv.api_key_env, "Google Street View", cfg.secret_name(sv.api_key_env))
    secret = resolve_secret(sv.signing_secret_env, "Street View URL signing", cfg.secret_name(sv.signing_secret_env)) if sv.signing_secret_env else None
    return GoogleStreetView(http, sv, key, secret)


# name -> factory(FetchConfig, HttpClient)
STREET_PROVIDERS: dict[str, Callable[..., StreetProvider]] = {"google_streetview": _google}
STREET_PROVIDERS["mapillary"] = lambda cfg, http: Mapillary(http, cfg.mapillary, resolve_secret(cfg.mapillary.token_env, "Mapillary", cfg.secret_name(cfg.mapillary.token_env)))
STREET_PROVIDERS["local"] = lambda cfg, http: LocalFolder(cfg.local, cfg.http.image_limits)


def xyz_tiles(acfg: AerialConfig, http: HttpClient, stage: str, secret_name: str = "") -> XYZTiles:
    key = resolve_secret(acfg.api_key_env, f"{stage} tiles ({acfg.provider_name})", secret_name) if acfg.api_key_env else ""
    return XYZTiles(http, acfg, key, stage)


AERIAL_PROVIDERS: dict[str, Callable[..., AerialProvider]] = {"xyz": lambda cfg, http: xyz_tiles(cfg.aerial, http, "aerial", cfg.secret_name(cfg.aerial.api_key_env or ""))}

__all__ = ["AERIAL_PRESETS", "AERIAL_PROVIDERS", "STREET_PROVIDERS", "AerialConfig", "HttpClient", "HttpConfig", "StreetViewConfig"]
