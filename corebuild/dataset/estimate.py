"""`corebuild estimate`: what a build of some regions will ask of providers and cost, before it
runs. Counts come from the manifests' quotas and the yield assumed (a quota counts kept samples,
so a build samples about quota / expected yield points), rates from the demo build and the benchmarks,
prices from published list prices; every number is an `Assumptions` field printed with its
source, so a reader can see what each figure rests on and override what they know better."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from corebuild.assets import PROMPTS, locate
from corebuild.stages.describe import DESCRIBERS
from corebuild.stages.segment import SEGMENTERS
from corebuild.errors import ConfigError
from corebuild.stages.fetch import choose_providers
from corebuild.stages.fetch.aerial import AerialConfig, plan_crop
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.stages.fetch.streetview import StreetViewConfig
from corebuild.stages.sample import SampleConfig
from corebuild.regions import Region, load_all, load_region

PRICES_AS_OF = "2025-08"
CHECK = f"list price as of {PRICES_AS_OF}, check before spending"
DATAFLOW_SRC = "Dataflow batch list price, us-central1 (cloud.google.com/dataflow/pricing, as in apache-beam 2.77 testing/load_tests/dataflow_cost_consts.py)"
GIB = 2**30
# Dataflow GPU list prices (same source) and the worker machine each GPU comes on.
GPU_TYPES: dict[str, tuple[float, str, int, float]] = {  # name -> ($/GPU-h, host machine, host vCPUs, host GB)
    "nvidia-tesla-t4": (0.42, "n1-standard-8", 8, 30.0),
    "nvidia-l4": (0.672, "g2-standard-8", 8, 32.0),
    "nvidia-tesla-a100": (3.72, "a2-highgpu-1g", 12, 85.0),
    "nvidia-a100-80gb": (4.7137, "a2-ultragpu-1g", 12, 170.0),
}
STREET = ("google_streetview", "mapillary")
_SV = StreetViewConfig()
_SAMPLE = SampleConfig()
QUOTA_OF = ("kept", "sampled")


def _a(value: Any, src: str) -> Any:
    return dataclasses.field(default=value, metadata={"src": src})


@dataclass(frozen=True)
class Assumptions:
    # yield (demo build: 600 sampled, 48 street.zero_results, 27 street.duplicate, 525 kept)
    quota_of: str = _a(
        _SAMPLE.quota_of,
        "--quota-of (the build's default): kept: a build samples top-up rounds until each region keeps its quota, "
        "so points sampled = quota / expected_yield; sampled: quota points sampled, kept = quota x capture_rate",
    )
    expected_yield: float = _a(
        _SAMPLE.expected_yield,
        "--expected-yield (the build's default): share of sampled points kept, under --quota-of kept; the demo build "
        "measured about 87% (525/600) on synthetic imagery, real Street View yield depends on the region's coverage",
    )
    located_rate: float = _a(552 / 600, "demo build: 552/600 points had a panorama; real coverage varies by country (--quota-of kept: splits the points not kept)")
    capture_rate: float = _a(525 / 600, "demo build: 525/600 kept after 27 duplicate panoramas; the yield under --quota-of sampled")
    # requests per captured point
    headings: int = _a(len(_SV.headings), "StreetViewConfig.headings (0/90/180/270): one image request each")
    street_view_px: int = _a(_SV.width, "StreetViewConfig: 640x640 views")
    mapillary_px: tuple[int, int] = _a((1024, 768), "thumb_1024_url: 1024 px wide, 4:3 assumed")
    # bytes
    metadata_bytes: int = _a(600, "assumed: one Street View metadata JSON answer")
    street_image_bytes: int = _a(60_000, "assumed real 640 px JPEG (bench/bench_write.py uses 60 kB; synthetic demo views 23.5 kB)")
    mapillary_search_bytes: int = _a(20_000, "assumed: one bbox search answer (<= 100 images)")
    mapillary_image_bytes: int = _a(150_000, "assumed: one thumb_1024 JPEG")
    tile_bytes: int = _a(20_000, "assumed: one 256 px aerial JPEG tile (a 512 px tile counts 4x)")
    map_tile_bytes: int = _a(15_000, "assumed: one 256 px OSM PNG tile")
    aerial_crop_bytes: int = _a(60_000, "512x512 JPEG q90 crop written (demo measured 56 kB)")
    map_crop_bytes: int = _a(150_000, "assumed: 512x512 PNG map crop written")
    row_other_bytes: int = _a(2_000, "OCR, text, metadata columns per kept row (demo: 1.1 kB with template text)")
    failed_row_bytes: int = _a(500, "demo measured 0.48 kB per failure row")
    # CPU (vCPU-seconds)
    request_cpu_s: float = _a(1 / 635, "bench/fetch: HttpClient+decode 635 requests per CPU-s (metadata, searches)")
    image_cpu_s: float = _a(1 / 247, "bench/fetch: StreetView.capture 247 images per CPU-s (decode + checks)")
    tile_cpu_s: float = _a(1 / 369, "bench/fetch: XYZTiles.crop 369 tiles per CPU-s (stitch + encode included)")
    ocr_s_per_view: float = _a(0.2, "demo evidence stage ~0.2 s per 640 px view per core (bench_evidence: rapidocr 181 ms); scaled by pixels")
    template_cpu_s: float = _a(0.028, "demo build: template describe 0.028 s per row")
    client_cpu_s: float = _a(1 / 840, "bench_describe_client: openai client 840 requests per CPU-s")
    write_mb_per_cpu_s: float = _a(100.0, "assumed: Parquet zstd over JPEG bytes, MB per CPU-s")
    cpu_utilization: float = _a(0.75, "assumed share of billed vCPU time doing stage work (startup, shuffle, stragglers)")
    demo_vcpu_s_per_point: float = _a(2 * 385.63 / 600, "cross-check only: demo 600 points in 386 s on 2 cores, synthetic world rendered on the same cores")
    # GPU
    sam_s_per_view: float = _a(1.0, "assumed: SAM automatic masks per view on one GPU (CPU measured: vit_b encoder alone 17.7 s)")
    prompt_text_tokens: int = _a(532, "cvg-progressive-v1 system+user text, 4-view evidence with 2 OCR lines per view, 4 chars/token (measure_prompt_text_tokens)")
    image_patch_px: int = _a(28, "Qwen2-VL/2.5-VL: one image token per 28x28 px (after rounding to multiples of 28)")
    completion_tokens: int = _a(350, "final description ~126 tokens (CVG-Text mean) + road/buildings/environment ~60 each + JSON/signs ~40")
    gpu_tokens_per_s: float = _a(864.0, "output tokens/s per GPU, Qwen2-VL-7B on vLLM (field notes; prefill inside it); measure with bench/gpu_describe")
    gpu_type: str = _a("nvidia-l4", "Dataflow accelerator for the describe (and SAM) workers")
    gpu_hour: float = _a(GPU_TYPES["nvidia-l4"][0], "Dataflow $ per GPU-hour (list price, see notes)")
    gpu_host_vcpus: int = _a(GPU_TYPES["nvidia-l4"][2], "vCPUs of the machine one GPU comes on (GPU_TYPES; see notes), billed as Dataflow vCPU")
    gpu_host_mem_gb: float = _a(GPU_TYPES["nvidia-l4"][3], "memory of that machine, billed as Dataflow memory")
    # Dataflow workers
    worker_vcpus: int = _a(4, "assumed CPU worker n1-standard-4")
    worker_mem_gb: float = _a(15.0, "n1-standard-4 memory")
    worker_disk_gb: float = _a(25.0, "Dataflow batch default persistent disk with Dataflow Shuffle")
    vcpu_hour: float = _a(0.056, "Dataflow $ per vCPU-hour (list price, see notes)")
    mem_gb_hour: float = _a(0.003557, "Dataflow $ per GB-hour of memory (list price, see notes)")
    pd_gb_hour: float = _a(0.000054, "Dataflow $ per GB-hour of standard PD (list price, see notes)")
    # providers and storage
    sv_tiers: tuple[tuple[Optional[int], float], ...] = _a(
        ((10_000, 0.0), (100_000, 7.00), (500_000, 5.60), (None, 4.20)),
        "Static Street View SKU, $ per 1,000 images up to each monthly volume: 10k free, 7.00, 5.60, then 4.20 "
        "(500k-1M; beyond 1M assumed the same); one billing month (list price, see notes)",
    )
    sv_metadata_per_1000: float = _a(0.0, "Street View metadata requests are not charged (developers.google.com/maps/documentation/streetview/usage-and-billing)")
    mapillary_per_1000: float = _a(0.0, "Mapillary API v4: no charge (imagery CC BY-SA, rate-limited)")
    gcs_gb_month: float = _a(0.020, "GCS Standard storage, us-central1, $ per GiB-month (list price, see notes)")

    @staticmethod
    def sources() -> dict[str, str]:
        return {f.name: f.metadata["src"] for f in dataclasses.fields(Assumptions)}


def counts(quota: float, a: Assumptions) -> tuple[float, float, float]:
    """(points sampled, points with imagery found, points kept) for a quota. Linear in the
    quota, so the sum over regions is the counts of the summed quotas."""
    if a.quota_of == "sampled":
        return quota, quota * a.located_rate, quota * a.capture_rate
    points = quota / a.expected_yield
    # the points not kept split between no imagery and duplicates as the demo's failures did
    duplicate_share = _per(a.located_rate - a.capture_rate, 1 - a.capture_rate)
    return points, quota + (points - quota) * duplicate_share, quota


def check_quota(a: Assumptions) -> None:
    if a.quota_of not in QUOTA_OF:
        raise ConfigError(f"unknown --quota-of {a.quota_of!r}; known: {', '.join(QUOTA_OF)}")
    if not (math.isfinite(a.expected_yield) and 0 < a.expected_yield <= 1):
        raise ConfigError(f"--expected-yield must be a share in (0, 1], got {a.expected_yield!r}")


def with_gpu(a: Assumptions, gpu_type: str) -> Assumptions:
    if gpu_type not in GPU_TYPES:
        raise ConfigError(f"unknown GPU type {gpu_type!r}; known: {', '.join(GPU_TYPES)}")
    price, _, vcpus, mem = GPU_TYPES[gpu_type]
    return dataclasses.replace(a, gpu_type=gpu_type, gpu_hour=price, gpu_host_vcpus=vcpus, gpu_host_mem_gb=mem)


def measure_prompt_text_tokens(prompts_dir: str | Path = PROMPTS, prompt_id: str = "cvg-progressive-v1", ocr_lines: int = 2) -> int:
    """Text tokens of one describe request (system + user with a typical evidence block), at
    4 characters per token: how `Assumptions.prompt_text_tokens` was derived."""
    from corebuild.stages.describe import compass
    from corebuild.stages.describe.prompts import load_prompt

    body = load_prompt(prompts_dir, prompt_id).body
    views = [{"heading": h, "facing": compass(h), "ocr": [{"text": "EXAMPLE SHOP NAME", "confidence": 0.951}] * ocr_lines, "segments": []} for h in _SV.headings]
    evidence = json.dumps({"region": "Kuala Lumpur", "country": "MY", "views": views}, ensure_ascii=False, indent=1)
    headings = ", ".join(f"{h:g}" for h in _SV.headings)
    user = body["user"].format(n_views=len(views), region="Kuala Lumpur", country="MY", headings=headings, evidence=evidence, target_words=body["target_words"])
    return math.ceil((len(body["system"]) + len(user)) / 4)


def image_tokens(width: int, height: int, patch: int) -> int:
    return max(1, round(width / patch)) * max(1, round(height / patch))


# Seeded (lat, lon) crop centres; how a crop falls on the tile grid does not depend on where.
CROP_CENTRES: tuple[tuple[float, float], ...] = tuple(map(tuple, np.random.default_rng(0).uniform((-60, -170), (70, 170), (256, 2)).tolist()))


@lru_cache(maxsize=None)
def tiles_per_crop(zoom: int, size: int, tile_size: int) -> float:
    """Mean tiles one crop needs, from `plan_crop` (mercantile) at seeded centres: where the
    crop falls on the tile grid decides it (3x3 at 256 px unless a crop edge meets a tile edge)."""
    return float(np.mean([len(plan_crop(lat, lon, zoom, size, tile_size).tiles) for lat, lon in CROP_CENTRES]))


def tiered_cost(n: float, tiers: Sequence[tuple[Optional[int], float]]) -> float:
    """Cost of n units under monthly volume tiers (upper bound or None, $ per 1,000)."""
    cost, lo = 0.0, 0
    for hi, per_1000 in tiers:
        top = n if hi is None else min(n, hi)
        cost += max(0.0, top - lo) * per_1000 / 1000
        if hi is None or n <= hi:
            break
        lo = hi
    return cost


REQUEST_KINDS = ("street_metadata", "street_images", "mapillary_search", "mapillary_images", "aerial_tiles", "map_tiles", "lvlm")


@dataclass
class Tally:
    """Running sums over the regions of one estimate."""

    requests: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0.0))
    down: float = 0.0  # bytes downloaded
    written: float = 0.0  # bytes written to shards
    cpu_fetch: float = 0.0  # vCPU-seconds
    cpu_ocr: float = 0.0
    sam_s: float = 0.0  # GPU-seconds
    views: float = 0.0  # street views captured
    img_tokens: float = 0.0  # LVLM image tokens over all views
    providers: set[str] = dataclasses.field(default_factory=set)
    tiles_seen: dict[str, float] = dataclasses.field(default_factory=dict)  # tile grid -> tiles per crop


def region_sources(r: Region, street_provider: Optional[str], aerial_preset: Optional[str], map_preset: Optional[str]) -> tuple[str, AerialConfig, Optional[AerialConfig]]:
    """(street provider, aerial source, map source or None) for one region, by the rule
    `corebuild build` follows (`choose_providers`: flag > manifest > default)."""
    choice = choose_providers(street_provider, aerial_preset, map_preset, r.providers, FetchConfig().street_provider)
    if choice.street not in STREET:
        raise ConfigError(f"{r.id}: street provider {choice.street!r} cannot be estimated; use one of {', '.join(STREET)}")
    return choice.street, choice.aerial or AerialConfig(), choice.map


def _add_street(t: Tally, street: str, a: Assumptions, points: float, captured: float) -> tuple[int, tuple[int, int], int]:
    """The street provider's requests and search bytes; returns views per point, view pixels and bytes per view."""
    if street == "google_streetview":
        t.requests["street_metadata"] += points
        t.requests["street_images"] += captured * a.headings
        t.down += points * a.metadata_bytes
        return a.headings, (a.street_view_px, a.street_view_px), a.street_image_bytes
    t.requests["mapillary_search"] += points
    t.requests["mapillary_images"] += captured
    t.down += points * a.mapillary_search_bytes
    return 1, a.mapillary_px, a.mapillary_image_bytes


def _add_tiles(t: Tally, aerial: AerialConfig, mcfg: Optional[AerialConfig], captured: float) -> tuple[float, float]:
    """Aerial and map tile requests; returns tiles per crop for each (0 without a map)."""
    tpc = tiles_per_crop(aerial.zoom, aerial.size, aerial.tile_size)
    mtpc = tiles_per_crop(mcfg.zoom, mcfg.size, mcfg.tile_size) if mcfg else 0.0
    t.tiles_seen[f"aerial z{aerial.zoom} {aerial.tile_size}px"] = tpc
    if mcfg:
        t.tiles_seen[f"map z{mcfg.zoom} {mcfg.tile_size}px"] = mtpc
    t.requests["aerial_tiles"] += captured * tpc
    t.requests["map_tiles"] += captured * mtpc
    return tpc, mtpc


def add_region(t: Tally, r: Region, sources: tuple[str, AerialConfig, Optional[AerialConfig]], a: Assumptions, describer: str, segment: bool) -> None:
    """Add one region's requests, bytes and CPU/GPU seconds to `t`."""
    street, aerial, mcfg = sources
    t.providers.add(street)
    points, _, captured = counts(r.quota, a)
    views, px, img_bytes = _add_street(t, street, a, points, captured)
    tpc, mtpc = _add_tiles(t, aerial, mcfg, captured)
    t.requests["lvlm"] += captured if describer != "template" else 0.0
    # tile bytes are per 256-px tile; a 512-px tile holds four times the pixels
    t.down += captured * (views * img_bytes + tpc * a.tile_bytes * (aerial.tile_size / 256) ** 2)
    t.down += captured * mtpc * a.map_tile_bytes * ((mcfg.tile_size if mcfg else 256) / 256) ** 2
    t.written += captured * (views * img_bytes + a.aerial_crop_bytes + (a.map_crop_bytes if mcfg else 0) + a.row_other_bytes) + (points - captured) * a.failed_row_bytes
    t.cpu_fetch += points * a.request_cpu_s + captured * (views * a.image_cpu_s + (tpc + mtpc) * a.tile_cpu_s)
    t.cpu_ocr += captured * views * a.ocr_s_per_view * (px[0] * px[1]) / (640 * 640)
    t.sam_s += captured * views * a.sam_s_per_view if segment else 0.0
    t.views += captured * views
    t.img_tokens += captured * views * image_tokens(px[0], px[1], a.image_patch_px)


def _per(x: float, n: float) -> float:
    return x / n if n else 0.0


def cpu_figures(t: Tally, a: Assumptions, describer: str, points: float, captured: float) -> dict[str, Any]:
    """vCPU-seconds by stage, billed vCPU-hours and CPU worker-hours."""
    stages = {
        "fetch": t.cpu_fetch,
        "ocr": t.cpu_ocr,
        "describe": captured * {"template": a.template_cpu_s, "openai": a.client_cpu_s, "vllm": 0.0}[describer],
        "write": t.written / 1e6 / a.write_mb_per_cpu_s,
    }
    cpu_s = sum(stages.values())
    vcpu_h = cpu_s / 3600 / a.cpu_utilization
    return {
        "vcpu_s_by_stage": stages,
        "vcpu_s_per_point": _per(cpu_s, points),
        "vcpu_hours": vcpu_h,
        "worker_hours": vcpu_h / a.worker_vcpus,
        "views_per_captured_point": _per(t.views, captured),
    }


def gpu_figures(t: Tally, a: Assumptions) -> dict[str, Any]:
    describe_h = t.requests["lvlm"] * a.completion_tokens / a.gpu_tokens_per_s / 3600
    sam_h = t.sam_s / 3600
    return {"type": a.gpu_type, "describe_hours": describe_h, "sam_hours": sam_h, "hours": describe_h + sam_h}


def provider_costs(req: dict[str, float], a: Assumptions) -> dict[str, Optional[float]]:
    return {
        "street_images": tiered_cost(req["street_images"], a.sv_tiers),
        "street_metadata": req["street_metadata"] * a.sv_metadata_per_1000 / 1000,
        "mapillary": (req["mapillary_search"] + req["mapillary_images"]) * a.mapillary_per_1000 / 1000,
        "aerial_tiles": None,  # the tile source's own terms decide; no single list price
        "map_tiles": None,
    }


def dataflow_costs(cpu: dict[str, Any], gpu: dict[str, Any], a: Assumptions) -> dict[str, float]:
    """CPU workers plus the machines the GPUs come on, billed as Dataflow vCPU, memory and disk."""
    vcpu_h, worker_h, gpu_h = cpu["vcpu_hours"], cpu["worker_hours"], gpu["hours"]
    dataflow = {
        "vcpu": (vcpu_h + gpu_h * a.gpu_host_vcpus) * a.vcpu_hour,
        "memory": (worker_h * a.worker_mem_gb + gpu_h * a.gpu_host_mem_gb) * a.mem_gb_hour,
        "disk": (worker_h + gpu_h) * a.worker_disk_gb * a.pd_gb_hour,
        "gpu": gpu_h * a.gpu_hour,
    }
    dataflow["total"] = sum(dataflow.values())
    return dataflow


def quota_note(a: Assumptions) -> str:
    if a.quota_of == "sampled":
        return (
            "Quotas count sampled points (--quota-of sampled): every quota is assumed sampled in full in one round, "
            f"{a.capture_rate:.1%} of them kept (capture_rate); a shortfall lowers every figure."
        )
    return (
        f"Quotas count kept samples (--quota-of kept, the build's default): every quota is assumed kept in full, from "
        f"quota / {a.expected_yield:g} points sampled: yield assumed {a.expected_yield:.0%}, override with --expected-yield "
        "(the demo build measured about 87% on synthetic imagery; real Street View yield depends on the region's coverage). "
        "Metadata requests, searches and failure rows follow points sampled; images, tiles, OCR and describe follow kept samples. "
        "Not counted: points a last top-up round processed past the quota (trimmed), and shortfalls (candidates exhausted, --max-rounds)."
    )


def estimate_notes(a: Assumptions, describer: str) -> list[str]:
    return [
        f"Prices: {CHECK}. The total is one build plus one month of storage.",
        f"Dataflow and GPU prices: {DATAFLOW_SRC}. GCS: cloud.google.com/storage/pricing.",
        f"GPU workers: {a.gpu_type} on {GPU_TYPES.get(a.gpu_type, (0, 'a custom machine'))[1]}; --gpu-type picks {', '.join(GPU_TYPES)}.",
        "Street View: developers.google.com/maps/documentation/streetview/usage-and-billing (page of 2025-08-29: 7.00 / 5.60 per 1,000, "
        "volume pricing above 500k; metadata not charged) and the March 2025 change (10,000 free per Essentials SKU per month).",
        "Google Maps Platform Terms restrict bulk download, caching and ML-training use of Street View images: a price is not a licence.",
        "Aerial/map tiles are not priced: each tile source (Esri, Bing, Mapbox, OSM) has its own price and terms; "
        "OSM's tile policy forbids bulk downloads at high zoom without permission.",
        quota_note(a),
        "Retries, reruns without --cache and the cache's own bytes are not counted.",
    ] + (["The openai endpoint is priced as Dataflow GPU workers of this type (self-hosted vllm serve); a hosted API bills per token."] if describer == "openai" else [])


def estimate(
    regions: Sequence[Region],
    street_provider: Optional[str],
    describer: str,
    segment: bool,
    a: Assumptions,
    aerial_preset: Optional[str] = None,
    map_preset: Optional[str] = None,
) -> dict[str, Any]:
    """Requests, bytes, CPU/GPU hours and costs for building `regions`. A flag (street provider,
    presets) beats a manifest's `providers`, which beats the default, as in `corebuild build`."""
    if describer not in DESCRIBERS.names():
        raise ConfigError(f"unknown describer {describer!r}; known: {', '.join(DESCRIBERS.names())}")
    check_quota(a)
    t = Tally()
    for r in regions:
        add_region(t, r, region_sources(r, street_provider, aerial_preset, map_preset), a, describer, segment)
    quota = sum(r.quota for r in regions)
    points, located, captured = counts(quota, a)
    cpu, gpu = cpu_figures(t, a, describer, points, captured), gpu_figures(t, a)
    provider, dataflow = provider_costs(t.requests, a), dataflow_costs(cpu, gpu, a)
    storage = t.written / GIB * a.gcs_gb_month
    choices = {
        "street_provider": sorted(t.providers),
        "describer": describer,
        "segment": "sam" if segment else "off",
        "aerial_preset": aerial_preset,
        "map_preset": map_preset,
        "gpu_type": a.gpu_type,
    }
    return {
        "regions": len(regions),
        "quota": quota,
        "quota_of": a.quota_of,
        "points": points,
        "located": located,
        "captured": captured,
        "choices": choices,
        "requests": {k: round(v) for k, v in t.requests.items()},
        "tiles_per_crop": t.tiles_seen,
        "lvlm_tokens_per_request": {"prompt_text": a.prompt_text_tokens, "prompt_images": round(_per(t.img_tokens, captured)), "completion": a.completion_tokens},
        "provider_cost_usd": provider,
        "bytes": {"downloaded": round(t.down), "written": round(t.written)},
        "cpu": cpu,
        "gpu": gpu,
        "dataflow_cost_usd": dataflow,
        "storage_usd_per_month": storage,
        "total_usd": sum(v for v in provider.values() if v is not None) + dataflow["total"] + storage,
        "assumptions": {k: {"value": getattr(a, k), "source": s} for k, s in Assumptions.sources().items()},
        "notes": estimate_notes(a, describer),
    }


def _usd(v: Optional[float]) -> str:
    return "not priced" if v is None else f"${v:,.2f}"


def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def format_estimate(res: dict[str, Any]) -> str:
    """A table: each figure, then the assumptions it rests on; then every assumption with its
    value and source; then the caveats."""
    req, cpu, gpu, df, by, ch = res["requests"], res["cpu"], res["gpu"], res["dataflow_cost_usd"], res["bytes"], res["choices"]
    tok = res["lvlm_tokens_per_request"]
    tiles = ", ".join(f"{k}: {v:.2f}" for k, v in res["tiles_per_crop"].items())
    asm = {k: v["value"] for k, v in res["assumptions"].items()}
    quotas = f"sum of {res['regions']} manifest quotas: {res['quota']:,}"
    if res["quota_of"] == "sampled":
        counted = [
            ("points sampled", f"{res['points']:,.0f}", f"{quotas} (--quota-of sampled)"),
            ("points with imagery found", f"{res['located']:,.0f}", "located_rate (the rest: no imagery, failure rows)"),
            ("points kept (captured)", f"{res['captured']:,.0f}", "capture_rate (located minus duplicates)"),
        ]
    else:
        counted = [
            ("points sampled", f"{res['points']:,.0f}", f"quota / expected_yield ({quotas} kept, --quota-of kept)"),
            ("points with imagery found", f"{res['located']:,.0f}", "kept + the points not kept split as the demo's failures (located_rate, capture_rate)"),
            ("points kept (captured)", f"{res['captured']:,.0f}", "the quotas (--quota-of kept)"),
        ]
    counted.append(("yield (kept / sampled)", f"{_per(res['captured'], res['points']):.1%}", "capture_rate" if res["quota_of"] == "sampled" else "expected_yield (--expected-yield)"))
    rows: list[tuple[str, str, str]] = counted + [
        ("requests: street metadata", f"{req['street_metadata']:,}", "1 per point sampled (google_streetview)"),
        ("requests: street images", f"{req['street_images']:,}", "kept x headings"),
        ("requests: mapillary search", f"{req['mapillary_search']:,}", "1 per point sampled (mapillary)"),
        ("requests: mapillary images", f"{req['mapillary_images']:,}", "kept x 1 thumbnail"),
        ("requests: aerial tiles", f"{req['aerial_tiles']:,}", f"kept x tiles per crop ({tiles}; plan_crop/mercantile, 256 centres)"),
        ("requests: map tiles", f"{req['map_tiles']:,}", "kept x tiles per crop (--map-preset)"),
        ("requests: LVLM", f"{req['lvlm']:,}", f"1 per kept point ({ch['describer']})"),
        ("LVLM tokens per request", f"{tok['prompt_text']} + {tok['prompt_images']} image + {tok['completion']} out", "prompt_text_tokens, image_patch_px, completion_tokens"),
        ("cost: street images", _usd(res["provider_cost_usd"]["street_images"]), "sv_tiers"),
        ("cost: street metadata", _usd(res["provider_cost_usd"]["street_metadata"]), "sv_metadata_per_1000"),
        ("cost: mapillary", _usd(res["provider_cost_usd"]["mapillary"]), "mapillary_per_1000"),
        ("cost: aerial / map tiles", "not priced", "depends on the tile source (see notes)"),
        ("bytes downloaded", _gib(by["downloaded"]), "metadata_bytes, street_image_bytes, mapillary_search_bytes, mapillary_image_bytes, tile_bytes, map_tile_bytes"),
        ("bytes written (shards)", _gib(by["written"]), "street_image_bytes, aerial_crop_bytes, map_crop_bytes, row_other_bytes, failed_row_bytes"),
        ("CPU vCPU-s: fetch", f"{cpu['vcpu_s_by_stage']['fetch']:,.0f}", "request_cpu_s, image_cpu_s, tile_cpu_s"),
        ("CPU vCPU-s: OCR", f"{cpu['vcpu_s_by_stage']['ocr']:,.0f}", "ocr_s_per_view x views (the bottleneck)"),
        ("CPU vCPU-s: describe", f"{cpu['vcpu_s_by_stage']['describe']:,.0f}", "template_cpu_s / client_cpu_s (vllm: on GPU hosts)"),
        ("CPU vCPU-s: write", f"{cpu['vcpu_s_by_stage']['write']:,.0f}", "write_mb_per_cpu_s"),
        ("CPU vCPU-s per point", f"{cpu['vcpu_s_per_point']:.2f}", f"stages above; demo end to end {asm['demo_vcpu_s_per_point']:.2f} (demo_vcpu_s_per_point)"),
        ("CPU vCPU-hours billed", f"{cpu['vcpu_hours']:,.1f}", "cpu_utilization"),
        ("CPU worker-hours", f"{cpu['worker_hours']:,.1f}", "worker_vcpus"),
        ("GPU-hours: describe", f"{gpu['describe_hours']:,.1f}", f"requests x completion_tokens / gpu_tokens_per_s ({asm['gpu_tokens_per_s']:g} tok/s)"),
        ("GPU-hours: SAM", f"{gpu['sam_hours']:,.1f}", f"sam_s_per_view x views (segment {ch['segment']})"),
        ("Dataflow: vCPU", _usd(df["vcpu"]), "vcpu_hour (CPU workers + GPU hosts: gpu_host_vcpus)"),
        ("Dataflow: memory", _usd(df["memory"]), "mem_gb_hour, worker_mem_gb, gpu_host_mem_gb"),
        ("Dataflow: disk", _usd(df["disk"]), "pd_gb_hour, worker_disk_gb"),
        ("Dataflow: GPU", _usd(df["gpu"]), f"gpu_hour ({gpu['type']}, gpu_type)"),
        ("Dataflow total", _usd(df["total"]), ""),
        ("storage per month", _usd(res["storage_usd_per_month"]), "gcs_gb_month"),
        ("TOTAL (build + 1 month storage)", _usd(res["total_usd"]), "priced lines above"),
    ]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    what = ", ".join(f"{k} {'/'.join(v) if isinstance(v, list) else v}" for k, v in ch.items() if v)
    out = [f"corebuild estimate: {res['regions']} regions, {res['points']:,.0f} points ({what})", ""]
    out += [f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    out += ["", "assumptions (override in corebuild.dataset.estimate.Assumptions; --quota-of, --expected-yield, --gpu-tokens-per-s, --gpu-type):"]
    wa = max(len(k) for k in res["assumptions"])
    for k, v in res["assumptions"].items():
        val = f"{v['value']:.6g}" if isinstance(v["value"], float) else str(v["value"])
        out.append(f"  {k:<{wa}} = {val}  [{v['source']}]")
    out += ["", "notes:"] + [f"  - {n}" for n in res["notes"]]
    return "\n".join(out)


def select_regions(spec: str, manifests_dir: str | Path) -> list[Region]:
    """`all` (every manifest but synthetic ones such as `demo`) or comma-separated ids."""
    if spec.strip() == "all":
        regions, errors = load_all(manifests_dir)
        if errors:
            raise ConfigError(f"{len(errors)} bad manifest(s); first: {errors[0]}")
        return [r for r in regions if r.imagery != "synthetic"]
    known = {p.stem for p in locate(manifests_dir).glob("*.json")}
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in ids if i not in known]
    if unknown or not ids:
        raise ConfigError(f"unknown region {', '.join(map(repr, unknown)) or repr(spec)} in {manifests_dir} (see `corebuild regions list`)")
    return [load_region(i, manifests_dir) for i in dict.fromkeys(ids)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regions", default="all", help="all (the generated regions) or comma-separated ids (default all)")
    from corebuild.config import BuildConfig, add_data_flags
    from corebuild.options import add_flags

    add_data_flags(parser)
    add_flags(parser, BuildConfig, only=("--quota-of", "--expected-yield"))  # the build's defaults and help
    parser.add_argument("--street-provider", choices=STREET, default=None, help="overrides the manifests (default: manifest, else google_streetview)")
    parser.add_argument("--aerial-preset", default=None, help="aerial source preset (default: manifest, else XYZ z20 256 px)")
    parser.add_argument("--map-preset", default=None, help="add the map-tile modality, e.g. osm")
    parser.add_argument("--describer", choices=DESCRIBERS.names(), default="vllm", help="default vllm: a CORE-scale build describes with an LVLM")
    parser.add_argument("--segment", choices=("off", *SEGMENTERS), default="off")
    parser.add_argument("--gpu-tokens-per-s", type=float, default=None, help=f"LVLM output tokens/s per GPU (default {Assumptions().gpu_tokens_per_s:g})")
    parser.add_argument("--gpu-type", choices=tuple(GPU_TYPES), default="nvidia-l4", help="Dataflow accelerator and its list price")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    a = dataclasses.replace(with_gpu(Assumptions(), args.gpu_type), quota_of=args.quota_of, expected_yield=args.expected_yield)
    if args.gpu_tokens_per_s is not None:
        if not (math.isfinite(args.gpu_tokens_per_s) and 1e-3 <= args.gpu_tokens_per_s <= 1e9):
            raise ConfigError(f"--gpu-tokens-per-s must be a finite rate between 0.001 and 1e9, got {args.gpu_tokens_per_s!r}")
        a = dataclasses.replace(a, gpu_tokens_per_s=args.gpu_tokens_per_s)
    regions = select_regions(args.regions, args.manifests)
    res = estimate(regions, args.street_provider, args.describer, args.segment == "sam", a, args.aerial_preset, args.map_preset)
    print(json.dumps(res, indent=1) if args.json else format_estimate(res))
    return 0
