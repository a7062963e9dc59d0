"""Deterministic, equal-area, land-only point sampling with a minimum spacing, splittable into
chunks that workers sample independently and that still give the same global set.

How (all in a local Lambert azimuthal equal-area projection centred on the region):
1. The plane is cut into fixed CELL_M cells. Each cell holds a stratified, hashed stream of
   candidates: its count, positions and a random *rank* are a pure function of
   (seed, region id, cell), so any worker regenerates any cell without coordination.
2. Candidates outside the polygon or off land (global-land-mask) are dropped.
3. Spacing (Matérn type II hard core): a candidate survives if no valid candidate within
   `min_spacing_m` has a lower rank. Deciding that needs only the cells within the spacing
   distance, so a chunk (a block of cells) decides for its own candidates alone.
4. The region keeps its `quota` survivors of lowest rank, numbered in rank order. A `limit`
   takes a prefix. Fewer survivors than the quota is a recorded shortfall with its reason.
The candidate density is set from the region's land area so that about `oversample` x quota
candidates survive; the set does not depend on how cells are grouped into chunks.

Along roads (`roads`: a road network file, corebuild.stages.roads): the same, except that a
cell's candidates lie at hashed distances along the roads clipped to that cell, and the density
is per metre of road inside the polygon.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Optional

import numpy as np
import shapely
from scipy.spatial import cKDTree

from corebuild.geo import equal_area
from corebuild.options import option
from corebuild.regions.landmask import is_land
from corebuild.stages.roads import ROAD_TAGS, RoadNetwork, along, line_parts, load_roads
from corebuild.record import Record, make_sample_id
from corebuild.regions import Region

CELL_M = 500.0
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class SampleConfig:
    seed: int = option(0, flag="--seed", help="sampling seed: another seed, another set of points")
    min_spacing_m: float = option(25.0, flag="--min-spacing", help="metres between sampled points")
    land_only: bool = True
    oversample: float = 1.3  # survivors aimed at per requested point
    chunk_cells: int = 8  # chunk = chunk_cells x chunk_cells cells (4 km at 500 m cells)
    limit: Optional[int] = option(None, flag="--limit", help="only the first N sampled points (a prefix of the full sample)")
    # The file's bytes enter the config hash (BuildConfig.content_dict), not where it lies.
    roads: Optional[str] = option(
        None, flag="--roads", hashed=False, metavar="FILE", unset="the manifest's roads, else none: over the whole area",
        help="sample along the roads of this file (.osm.pbf / .osm, or GeoJSON lines with a highway property)",
    )
    road_tags: tuple[str, ...] = option(ROAD_TAGS, flag="--road-tags", metavar="TAG,TAG", help="the highway values that count as roads (with --roads)")
    # What a region's quota counts. "kept": top-up rounds (corebuild.running.rounds) sample the
    # next points of the rank order until the region holds its quota of kept samples.
    quota_of: str = option("kept", flag="--quota-of", choices=("kept", "sampled"), help="what a region's quota (and --limit) counts: kept samples (top-up rounds) or sampled points")
    # Sizes the candidate pool under --quota-of kept (about oversample x quota / expected_yield
    # survivors) and corebuild estimate's requests; the rounds themselves use the measured yield.
    expected_yield: float = option(0.5, flag="--expected-yield", help="share of sampled points expected to be kept (sizes the candidate pool and the estimate)")
    max_rounds: int = option(5, flag="--max-rounds", hashed=False, help="at most this many sampling rounds per build (--quota-of kept)")
    round_margin: float = option(1.1, hashed=False)  # a top-up round asks for this much more than the measured yield needs


@dataclass(frozen=True)
class SampleResult:
    region_id: str
    requested: int
    points: tuple[tuple[float, float], ...]  # (lat, lon) in rank order
    shortfall_reason: Optional[str] = None


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised on uint64 (wraps modulo 2**64 by design)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x ^ (x >> np.uint64(31))


def _uniform(key: np.ndarray, stream: int) -> np.ndarray:
    """A uniform float in [0, 1) per key, independent across streams."""
    h = _splitmix(key ^ _splitmix(np.full(key.shape, stream, dtype=np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _region_key(region_id: str, seed: int) -> np.uint64:
    # Python's hash() is salted per process; a digest keeps workers and runs in agreement.
    digest = int.from_bytes(hashlib.sha256(f"{region_id}\0{seed}".encode()).digest()[:8], "big")
    return np.uint64(digest)


class SamplingPlan:
    """Everything about a region's sample that does not depend on chunking."""

    def __init__(self, region: Region, cfg: SampleConfig):
        self.region, self.cfg = region, cfg
        # The region's target: its quota, or --limit's prefix of it (kept samples, or sampled
        # points under --quota-of sampled). A top-up round samples more than this (select's `take`).
        self.wanted = region.quota if cfg.limit is None else min(cfg.limit, region.quota)
        lat0, lon0 = region.centroid
        self.fwd, self.inv = equal_area(lat0, lon0)
        # Densify first (~1 km steps) so the projected outline follows the lon/lat edges closely.
        dense = shapely.segmentize(region.polygon, 0.01)
        self.local = shapely.transform(dense, lambda xy: np.column_stack(self.fwd.transform(xy[:, 0], xy[:, 1])))
        shapely.prepare(self.local)
        shapely.prepare(region.polygon)
        self.near = self.local.buffer(1.0)  # covers the bend of lon/lat edges (far below 1 m here)
        shapely.prepare(self.near)
        self.key = _region_key(region.id, cfg.seed)
        minx, miny, maxx, maxy = self.local.bounds
        self.cells_x = (math.floor(minx / CELL_M), math.floor(maxx / CELL_M))
        self.cells_y = (math.floor(miny / CELL_M), math.floor(maxy / CELL_M))

    # --- roads ------------------------------------------------------------------------------
    @cached_property
    def roads(self) -> Optional[RoadNetwork]:
        """The road network near the polygon in the local plane (read once per plan), or None."""
        if self.cfg.roads is None:
            return None
        lines, _ = load_roads(self.cfg.roads, tuple(self.cfg.road_tags))
        minx, miny, maxx, maxy = self.region.polygon.bounds
        near = lines[shapely.intersects(lines, shapely.box(minx - 0.01, miny - 0.01, maxx + 0.01, maxy + 0.01))]
        # Densified (~1 km) like the polygon, so projected lines follow their lon/lat course.
        dense = shapely.segmentize(near, 0.01)
        return RoadNetwork(shapely.transform(dense, lambda xy: np.column_stack(self.fwd.transform(xy[:, 0], xy[:, 1]))))

    @cached_property
    def road_length_m(self) -> float:
        """Length of road inside the polygon (on land), measured at 4096 fixed points along it."""
        parts, _ = line_parts(shapely.intersection(self.roads.lines, self.local))
        if not len(parts):
            return 0.0
        inside = shapely.multilinestrings(parts)
        at = shapely.line_interpolate_point(inside, (np.arange(4096) + 0.5) / 4096, normalized=True)
        return float(inside.length * self._valid(shapely.get_x(at), shapely.get_y(at)).mean())

    # --- density ----------------------------------------------------------------------------
    @property
    def pool_quota(self) -> float:
        """Points the candidate pool must hold: the quota, or under --quota-of kept the points
        expected to be sampled to keep it (quota / expected yield)."""
        if self.cfg.quota_of == "kept":
            return self.region.quota / min(max(self.cfg.expected_yield, 0.01), 1.0)
        return float(self.region.quota)

    @cached_property
    def extent(self) -> float:
        """What candidates spread over: land area (m²), or along roads their length (m)."""
        return self.land_area_m2 if self.roads is None else self.road_length_m

    @cached_property
    def land_area_m2(self) -> float:
        """Land area inside the polygon, measured on a fixed 64x64 grid (deterministic)."""
        minx, miny, maxx, maxy = self.local.bounds
        xs, ys = np.meshgrid(np.linspace(minx, maxx, 64), np.linspace(miny, maxy, 64))
        xs, ys = xs.ravel(), ys.ravel()
        ok = self._valid(xs, ys)
        return float(self.local.area * ok.mean() / max(shapely.contains_xy(self.local, xs, ys).mean(), 1e-12))

    @cached_property
    def density(self) -> float:
        """Candidates per m² (per m of road) so that ~oversample x quota survive the hard-core
        thinning. Matérn II keeps (1 - exp(-λc)) / c per unit for c = π d² (2 d along a road)."""
        target = self.cfg.oversample * self.pool_quota
        area = self.extent
        if area <= 0:
            return 0.0
        d = self.cfg.min_spacing_m
        if d <= 0:
            return target / area
        c = math.pi * d * d if self.roads is None else 2 * d
        need = target * c / area
        return -math.log(1 - need) / c if need < 0.95 else -math.log(0.05) / c

    # --- candidates -------------------------------------------------------------------------
    def cell_candidates(self, ix: np.ndarray, iy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, rank) of every candidate in the given cells; a pure function of each cell."""
        ix = np.asarray(ix, dtype=np.int64)
        iy = np.asarray(iy, dtype=np.int64)
        ckey = _splitmix(_splitmix(np.full(ix.shape, self.key, dtype=np.uint64) ^ ix.astype(np.uint64)) ^ iy.astype(np.uint64))
        if self.roads is not None:
            return self._road_candidates(ix, iy, ckey)
        mean = self.density * CELL_M * CELL_M
        counts = np.floor(mean + _uniform(ckey, 0)).astype(np.int64)  # stratified: mean on average
        total = int(counts.sum())
        if total == 0:
            empty = np.empty(0)
            return empty, empty, empty
        owner = np.repeat(np.arange(len(ckey)), counts)
        j = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        k = _splitmix(ckey[owner] ^ j.astype(np.uint64))
        x = (ix[owner] + _uniform(k, 1)) * CELL_M
        y = (iy[owner] + _uniform(k, 2)) * CELL_M
        return x, y, _uniform(k, 3)

    def _road_candidates(self, ix: np.ndarray, iy: np.ndarray, ckey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates at hashed distances along each cell's own stretch of road."""
        xs, ys, ranks = [], [], []
        for i, (pieces, cum) in enumerate(self.roads.cells(ix, iy, CELL_M)):
            if not len(cum):
                continue
            n = int(np.floor(self.density * cum[-1] + _uniform(ckey[i : i + 1], 0))[0])
            k = _splitmix(np.full(n, ckey[i], dtype=np.uint64) ^ np.arange(n, dtype=np.uint64))
            x, y = along(pieces, cum, _uniform(k, 1) * cum[-1])
            # A point on the cell's edge belongs to the neighbour's stream: dropped here, so
            # every chunk owns exactly the candidates in its own cells.
            mine = (np.floor(x / CELL_M) == ix[i]) & (np.floor(y / CELL_M) == iy[i])
            xs.append(x[mine])
            ys.append(y[mine])
            ranks.append(_uniform(k, 3)[mine])
        if not xs:
            return np.empty(0), np.empty(0), np.empty(0)
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ranks)

    def _valid(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # The projected polygon prefilters cheaply; the manifest's lon/lat polygon decides
        # (GeoJSON edges are straight in lon/lat, slightly curved in the projection).
        near = shapely.contains_xy(self.near, x, y)
        ok = np.zeros(len(x), dtype=bool)
        if near.any():
            lon, lat = self.inv.transform(x[near], y[near])
            inside = shapely.contains_xy(self.region.polygon, lon, lat)
            if self.cfg.land_only:
                inside[inside] = is_land(lat[inside], lon[inside])
            ok[near] = inside
        return ok

    # --- chunks -----------------------------------------------------------------------------
    def chunks(self) -> list[tuple[int, int]]:
        """Chunk origins (in cells) whose square meets the polygon."""
        k = self.cfg.chunk_cells
        out = []
        for cx in range(self.cells_x[0] // k, self.cells_x[1] // k + 1):
            for cy in range(self.cells_y[0] // k, self.cells_y[1] // k + 1):
                sq = shapely.box(cx * k * CELL_M, cy * k * CELL_M, (cx + 1) * k * CELL_M, (cy + 1) * k * CELL_M)
                if self.local.intersects(sq):
                    out.append((cx, cy))
        return out

    def _block(self, x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1), indexing="ij")
        return gx.ravel(), gy.ravel()

    def survivors(self, cell_range: Optional[tuple[int, int, int, int]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, rank) of the candidates in a block of cells (default: the whole region) that
        survive validity and the spacing rule, judged with their neighbours outside the block."""
        if cell_range is None:
            cell_range = (*self.cells_x, *self.cells_y)
        x0, x1, y0, y1 = cell_range
        d = self.cfg.min_spacing_m
        halo = math.ceil(d / CELL_M) if d > 0 else 0
        gx, gy = self._block(x0 - halo, x1 + halo, y0 - halo, y1 + halo)
        x, y, rank = self.cell_candidates(gx, gy)
        lo_x, hi_x, lo_y, hi_y = x0 * CELL_M, (x1 + 1) * CELL_M, y0 * CELL_M, (y1 + 1) * CELL_M
        own = (x >= lo_x) & (x < hi_x) & (y >= lo_y) & (y < hi_y)
        near = (x >= lo_x - d) & (x < hi_x + d) & (y >= lo_y - d) & (y < hi_y + d)
        x, y, rank, own = x[near], y[near], rank[near], own[near]
        ok = self._valid(x, y)
        x, y, rank, own = x[ok], y[ok], rank[ok], own[ok]
        beaten = np.zeros(len(x), dtype=bool)
        if d > 0 and len(x) > 1:
            pairs = cKDTree(np.column_stack([x, y])).query_pairs(d, output_type="ndarray")
            if len(pairs):
                a, b = pairs[:, 0], pairs[:, 1]
                beaten[np.where(rank[a] > rank[b], a, b)] = True
        keep = own & ~beaten
        return x[keep], y[keep], rank[keep]

    def chunk_survivors(self, chunk: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.cfg.chunk_cells
        cx, cy = chunk
        return self.survivors((cx * k, cx * k + k - 1, cy * k, cy * k + k - 1))

    # --- selection --------------------------------------------------------------------------
    def select(self, x: np.ndarray, y: np.ndarray, rank: np.ndarray, take: Optional[int] = None) -> SampleResult:
        """The `take` (default `wanted`) survivors of lowest rank, as (lat, lon) in rank order."""
        take = self.wanted if take is None else take
        order = np.argsort(rank, kind="stable")[:take]
        lon, lat = self.inv.transform(x[order], y[order])
        points = tuple(zip(np.asarray(lat, float).tolist(), np.asarray(lon, float).tolist()))
        shortfall = None
        if len(points) < take:
            d = self.cfg.min_spacing_m
            if self.roads is not None:
                why = "no roads inside the polygon" if self.extent <= 0 else f"{self.extent / 1e3:.1f} km of roads hold only {len(points)} points {d:g} m apart"
            elif self.land_area_m2 <= 0:
                why = "no land inside the polygon" if self.cfg.land_only else "empty polygon"
            else:
                why = f"{self.land_area_m2 / 1e6:.2f} km² of {'land' if self.cfg.land_only else 'area'} holds only {len(points)} points {d:g} m apart"
            shortfall = f"{why} (wanted {take})"
        return SampleResult(self.region.id, take, points, shortfall)


def sample_region(region: Region, cfg: SampleConfig) -> SampleResult:
    plan = SamplingPlan(region, cfg)
    return plan.select(*plan.survivors())


def sample_chunks(region: Region, cfg: SampleConfig) -> Iterator[tuple[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """What Beam workers do, one chunk each: the union of these selects the same points."""
    plan = SamplingPlan(region, cfg)
    for chunk in plan.chunks():
        yield chunk, plan.chunk_survivors(chunk)


def iter_records(result: SampleResult, cfg: SampleConfig) -> Iterator[Record]:
    """One record at a time (the pipeline packs each before making the next: a million points'
    records at once are ~0.6 GB in a worker)."""
    for i, (lat, lon) in enumerate(result.points):
        yield Record(sample_id=make_sample_id(result.region_id, cfg.seed, i), region_id=result.region_id, seed=cfg.seed, point_index=i, lat=lat, lon=lon)


def records_of(result: SampleResult, cfg: SampleConfig) -> list[Record]:
    return list(iter_records(result, cfg))


def sample_records(region: Region, cfg: SampleConfig) -> list[Record]:
    return records_of(sample_region(region, cfg), cfg)
