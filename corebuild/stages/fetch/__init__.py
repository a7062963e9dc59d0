"""Imagery providers, chosen by name from config (registries, not if/elif chains).

A street-level provider answers in two phases so duplicates can be dropped in between:
`locate(lat, lon)` (cheap: metadata or a search) and `capture(location)` (the images).
Every provider talks HTTP through its own `HttpClient` (shared session, its own rate limit,
the shared response cache). Failures are `StageError(reason, message)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

from corebuild.errors import ConfigError
from corebuild.record import AerialCrop, StreetCapture, StreetLocation
from corebuild.stages.fetch.aerial import AERIAL_PRESETS, AerialConfig
from corebuild.stages.fetch.http import HttpClient, HttpConfig
from corebuild.stages.fetch.streetview import StreetViewConfig
from corebuild.stages.registry import Registry


class StreetProvider(Protocol):
    name: str
    license: str  # its imagery's licence id (corebuild.licenses), also on every location it gives

    async def locate(self, lat: float, lon: float) -> StreetLocation: ...

    async def capture(self, location: StreetLocation) -> StreetCapture: ...


class AerialProvider(Protocol):
    name: str
    license: str  # its imagery's licence id (corebuild.licenses), also on every crop it gives

    async def crop(self, lat: float, lon: float) -> AerialCrop: ...


# name -> "module:factory(FetchConfig, HttpClient)", one module per provider; keys are resolved
# by the factory, on the worker.
STREET_PROVIDERS = Registry(
    "street provider",
    {
        "google_streetview": "corebuild.stages.fetch.streetview:from_config",
        "mapillary": "corebuild.stages.fetch.mapillary:from_config",
        "local": "corebuild.stages.fetch.localfolder:from_config",
    },
)
AERIAL_PROVIDERS = Registry("aerial provider", {"xyz": "corebuild.stages.fetch.aerial:from_config"})


@dataclass(frozen=True)
class ProviderChoice:
    street: str  # a STREET_PROVIDERS name
    aerial: Optional[AerialConfig]  # the chosen preset; None: keep the configured source
    map: Optional[AerialConfig]  # the chosen preset; None: keep the configured one (no map by default)


def choose_providers(
    street_flag: Optional[str],
    aerial_flag: Optional[str],
    map_flag: Optional[str],
    region_providers: Mapping[str, str],
    default_street: str,
) -> ProviderChoice:
    """The one rule for which providers a region is built with: a command-line flag beats the
    region manifest's `providers`, which beats the default (`FetchConfig.street_provider`; no
    preset keeps the configured aerial source and no map). Unknown names are a ConfigError."""
    street = street_flag or region_providers.get("street") or default_street
    if street not in STREET_PROVIDERS:
        raise ConfigError(f"unknown street provider {street!r}; known: {', '.join(sorted(STREET_PROVIDERS))}")
    presets: dict[str, Optional[AerialConfig]] = {}
    for key, flag in (("aerial", aerial_flag), ("map", map_flag)):
        name = flag or region_providers.get(key)
        if name is not None and name not in AERIAL_PRESETS:
            raise ConfigError(f"unknown {key} preset {name!r}; known: {', '.join(sorted(AERIAL_PRESETS))}")
        presets[key] = None if name is None else AERIAL_PRESETS[name]
    return ProviderChoice(street, presets["aerial"], presets["map"])


__all__ = ["AERIAL_PRESETS", "AERIAL_PROVIDERS", "STREET_PROVIDERS", "AerialConfig", "HttpClient", "HttpConfig", "ProviderChoice", "StreetViewConfig", "choose_providers"]
