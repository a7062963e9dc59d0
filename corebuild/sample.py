"""Deterministic, equal-area point sampling inside a region polygon with a minimum spacing."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import shapely

from .geo import equal_area
from .record import Record, make_sample_id
from .regions import Region


@dataclass(frozen=True)
class SampleConfig:
    seed: int = 0
    min_spacing_m: float = 25.0
    # Stop after this many candidates per requested point; a shortfall is recorded, not hidden.
    max_candidates_per_point: int = 200
    limit: Optional[int] = None  # take only the first N points (tests, quick looks)


@dataclass(frozen=True)
class SampleResult:
    region_id: str
    requested: int
    points: tuple[tuple[float, float], ...]  # (lat, lon) in acceptance order
    shortfall_reason: Optional[str] = None


def _region_stream_seed(region_id: str, seed: int) -> list[int]:
    # Python's hash() is salted per process; a digest keeps runs and workers in agreement.
    digest = int.from_bytes(hashlib.sha256(region_id.encode()).digest()[:8], "big")
    return [seed, digest]


def sample_region(region: Region, cfg: SampleConfig) -> SampleResult:
    """Uniform points by area (in a local equal-area projection), at least `min_spacing_m` apart.

    Candidates are accepted in a fixed order, so the first k points of a run do not depend on
    the quota: `limit=k` gives a prefix of the full sample.
    """
    wanted = region.quota if cfg.limit is None else min(cfg.limit, region.quota)
    lat0, lon0 = region.centroid
    fwd, inv = equal_area(lat0, lon0)
    local = shapely.transform(region.polygon, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    shapely.prepare(local)
    minx, miny, maxx, maxy = local.bounds

    rng = np.random.default_rng(_region_stream_seed(region.id, cfg.seed))
    spacing = float(cfg.min_spacing_m)
    cell = spacing if spacing > 0 else 1.0
    grid: dict[tuple[int, int], list[tuple[float, float]]] = {}
    accepted: list[tuple[float, float]] = []
    budget = max(1, wanted) * cfg.max_candidates_per_point
    tried = 0
    batch = 4096
    while len(accepted) < wanted and tried < budget:
        xs = rng.uniform(minx, maxx, batch)
        ys = rng.uniform(miny, maxy, batch)
        tried += batch
        inside = shapely.contains_xy(local, xs, ys)
        for x, y in zip(xs[inside], ys[inside]):
            if spacing > 0:
                cx, cy = int(math.floor(x / cell)), int(math.floor(y / cell))
                close = False
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        for px, py in grid.get((cx + dx, cy + dy), ()):
                            if (px - x) ** 2 + (py - y) ** 2 < spacing * spacing:
                                close = True
                                break
                        if close:
                            break
                    if close:
                        break
                if close:
                    continue
                grid.setdefault((cx, cy), []).append((x, y))
            accepted.append((x, y))
            if len(accepted) == wanted:
                break

    shortfall = None
    if len(accepted) < wanted:
        shortfall = (
            f"polygon holds only {len(accepted)} of {wanted} points at {spacing:g} m spacing "
            f"after {tried} candidates"
        )
    if accepted:
        arr = np.asarray(accepted)
        lons, lats = inv.transform(arr[:, 0], arr[:, 1])
        points = tuple((float(la), float(lo)) for la, lo in zip(lats, lons))
    else:
        points = ()
    return SampleResult(region.id, wanted, points, shortfall)


def records_of(result: SampleResult, cfg: SampleConfig) -> list[Record]:
    return [
        Record(
            sample_id=make_sample_id(result.region_id, cfg.seed, i),
            region_id=result.region_id,
            seed=cfg.seed,
            point_index=i,
            lat=lat,
            lon=lon,
        )
        for i, (lat, lon) in enumerate(result.points)
    ]


def sample_records(region: Region, cfg: SampleConfig) -> list[Record]:
    return records_of(sample_region(region, cfg), cfg)
