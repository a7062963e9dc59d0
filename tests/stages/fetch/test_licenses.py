"""Every provider states the licence of its imagery (corebuild.licenses), and a fetch records it,
with the attribution its terms ask for, on the record: street_license/street_attribution and
aerial_license/aerial_attribution in the shards."""

from __future__ import annotations

import dataclasses

import pytest

from corebuild.licenses import CC0, CC_BY_SA_4, GOOGLE_MAPS_TOS, LICENSES, NOASSERTION, ODBL, SYNTHETIC_ATTRIBUTION
from corebuild.running.build import with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.stages.fetch import AERIAL_PRESETS, AERIAL_PROVIDERS, STREET_PROVIDERS
from corebuild.stages.fetch.fetcher import FetchConfig, Fetcher
from corebuild.stages.fetch.localfolder import LocalFolderConfig
from tests.stages.fetch.apis import KEY_ENV, MLY_CREATOR, ZOOM, fetch_config, points, serving


@pytest.fixture()
def provider_keys(monkeypatch):
    # The keys the default FetchConfig's providers read (a new provider with its own key adds it here).
    for env in (FetchConfig().streetview.api_key_env, FetchConfig().mapillary.token_env):
        monkeypatch.setenv(env, "not-a-real-key")


@pytest.mark.parametrize("name", STREET_PROVIDERS.names())
def test_every_street_provider_states_a_known_licence(name, provider_keys):
    provider = STREET_PROVIDERS.load(name)(FetchConfig(), None)
    assert provider.license in LICENSES, f"{name}: licence {provider.license!r} is not in corebuild.licenses"


@pytest.mark.parametrize("name", sorted(AERIAL_PRESETS))
def test_every_aerial_preset_states_its_licence_and_attribution(name):
    preset = AERIAL_PRESETS[name]
    assert preset.license in LICENSES and preset.license != NOASSERTION.id, f"{name}: no licence stated"
    assert preset.attribution, f"{name}: no attribution"


def test_the_generic_xyz_source_records_what_the_user_states(provider_keys):
    xyz = AERIAL_PROVIDERS.load("xyz")(dataclasses.replace(FetchConfig(), aerial=dataclasses.replace(FetchConfig().aerial, url_template="http://h/{z}/{x}/{y}.png")), None)
    assert xyz.license == NOASSERTION.id  # --aerial-license unset: nothing asserted


def test_the_licences_named_for_providers():
    assert (FetchConfig().streetview.license, FetchConfig().mapillary.license) == (GOOGLE_MAPS_TOS.id, CC_BY_SA_4.id)
    assert AERIAL_PRESETS["osm"].license == ODBL.id and AERIAL_PRESETS["osm"].attribution == "© OpenStreetMap contributors"
    assert all(AERIAL_PRESETS[n].license.startswith("LicenseRef-") for n in ("esri_world_imagery", "bing_aerial", "mapbox_satellite"))
    assert LocalFolderConfig().license == NOASSERTION.id


def _fetch(street_provider: str, **extra):
    with serving() as api:
        cfg = fetch_config(api.url, street_provider, **extra)
        # the osm preset's licence and attribution, its tiles from the loopback server
        osm = dataclasses.replace(AERIAL_PRESETS["osm"], url_template=f"{api.url}/aerial/{{z}}/{{x}}/{{y}}.png", zoom=ZOOM, size=128)
        with Fetcher(dataclasses.replace(cfg, aerial=osm, map=None)) as f:
            (rec,) = f.fetch(points(1))
    assert not rec.failed, rec.error
    return rec


def test_a_mapillary_fetch_records_its_licence_and_credits_the_creator(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "MLY|test")
    rec = _fetch("mapillary")
    assert rec.street.license == CC_BY_SA_4.id
    assert rec.street.copyright == f"Mapillary, CC BY-SA 4.0, by {MLY_CREATOR}"  # `creator` asked for, and credited
    assert (rec.aerial.license, rec.aerial.attribution) == (ODBL.id, "© OpenStreetMap contributors")


def test_a_street_view_fetch_records_googles_terms_and_its_copyright(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")
    rec = _fetch("google_streetview")
    assert (rec.street.license, rec.street.copyright) == (GOOGLE_MAPS_TOS.id, "© Google")
    assert rec.aerial.license == ODBL.id


def test_the_synthetic_world_is_cc0_whichever_client_fetches_it():
    cfg = with_synthetic_endpoints(BuildConfig("tiny", fetch=dataclasses.replace(FetchConfig(), map=AERIAL_PRESETS["osm"])), "http://127.0.0.1:1")
    f = cfg.fetch
    assert {f.streetview.license, f.mapillary.license, f.aerial.license, f.map.license} == {CC0.id}
    assert f.mapillary.attribution == SYNTHETIC_ATTRIBUTION
