"""`corebuild estimate`: counts follow the quotas, prices follow the stated assumptions."""

from __future__ import annotations

import argparse
import dataclasses
import json

import mercantile
import pytest

from tests.conftest import ROOT
from corebuild.errors import ConfigError
from corebuild.dataset.estimate import (
    CROP_CENTRES,
    Assumptions,
    add_arguments,
    estimate,
    format_estimate,
    main,
    measure_prompt_text_tokens,
    select_regions,
    tiered_cost,
    tiles_per_crop,
    with_gpu,
)
from corebuild.stages.fetch.aerial import plan_crop

MANIFESTS = ROOT / "region_manifests"
A = Assumptions()
S = dataclasses.replace(A, quota_of="sampled")  # quotas count sampled points: the estimate before top-up rounds


@pytest.fixture(scope="module")
def regions():
    return select_regions("all", MANIFESTS)


def run_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return main(p.parse_args(["--manifests", str(MANIFESTS), *argv]))


def test_all_regions_sum_to_the_core_total(regions):
    assert len(regions) == 225 and "demo" not in {r.id for r in regions}
    res = estimate(regions, None, "vllm", False, S)
    assert res["points"] == sum(r.quota for r in regions) == 1_034_786
    assert res["requests"]["street_metadata"] == 1_034_786  # one free metadata call per point
    assert res["requests"]["street_images"] == round(1_034_786 * A.capture_rate * 4)
    kept = estimate(regions, None, "vllm", False, A)  # the default: 1,034,786 kept of twice as many sampled
    assert (kept["quota"], kept["points"], kept["captured"]) == (1_034_786, 2 * 1_034_786, 1_034_786)
    assert kept["requests"]["street_metadata"] == 2 * 1_034_786 and kept["requests"]["street_images"] == 1_034_786 * 4


def test_requests_scale_linearly_with_quota(regions):
    r1, r2 = regions[0], regions[1]
    e1, e2, e12 = (estimate(rs, None, "vllm", True, A, map_preset="osm") for rs in ([r1], [r2], [r1, r2]))
    for k, v in e12["requests"].items():
        assert v == pytest.approx(e1["requests"][k] + e2["requests"][k], abs=2), k
        assert e1["requests"][k] / r1.quota == pytest.approx(e2["requests"][k] / r2.quota, abs=2 / r1.quota), k
    assert e12["bytes"]["written"] == pytest.approx(e1["bytes"]["written"] + e2["bytes"]["written"], abs=2)
    assert e12["gpu"]["hours"] == pytest.approx(e1["gpu"]["hours"] + e2["gpu"]["hours"])
    doubled = estimate([dataclasses.replace(r1, quota=2 * r1.quota)], None, "vllm", True, A, map_preset="osm")
    for k, v in doubled["requests"].items():
        assert v == pytest.approx(2 * e1["requests"][k], abs=2), k
    assert doubled["cpu"]["vcpu_hours"] == pytest.approx(2 * e1["cpu"]["vcpu_hours"])


def test_mapillary_is_free_and_street_view_priced_per_1000_images(regions):
    r = dataclasses.replace(regions[0], quota=1000)
    m = estimate([r], "mapillary", "template", False, S)
    assert m["requests"]["street_images"] == 0 and m["requests"]["mapillary_images"] == round(1000 * A.capture_rate)
    assert m["provider_cost_usd"]["mapillary"] == 0 and m["provider_cost_usd"]["street_images"] == 0
    flat = dataclasses.replace(S, sv_tiers=((None, 7.0),))
    g = estimate([r], "google_streetview", "template", False, flat)
    assert g["provider_cost_usd"]["street_images"] == pytest.approx(g["requests"]["street_images"] * 7.0 / 1000, abs=0.01)
    assert g["requests"]["street_metadata"] == 1000 and g["provider_cost_usd"]["street_metadata"] == 0
    # Monthly volume tiers: 10k free, then 7.00, 5.60, 4.20 per 1,000.
    assert tiered_cost(9_000, A.sv_tiers) == 0
    assert tiered_cost(1_000_000, A.sv_tiers) == pytest.approx(90 * 7.0 + 400 * 5.6 + 500 * 4.2)


def test_flag_beats_manifest_provider(regions):
    r = dataclasses.replace(regions[0], providers={"street": "mapillary"})
    assert estimate([r], None, "template", False, A)["choices"]["street_provider"] == ["mapillary"]
    assert estimate([r], "google_streetview", "template", False, A)["choices"]["street_provider"] == ["google_streetview"]


def test_gpu_hours(regions):
    rs = regions[:3]
    t = estimate(rs, None, "template", False, A)
    assert t["gpu"]["hours"] == 0 and t["requests"]["lvlm"] == 0 and t["dataflow_cost_usd"]["gpu"] == 0
    v1 = estimate(rs, None, "vllm", False, A)
    v2 = estimate(rs, None, "vllm", False, dataclasses.replace(A, gpu_tokens_per_s=2 * A.gpu_tokens_per_s))
    assert v1["gpu"]["describe_hours"] > 0
    assert v2["gpu"]["describe_hours"] == pytest.approx(v1["gpu"]["describe_hours"] / 2)
    sam = estimate(rs, None, "template", True, S)
    assert sam["gpu"]["sam_hours"] == pytest.approx(sum(r.quota for r in rs) * A.capture_rate * A.headings * A.sam_s_per_view / 3600)
    kept = estimate(rs, None, "template", True, A)  # SAM runs on kept views: the quota's
    assert kept["gpu"]["sam_hours"] == pytest.approx(sum(r.quota for r in rs) * A.headings * A.sam_s_per_view / 3600)
    a100 = with_gpu(A, "nvidia-tesla-a100")
    assert estimate(rs, None, "vllm", False, a100)["dataflow_cost_usd"]["gpu"] == pytest.approx(v1["gpu"]["hours"] * a100.gpu_hour)
    with pytest.raises(ConfigError):
        with_gpu(A, "nvidia-imaginary")


@pytest.mark.parametrize("zoom,tile_size", [(20, 256), (19, 256), (20, 512)])
def test_tiles_per_crop_is_the_mercantile_count(zoom, tile_size):
    counts = []
    for lat, lon in CROP_CENTRES:
        plan = plan_crop(lat, lon, zoom, 512, tile_size)
        eps = 1e-9  # inside the crop's edges: a tile only touched at an edge is not needed
        counts.append(len(list(mercantile.tiles(plan.west + eps, plan.south + eps, plan.east - eps, plan.north - eps, zoom))))
    assert tiles_per_crop(zoom, 512, tile_size) == pytest.approx(sum(counts) / len(counts))
    assert (8.5 < sum(counts) / len(counts) <= 9) if tile_size == 256 else (3.5 < sum(counts) / len(counts) <= 4)


def test_text_names_every_assumption(regions):
    text = format_estimate(estimate(regions[:2], None, "vllm", True, A, map_preset="osm"))
    for name, source in Assumptions.sources().items():
        assert name in text and source in text, name
    assert "check before spending" in text


def test_a_kept_quota_is_sampled_at_the_expected_yield(regions):
    """--quota-of kept: points sampled = quota / expected_yield, so what is asked per point sampled
    (metadata, searches, failure rows) scales with it; what is asked per kept point does not."""
    rs, quota = regions[:3], sum(r.quota for r in regions[:3])
    old = estimate(rs, None, "vllm", True, S, map_preset="osm")
    half = estimate(rs, None, "vllm", True, A, map_preset="osm")  # expected_yield 0.5
    quarter = estimate(rs, None, "vllm", True, dataclasses.replace(A, expected_yield=0.25), map_preset="osm")
    assert A.expected_yield == 0.5 and half["points"] == 2 * quota and quarter["points"] == 4 * quota
    assert half["requests"]["street_metadata"] == 2 * old["requests"]["street_metadata"] == 2 * quota
    assert quarter["requests"]["street_metadata"] == 2 * half["requests"]["street_metadata"]
    for k in ("street_images", "aerial_tiles", "map_tiles", "lvlm"):  # per kept point: the quota's, whatever the yield
        assert half["requests"][k] == quarter["requests"][k] == pytest.approx(old["requests"][k] / A.capture_rate, abs=2), k
    assert half["captured"] == quarter["captured"] == quota
    assert quarter["located"] > half["located"] > quota  # some points not kept had imagery (duplicates)
    assert quarter["bytes"]["written"] > half["bytes"]["written"]  # more failure rows
    assert quarter["cpu"]["vcpu_hours"] > half["cpu"]["vcpu_hours"]
    m_half, m_quarter = (estimate(rs, "mapillary", "template", False, dataclasses.replace(A, expected_yield=y)) for y in (0.5, 0.25))
    assert m_quarter["requests"]["mapillary_search"] == 2 * m_half["requests"]["mapillary_search"] == 4 * quota
    assert m_quarter["requests"]["mapillary_images"] == m_half["requests"]["mapillary_images"] == quota


def test_quota_of_sampled_is_the_estimate_before_top_up_rounds(regions):
    # the figures of corebuild estimate before --quota-of, for the first two regions
    res = estimate(regions[:2], None, "vllm", True, S, map_preset="osm")
    assert res["points"] == 8547 and res["captured"] == pytest.approx(8547 * 525 / 600)
    assert res["requests"] == {
        "street_metadata": 8547, "street_images": 29914, "mapillary_search": 0, "mapillary_images": 0, "aerial_tiles": 67220, "map_tiles": 67220, "lvlm": 7479,
    }
    assert res["bytes"] == {"downloaded": 4152697670, "written": 3380872688}
    assert res["total_usd"] == pytest.approx(150.93584249155046, rel=1e-12)


def test_text_and_flags_state_the_yield_assumed(regions, capsys):
    text = format_estimate(estimate(regions[:2], None, "vllm", False, A))
    assert "Every quota is assumed sampled in full" not in text
    assert "Quotas count kept samples (--quota-of kept" in text and "yield assumed 50%, override with --expected-yield" in text
    assert "demo build measured about 87% on synthetic imagery; real Street View yield depends on the region" in text
    assert " 50.0%  expected_yield (--expected-yield)" in text  # the yield row
    assert "Quotas count sampled points (--quota-of sampled)" in format_estimate(estimate(regions[:2], None, "vllm", False, S))
    quota = select_regions("ad-andorra-la-vella", MANIFESTS)[0].quota
    for flags, points in ((["--expected-yield", "0.8"], quota / 0.8), (["--quota-of", "sampled"], quota), (["--quota-of", "sampled", "--expected-yield", "0.1"], quota)):
        assert run_cli(["--regions", "ad-andorra-la-vella", "--json", *flags]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["points"] == pytest.approx(points) and doc["requests"]["street_metadata"] == round(points), flags
    assert run_cli(["--regions", "ad-andorra-la-vella", "--expected-yield", "0.8"]) == 0
    assert "yield assumed 80%, override with --expected-yield" in capsys.readouterr().out
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(ConfigError, match="--expected-yield"):
            run_cli(["--regions", "ad-andorra-la-vella", "--expected-yield", bad])


def test_quota_flags_share_the_builds_defaults_and_help():
    from corebuild.config import BuildConfig
    from corebuild.options import add_flags
    from corebuild.stages.sample import SampleConfig

    est, build = argparse.ArgumentParser(), argparse.ArgumentParser()
    add_arguments(est)
    add_flags(build, BuildConfig)
    mine = {a.option_strings[0]: a for a in est._actions if a.option_strings}
    theirs = {a.option_strings[0]: a for a in build._actions if a.option_strings}
    for flag in ("--quota-of", "--expected-yield"):
        assert (mine[flag].default, mine[flag].help, mine[flag].choices) == (theirs[flag].default, theirs[flag].help, theirs[flag].choices)
    assert (A.quota_of, A.expected_yield) == (SampleConfig().quota_of, SampleConfig().expected_yield)


def test_prompt_tokens_assumption_matches_the_prompt_file():
    assert measure_prompt_text_tokens(ROOT / "prompts") == A.prompt_text_tokens


def test_unknown_region_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as exc:
        select_regions("ad-andorra-la-vella,xx-nowhere", MANIFESTS)
    assert "xx-nowhere" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        run_cli(["--regions", "xx-nowhere"])


def test_json_output_parses(capsys):
    assert run_cli(["--regions", "ad-andorra-la-vella", "--json", "--gpu-tokens-per-s", "500", "--gpu-type", "nvidia-tesla-t4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    quota = select_regions("ad-andorra-la-vella", MANIFESTS)[0].quota
    assert (doc["quota"], doc["points"], doc["captured"]) == (quota, quota / A.expected_yield, quota)
    assert doc["assumptions"]["gpu_tokens_per_s"]["value"] == 500 and doc["gpu"]["type"] == "nvidia-tesla-t4"
    assert doc["total_usd"] == pytest.approx(sum(v for v in doc["provider_cost_usd"].values() if v) + doc["dataflow_cost_usd"]["total"] + doc["storage_usd_per_month"])


@pytest.mark.parametrize(
    "manifest, flags",
    [
        ({}, (None, None, None)),
        ({"street": "mapillary", "aerial": "mapbox_satellite", "map": "osm"}, (None, None, None)),
        ({"street": "mapillary", "aerial": "mapbox_satellite", "map": "osm"}, ("google_streetview", "bing_aerial", "mapbox_satellite")),
        ({"aerial": "mapbox_satellite"}, ("mapillary", None, "osm")),
    ],
)
def test_estimate_and_build_choose_providers_by_one_rule(regions, manifest, flags):
    """`choose_providers`: a flag beats the manifest's `providers`, which beats the default, the
    same in `corebuild estimate` as in the build (`resolve_providers`)."""
    from corebuild.config import BuildConfig
    from corebuild.running.build import resolve_providers
    from corebuild.stages.fetch import AERIAL_PRESETS
    from corebuild.stages.fetch.aerial import AerialConfig

    street, aerial, map_ = flags
    r = dataclasses.replace(regions[0], providers=manifest)
    want_aerial, want_map = aerial or manifest.get("aerial"), map_ or manifest.get("map")
    built = resolve_providers(BuildConfig(region_id=r.id, street_provider=street, aerial_preset=aerial, map_preset=map_), r).fetch
    assert built.street_provider == (street or manifest.get("street") or "google_streetview")
    assert built.aerial == (AERIAL_PRESETS[want_aerial] if want_aerial else AerialConfig())
    assert built.map == (AERIAL_PRESETS[want_map] if want_map else None)
    est = estimate([r], street, "template", False, A, aerial, map_)
    assert est["choices"]["street_provider"] == [built.street_provider]
    grids = {f"aerial z{built.aerial.zoom} {built.aerial.tile_size}px"} | ({f"map z{built.map.zoom} {built.map.tile_size}px"} if built.map else set())
    assert set(est["tiles_per_crop"]) == grids


def test_the_build_default_and_its_own_aerial_url_are_kept(regions):
    from corebuild.config import BuildConfig
    from corebuild.running.build import resolve_providers
    from corebuild.stages.fetch.aerial import AerialConfig
    from corebuild.stages.fetch.fetcher import FetchConfig

    own = AerialConfig(url_template="https://tiles.example/{z}/{x}/{y}.jpg")
    cfg = BuildConfig(region_id="x", aerial_preset="bing_aerial", fetch=FetchConfig(street_provider="mapillary", aerial=own))
    fetch = resolve_providers(cfg, dataclasses.replace(regions[0], providers={"aerial": "mapbox_satellite"})).fetch
    assert fetch.street_provider == "mapillary" and fetch.aerial == own  # the config's default street; --aerial-url beats any preset
    with pytest.raises(ConfigError, match="unknown map preset 'nope'"):
        resolve_providers(dataclasses.replace(cfg, map_preset="nope"), regions[0])
