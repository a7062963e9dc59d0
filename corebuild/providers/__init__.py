"""Imagery providers, chosen by name from config (registries, not if/elif chains)."""

from __future__ import annotations

from typing import Callable, Protocol

import aiohttp

from ..record import AerialCrop, StreetCapture
from ..secrets import resolve_secret
from .aerial import AerialConfig, XYZTiles
from .http import HttpConfig
from .streetview import GoogleStreetView, StreetViewConfig


class StreetProvider(Protocol):
    name: str

    async def capture(self, lat: float, lon: float) -> StreetCapture: ...


class AerialProvider(Protocol):
    name: str

    async def crop(self, lat: float, lon: float) -> AerialCrop: ...


def _google(session: aiohttp.ClientSession, cfg: StreetViewConfig, http: HttpConfig) -> StreetProvider:
    key = resolve_secret(cfg.api_key_env, "Google Street View")
    secret = resolve_secret(cfg.signing_secret_env, "Street View URL signing") if cfg.signing_secret_env else None
    return GoogleStreetView(session, cfg, http, key, secret)


STREET_PROVIDERS: dict[str, Callable[..., StreetProvider]] = {"google_streetview": _google}
AERIAL_PROVIDERS: dict[str, Callable[..., AerialProvider]] = {"xyz": XYZTiles}

__all__ = ["AERIAL_PROVIDERS", "STREET_PROVIDERS", "AerialConfig", "HttpConfig", "StreetViewConfig"]
