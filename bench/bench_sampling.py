"""Sample every point of the 225 regions (1,034,786) in one process and check the invariants.

Prints figures (points/s, peak RSS, checks) and the speed ratio against a per-point shapely
rejection sampler on a subset. Targets (issue 4): <= 10 s on one core (stretch <= 5 s),
peak RSS < 2 GB. Usage: python bench/bench_sampling.py
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402
from shapely.geometry import Point  # noqa: E402

from corebuild.geo import equal_area  # noqa: E402
from corebuild.regions.landmask import is_land, land_mask  # noqa: E402
from corebuild.regions import load_all  # noqa: E402
from corebuild.stages.sample import SampleConfig, sample_region  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchline import emit  # noqa: E402


def per_point_sampler(region, cfg: SampleConfig, n: int) -> list[tuple[float, float]]:
    """The straightforward way: one candidate at a time, shapely contains, a spacing grid."""
    lat0, lon0 = region.centroid
    fwd, inv = equal_area(lat0, lon0)
    local = shapely.transform(region.polygon, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    shapely.prepare(local)
    minx, miny, maxx, maxy = local.bounds
    rng = np.random.default_rng(cfg.seed)
    d = cfg.min_spacing_m
    grid: dict[tuple[int, int], list[tuple[float, float]]] = {}
    out = []
    while len(out) < n:
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if not local.contains(Point(x, y)):
            continue
        lon, lat = inv.transform(x, y)
        if not is_land(lat, lon):
            continue
        cx, cy = int(x // d), int(y // d)
        if any((px - x) ** 2 + (py - y) ** 2 < d * d for i in (-1, 0, 1) for j in (-1, 0, 1) for px, py in grid.get((cx + i, cy + j), ())):
            continue
        grid.setdefault((cx, cy), []).append((x, y))
        out.append((lat, lon))
    return out


def cold_mask_seconds() -> float:
    """Land-mask set-up on a machine without the cache (decompress + pack + save), in a child."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        code = "import time; t=time.perf_counter(); from corebuild.regions.landmask import land_mask; land_mask(); print(time.perf_counter()-t)"
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "COREBUILD_CACHE_DIR": d}, capture_output=True, text=True, check=True)
        return float(out.stdout.strip())


def main() -> int:
    cold_s = cold_mask_seconds()
    t0 = time.perf_counter()
    land_mask()
    mask_s = time.perf_counter() - t0
    regions, errors = load_all(ROOT / "region_manifests")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    regions = [r for r in regions if r.imagery != "synthetic"]
    cfg = SampleConfig()

    t0 = time.perf_counter()
    results = [sample_region(r, cfg) for r in regions]
    sample_s = time.perf_counter() - t0
    total = sum(len(res.points) for res in results)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024

    inside = spaced = on_land = True
    min_gap = math.inf
    for r, res in zip(regions, results):
        if not res.points:
            continue
        lat = np.array([p[0] for p in res.points])
        lon = np.array([p[1] for p in res.points])
        inside &= bool(shapely.contains_xy(r.polygon, lon, lat).all())
        on_land &= bool(is_land(lat, lon).all())
        fwd, _ = equal_area(*r.centroid)
        xy = np.column_stack(fwd.transform(lon, lat))
        if len(xy) > 1:
            gap = float(cKDTree(xy).query(xy, k=2)[0][:, 1].min())
            min_gap = min(min_gap, gap)
            spaced &= gap >= cfg.min_spacing_m * 0.999
    shortfalls = [(res.region_id, res.shortfall_reason) for res in results if res.shortfall_reason]
    quota = sum(r.quota for r in regions)

    subset = [r for r in regions if r.id in ("ch-zurich", "jp-tokyo", "ke-nairobi", "br-sao-paulo", "au-sydney")] or regions[:5]
    per_region = 2000
    t0 = time.perf_counter()
    for r in subset:
        per_point_sampler(r, cfg, per_region)
    base_rate = per_region * len(subset) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_fast = sum(len(sample_region(r, SampleConfig(limit=per_region)).points) for r in subset)
    fast_rate = n_fast / (time.perf_counter() - t0)

    rate = total / sample_s
    print(f"regions                 {len(regions)}")
    print(f"points                  {total:,} of quota {quota:,} (shortfalls: {len(shortfalls)})")
    print(f"land mask ready         {mask_s:.2f} s warm (memory-mapped cache); {cold_s:.2f} s cold (first run on a machine)")
    print(f"sampling                {sample_s:.2f} s  -> {rate:,.0f} points/s   target <= 10 s (stretch <= 5 s): {'met' if sample_s <= 10 else 'NOT met'}{' (stretch met)' if sample_s <= 5 else ''}")
    print(f"sampling + mask load    {sample_s + mask_s:.2f} s")
    print(f"peak RSS                {peak_gb:.2f} GB   target < 2 GB: {'met' if peak_gb < 2 else 'NOT met'}")
    print(f"invariants              inside={inside} on_land={on_land} spacing>=25m={spaced} (min gap {min_gap:.2f} m) count={total == quota}")
    print(f"per-point shapely loop  {base_rate:,.0f} points/s on {len(subset)} regions x {per_region}; this sampler {fast_rate:,.0f} points/s on the same: ratio {fast_rate / base_rate:.1f}x")
    for rid, why in shortfalls[:10]:
        print(f"  shortfall {rid}: {why}")
    ok = inside and spaced and on_land
    emit("sampling.points_per_s", "sampling points/s (all 1,034,786 points, one core)", round(rate), "points/s",
         f">= {quota / 10:,.0f} points/s (<= 10 s; stretch <= 5 s)", sample_s <= 10 and ok,
         f"{total:,} points in {sample_s:.2f} s{' (stretch met)' if sample_s <= 5 else ''}; {fast_rate / base_rate:.1f}x a per-point shapely loop; "
         f"invariants {'ok' if ok else 'BROKEN'}", seconds=round(sample_s, 3))
    emit("sampling.peak_rss", "sampling peak RSS", round(peak_gb, 3), "GB", "< 2 GB", peak_gb < 2)
    return 0 if inside and spaced and on_land else 1


if __name__ == "__main__":
    sys.exit(main())
