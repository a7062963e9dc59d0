"""Train/val/test assignments without geographic leakage (`corebuild splits`).

Two schemes:

* `blocks`: the globe is cut into `block_km` squares of EASE-Grid 2.0 (EPSG:6933, cylindrical
  equal-area, so a block covers the same area at any latitude); every point in a block gets the
  block's split, chosen by a seeded hash of the block id against the ratios. The hash depends on
  the block id and seed only, so adding regions later never moves existing assignments.
* `continents` (CORE-style intercontinental): points on `test_continents` are test, on
  `val_continents` val, the rest train. With no `val_continents`, val is carved out of the train
  continents by the same block rule with ratios train:val (the test ratio is unused).

Then a minimum distance (default 1 km, as OSV-5M): a point closer than `min_distance_m` to a point
of another split leaks. Leaks are resolved OSV-5M style by excluding points from the less
protected split (train before val, val before test): first val points near test, then train
points near the surviving val/test points. Only points are dropped, so resolution never makes a
new leak; exclusions do depend on the neighbouring points that exist. Distances are great-circle
on a sphere of mean Earth radius (chord distances on a cKDTree of unit vectors); the WGS84
geodesic distance differs by under 0.6%.

Output: `<out>/splits/<name>.parquet` (one row per kept sample) and `<out>/splits/<name>.json`
(config, counts, checks), written in that order so the .json marks a complete pair.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyproj import Transformer
from scipy.spatial import cKDTree

from corebuild.dataset.reader import BuildRef, find_builds
from corebuild.errors import ConfigError, CorebuildError
from corebuild.regions import CONTINENTS
from corebuild.shards.storage import open_storage

SPLITS = ("train", "val", "test")  # also the protection order: train points are dropped first
EXCLUDED = "excluded"
SCHEMES = ("blocks", "continents")
EARTH_RADIUS_M = 6371008.8  # IUGG mean radius
READ_COLUMNS = ("sample_id", "region_id", "lat", "lon", "status")
SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("region_id", pa.string(), nullable=False),
        pa.field("continent", pa.string()),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("block", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("excluded_reason", pa.string()),
    ]
)

_TO_EASE = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
_FROM_EASE = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True)


@dataclass(frozen=True)
class SplitConfig:
    scheme: str = "blocks"
    block_km: float = 10.0
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_distance_m: float = 1000.0
    seed: int = 0
    test_continents: tuple[str, ...] = ()
    val_continents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in ("ratios", "test_continents", "val_continents"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if self.scheme not in SCHEMES:
            raise ConfigError(f"splits: scheme {self.scheme!r} not one of {', '.join(SCHEMES)}")
        if not (isinstance(self.block_km, (int, float)) and math.isfinite(self.block_km) and self.block_km > 0):
            raise ConfigError(f"splits: block_km must be a positive number, not {self.block_km!r}")
        if not (isinstance(self.min_distance_m, (int, float)) and math.isfinite(self.min_distance_m) and self.min_distance_m >= 0):
            raise ConfigError(f"splits: min_distance_m must be >= 0, not {self.min_distance_m!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"splits: seed must be an integer, not {self.seed!r}")
        r = self.ratios
        if len(r) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in r) or abs(sum(r) - 1) > 1e-6 or r[0] <= 0:
            raise ConfigError(f"splits: ratios must be three numbers >= 0 (train > 0) summing to 1, not {','.join(map(str, r))}")
        for c in self.test_continents + self.val_continents:
            if c not in CONTINENTS:
                raise ConfigError(f"splits: unknown continent {c!r}; one of {', '.join(CONTINENTS)}")
        if self.scheme == "blocks" and (self.test_continents or self.val_continents):
            raise ConfigError("splits: test/val continents need scheme 'continents'")
        if self.scheme == "continents":
            if not self.test_continents:
                raise ConfigError("splits: scheme 'continents' needs at least one test continent")
            both = sorted(set(self.test_continents) & set(self.val_continents))
            if both:
                raise ConfigError(f"splits: {', '.join(both)} both a test and a val continent")
        # Floats, so 10 and 10.0 give the same .json bytes.
        for f in ("block_km", "min_distance_m"):
            object.__setattr__(self, f, float(getattr(self, f)))
        object.__setattr__(self, "ratios", tuple(float(x) for x in self.ratios))


def default_name(cfg: SplitConfig) -> str:
    if cfg.scheme == "blocks":
        return f"blocks-{cfg.block_km:g}km"
    name = "continents-test-" + "-".join(c.replace(" ", "") for c in cfg.test_continents)
    return name + ("-val-" + "-".join(c.replace(" ", "") for c in cfg.val_continents) if cfg.val_continents else "")


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        r = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"splits: ratios {text!r} are not numbers; e.g. 0.8,0.1,0.1") from None
    if len(r) != 3:
        raise ConfigError(f"splits: ratios {text!r} need three values train,val,test; e.g. 0.8,0.1,0.1")
    return r  # type: ignore[return-value]


def parse_continents(text: Optional[str]) -> tuple[str, ...]:
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


# --- blocks -------------------------------------------------------------------------------------


def block_ids(lat: np.ndarray, lon: np.ndarray, block_km: float) -> np.ndarray:
    """EASE-Grid 2.0 block of each point, as "ix_iy" strings."""
    x, y = _TO_EASE.transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    size = block_km * 1000.0
    ix, iy = np.floor(np.asarray(x) / size).astype(np.int64), np.floor(np.asarray(y) / size).astype(np.int64)
    return np.array([f"{a}_{b}" for a, b in zip(ix.tolist(), iy.tolist())], dtype=object)


def block_polygon(block: str, block_km: float, per_side: int = 64) -> list[tuple[float, float]]:
    """The block's outline as closed (lon, lat) ring, each side densified (sides are parallels/meridians)."""
    ix, iy = (int(v) for v in block.split("_"))
    size = block_km * 1000.0
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)
    x0, y0 = ix * size, iy * size
    xs = np.concatenate([x0 + t * size, np.full(per_side, x0 + size), x0 + size - t * size, np.full(per_side, x0)])
    ys = np.concatenate([np.full(per_side, y0), y0 + t * size, np.full(per_side, y0 + size), y0 + size - t * size])
    lon, lat = _FROM_EASE.transform(xs, ys)
    ring = list(zip(np.asarray(lon).tolist(), np.asarray(lat).tolist()))
    return ring + ring[:1]


def block_unit(block: str, seed: int) -> float:
    """A uniform number in [0, 1) from the block id and seed alone (stable across runs and Python versions)."""
    h = hashlib.blake2b(f"{seed}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def _by_block(blocks: np.ndarray, seed: int, cuts: Sequence[float], names: Sequence[str]) -> np.ndarray:
    """`names[k]` for the first cut a block's hash falls under (the last name otherwise)."""
    uniq, inverse = np.unique(blocks.astype(str), return_inverse=True)
    u = np.array([block_unit(b, seed) for b in uniq.tolist()])
    pick = np.searchsorted(np.asarray(cuts, dtype=float), u, side="right")
    return np.asarray(names, dtype=object)[np.minimum(pick, len(names) - 1)][inverse.reshape(-1)]


# --- distances ----------------------------------------------------------------------------------


def unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(np.asarray(lat, dtype=float)), np.radians(np.asarray(lon, dtype=float))
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)]).reshape(-1, 3)


def _chord(metres: float) -> float:
    return 2.0 * math.sin(min(metres / EARTH_RADIUS_M, math.pi) / 2.0)


def _metres(chord: np.ndarray | float) -> np.ndarray | float:
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0))


def _resolve_min_distance(xyz: np.ndarray, split: np.ndarray, min_distance_m: float) -> np.ndarray:
    """Excluded reasons ("near_<split>" or None) so no two points of different splits are closer than the limit."""
    reason = np.full(len(split), None, dtype=object)
    if min_distance_m <= 0 or len(split) == 0:
        return reason
    r = _chord(min_distance_m)
    for level in (1, 0):  # val first: a val point dropped near test then protects no train point
        low = np.flatnonzero(split == SPLITS[level])
        high = np.flatnonzero(np.isin(split, SPLITS[level + 1 :]) & (reason == None))  # noqa: E711 (elementwise)
        if len(low) == 0 or len(high) == 0:
            continue
        d, j = cKDTree(xyz[high]).query(xyz[low], k=1, distance_upper_bound=r)
        leak = d < r
        reason[low[leak]] = ["near_" + s for s in split[high[j[leak]]].tolist()]
    return reason


# --- assign / check ------------------------------------------------------------------------------


def read_points(builds: Sequence[BuildRef]) -> pa.Table:
    """sample_id, region_id, continent, lat, lon, status of every row of the builds' shards."""
    parts = []
    for b in builds:
        for name in b.shard_names():
            t = b.read_table(name, READ_COLUMNS)
            parts.append(t.append_column("continent", pa.array([b.continent] * t.num_rows, pa.string())))
    if not parts:
        return pa.table({c: pa.array([], pa.float64() if c in ("lat", "lon") else pa.string()) for c in READ_COLUMNS + ("continent",)})
    return pa.concat_tables(parts).select(["sample_id", "region_id", "continent", "lat", "lon", "status"])


def assign_splits(points: pa.Table, cfg: SplitConfig) -> pa.Table:
    """One row per kept point (failed rows have no images), sorted by region then sample id, in SCHEMA."""
    if "status" in points.column_names:
        points = points.filter(pc.equal(points["status"], "kept"))
    if points.num_rows == 0:
        raise ConfigError("splits: no kept samples in the given builds")
    points = points.take(pc.sort_indices(points, [("region_id", "ascending"), ("sample_id", "ascending")]))
    ids = points["sample_id"].to_numpy(zero_copy_only=False)
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = str(uniq[counts > 1][0])
        raise CorebuildError(f"splits: sample_id {dup!r} appears more than once (the same build given twice?)")
    lat, lon = points["lat"].to_numpy(zero_copy_only=False), points["lon"].to_numpy(zero_copy_only=False)
    continent = np.asarray(points["continent"].to_pylist(), dtype=object)
    blocks = block_ids(lat, lon, cfg.block_km)
    tr, va, _ = (x / sum(cfg.ratios) for x in cfg.ratios)
    if cfg.scheme == "blocks":
        split = _by_block(blocks, cfg.seed, [tr, tr + va], SPLITS)
    else:
        missing = sorted({r for r, c in zip(points["region_id"].to_pylist(), continent.tolist()) if c is None})
        if missing:
            raise ConfigError(f"splits: region(s) {', '.join(missing)} have no continent in their manifest")
        present = set(continent.tolist())
        absent = [c for c in cfg.test_continents + cfg.val_continents if c not in present]
        if absent:
            raise ConfigError(f"splits: no kept samples on {', '.join(absent)}; builds are on {', '.join(sorted(present))}")
        is_test, is_val = np.isin(continent, cfg.test_continents), np.isin(continent, cfg.val_continents)
        if (is_test | is_val).all():
            raise ConfigError("splits: every build is on a test/val continent, so train would be empty")
        rest = ["train"] * len(continent) if cfg.val_continents else _by_block(blocks, cfg.seed, [tr / (tr + va)], ("train", "val"))
        split = np.where(is_test, "test", np.where(is_val, "val", np.asarray(rest, dtype=object))).astype(object)
    reason = _resolve_min_distance(unit_xyz(lat, lon), split, cfg.min_distance_m)
    split = np.where(reason == None, split, EXCLUDED)  # noqa: E711
    return pa.table(
        [points["sample_id"], points["region_id"], pa.array(continent.tolist(), pa.string()), points["lat"], points["lon"],
         pa.array(blocks.tolist(), pa.string()), pa.array(split.tolist(), pa.string()), pa.array(reason.tolist(), pa.string())],
        schema=SCHEMA,
    )


def check_splits(table: pa.Table, cfg: Optional[SplitConfig] = None) -> dict[str, Any]:
    """Leak measures of an assignment (excluded rows ignored). With `cfg`, adds `problems` (what
    breaks the scheme's promises) and `ok`."""
    split = np.asarray(table["split"].to_pylist(), dtype=object)
    ids = table["sample_id"].to_pylist()
    blocks = np.asarray(table["block"].to_pylist(), dtype=object)
    continents = table["continent"].to_pylist()
    in_split = {s: np.flatnonzero(split == s) for s in SPLITS}
    block_splits: dict[str, set[str]] = {}
    cont_splits: dict[Any, set[str]] = {}
    for k in np.flatnonzero(split != EXCLUDED).tolist():
        block_splits.setdefault(blocks[k], set()).add(split[k])
        cont_splits.setdefault(continents[k], set()).add(split[k])
    xyz = unit_xyz(table["lat"].to_numpy(zero_copy_only=False), table["lon"].to_numpy(zero_copy_only=False))
    best: tuple[float, Optional[list[str]]] = (math.inf, None)
    for a in range(3):
        for b in range(a + 1, 3):
            ia, ib = in_split[SPLITS[a]], in_split[SPLITS[b]]
            if len(ia) and len(ib):
                d, j = cKDTree(xyz[ib]).query(xyz[ia], k=1)
                m = int(np.argmin(d))
                if d[m] < best[0]:
                    best = (float(d[m]), [ids[ia[m]], ids[ib[j[m]]]])
    named = sorted(c for c in cont_splits if c is not None)
    out: dict[str, Any] = {
        "rows": len(ids),
        "duplicate_sample_ids": len(ids) - len(set(ids)),
        "blocks_shared": sum(len(v) > 1 for v in block_splits.values()),
        "min_cross_split_distance_m": None if best[1] is None else round(float(_metres(best[0])), 3),
        "closest_cross_split_pair": best[1],
        "continents_by_split": {s: sorted(c for c in named if s in cont_splits[c]) for s in SPLITS},
        "continents_shared": [c for c in named if len(cont_splits[c]) > 1],
        "continents_shared_with_test": [c for c in named if "test" in cont_splits[c] and len(cont_splits[c]) > 1],
    }
    if cfg is not None:
        problems = []
        if out["duplicate_sample_ids"]:
            problems.append(f"{out['duplicate_sample_ids']} sample ids assigned more than once")
        if cfg.scheme == "blocks" and out["blocks_shared"]:
            problems.append(f"{out['blocks_shared']} blocks in more than one split")
        # Rounded for the record; compare the exact value.
        if best[1] is not None and cfg.min_distance_m > 0 and float(_metres(best[0])) < cfg.min_distance_m:
            problems.append(f"samples {best[1][0]} and {best[1][1]} in different splits {out['min_cross_split_distance_m']} m apart")
        if cfg.scheme == "continents":
            shared = out["continents_shared"] if cfg.val_continents else out["continents_shared_with_test"]
            if shared:
                problems.append(f"continent(s) {', '.join(shared)} in more than one split")
        out["problems"], out["ok"] = problems, not problems
    return out


# --- files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitsWritten:
    parquet_url: str
    json_url: str
    summary: dict[str, Any]


def summarize(table: pa.Table, cfg: SplitConfig, name: str, builds: Sequence[BuildRef], failed_skipped: int) -> dict[str, Any]:
    split = table["split"].to_pylist()
    by_cont: dict[str, dict[str, int]] = {}
    for c, s in zip(table["continent"].to_pylist(), split):
        row = by_cont.setdefault(c or "unknown", {k: 0 for k in SPLITS + (EXCLUDED,)})
        row[s] += 1
    reasons: dict[str, int] = {}
    for r in table["excluded_reason"].to_pylist():
        if r is not None:
            reasons[r] = reasons.get(r, 0) + 1
    return {
        "name": name,
        "config": asdict(cfg),
        "builds": [{"region_id": b.region_id, "continent": b.continent, "url": b.url} for b in builds],
        "samples": table.num_rows,
        "failed_skipped": failed_skipped,
        "counts": {k: split.count(k) for k in SPLITS + (EXCLUDED,)},
        "counts_by_continent": dict(sorted(by_cont.items())),
        "excluded": split.count(EXCLUDED),
        "excluded_by_reason": dict(sorted(reasons.items())),
        "checks": check_splits(table, cfg),
    }


MIN_PER_SPLIT = 10  # fewer samples than this in a split asked for (ratio > 0) is "tiny"


def small_splits(summary: dict[str, Any], cfg: SplitConfig, min_per_split: int = MIN_PER_SPLIT) -> list[str]:
    """What makes an assignment useless: a split asked for (its ratio > 0, or its continents
    named) that is empty or holds fewer than `min_per_split` samples. Each line has the numbers."""
    counts = summary["counts"]
    wanted = {"train": True, "val": cfg.ratios[1] > 0 or bool(cfg.val_continents), "test": cfg.ratios[2] > 0 or cfg.scheme == "continents"}
    kept = sum(counts[s] for s in SPLITS)
    out = []
    for s in SPLITS:
        if wanted[s] and counts[s] < min_per_split:
            share = f" (asked for {cfg.ratios[SPLITS.index(s)]:.0%} of blocks)" if cfg.scheme == "blocks" else ""
            out.append(f"{s} has {counts[s]} samples{share}, under {min_per_split}")
    if out:
        blocks = len({b for b, sp in zip(summary.get("_blocks", ()), summary.get("_splits", ())) if sp != EXCLUDED})
        hint = ""
        if cfg.scheme == "blocks" and blocks:
            hint = f"; the {kept} samples fall in {blocks} block(s) of {cfg.block_km:g} km" + (": smaller blocks (--block-km) spread them" if blocks < 10 else "")
        excl = f"; {counts[EXCLUDED]} excluded by --min-distance-m {cfg.min_distance_m:g}" if counts[EXCLUDED] else ""
        out[-1] += hint + excl
    return out


def write_splits(builds: Sequence[BuildRef], cfg: SplitConfig, out_url: str, name: Optional[str] = None,
                 min_per_split: int = MIN_PER_SPLIT, allow_small: bool = False) -> SplitsWritten:
    """Assign, check and write `<out>/splits/<name>.parquet` + `.json`. Same input, same bytes.
    An empty or tiny split (`small_splits`) is an error unless `allow_small`: then it is written,
    and the .json's `warnings` say so."""
    name = name or default_name(cfg)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"splits: name {name!r} must be a plain file name (no '/', not starting with '.')")
    if not builds:
        raise ConfigError("splits: no region builds given")
    points = read_points(builds)
    table = assign_splits(points, cfg)
    summary = summarize(table, cfg, name, builds, points.num_rows - table.num_rows)
    if not summary["checks"]["ok"]:  # a bug, not bad input: never write a leaking split
        raise RuntimeError(f"splits: leak after resolution: {'; '.join(summary['checks']['problems'])}")
    small = small_splits({**summary, "_blocks": table["block"].to_pylist(), "_splits": table["split"].to_pylist()}, cfg, min_per_split)
    if small and not allow_small:
        raise CorebuildError(f"splits: not written: {'; '.join(small)}. Change the split (--block-km, --ratios, --min-distance-m), "
                             "or write it anyway with --allow-small")
    if small:
        summary["warnings"] = small
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    store = open_storage(out_url)
    store.write(f"splits/{name}.parquet", buf.getvalue())
    text = json.dumps(summary, indent=2) + "\n"
    store.write(f"splits/{name}.json", text.encode())
    # Returned as read back, so callers see exactly what the file says (lists, not tuples).
    return SplitsWritten(store.join(f"splits/{name}.parquet"), store.join(f"splits/{name}.json"), json.loads(text))


def load_split(url: str, split: str) -> set[str]:
    """sample_ids in `split` of a written `<out>/splits/<name>.parquet` (local path or gs://)."""
    if split not in SPLITS + (EXCLUDED,):
        raise ConfigError(f"splits: split {split!r} not one of {', '.join(SPLITS + (EXCLUDED,))}")
    parent, _, base = url.rstrip("/").rpartition("/")
    data = open_storage(parent or ".").read(base)
    if data is None:
        raise CorebuildError(f"{url}: no such splits file")
    t = pq.read_table(pa.BufferReader(data), columns=["sample_id", "split"], use_threads=False)
    return set(t.filter(pc.equal(t["split"], split))["sample_id"].to_pylist())


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", help="a region build or an output root holding several (path or gs:// URL)")
    parser.add_argument("--scheme", choices=SCHEMES, default="blocks", help="equal-area blocks, or intercontinental (default: blocks)")
    parser.add_argument("--block-km", type=float, default=10.0, help="block side in km (EASE-Grid 2.0; default 10)")
    parser.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val,test share of blocks (default 0.8,0.1,0.1)")
    parser.add_argument("--min-distance-m", type=float, default=1000.0, help="no two samples of different splits closer than this (default 1000; 0 = off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the block hash (default 0)")
    parser.add_argument("--test-continents", default="", help="comma-separated, e.g. 'Africa' (scheme continents)")
    parser.add_argument("--val-continents", default="", help="comma-separated; none: val comes from blocks of the train continents")
    parser.add_argument("--out", default=None, help="where splits/ goes (default: the build path)")
    parser.add_argument("--name", default=None, help="file name stem (default e.g. blocks-10km, continents-test-Africa)")
    parser.add_argument("--min-per-split", type=int, default=MIN_PER_SPLIT, help=f"a split asked for with fewer samples is refused (default {MIN_PER_SPLIT})")
    parser.add_argument("--allow-small", action="store_true", help="write an empty or tiny split anyway (warned, and recorded in the .json)")


def main(args: argparse.Namespace) -> int:
    cfg = SplitConfig(
        scheme=args.scheme, block_km=args.block_km, ratios=parse_ratios(args.ratios), min_distance_m=args.min_distance_m,
        seed=args.seed, test_continents=parse_continents(args.test_continents), val_continents=parse_continents(args.val_continents),
    )
    res = write_splits(find_builds(args.build), cfg, args.out or args.build, args.name, args.min_per_split, args.allow_small)
    s = res.summary
    for w in s.get("warnings", ()):
        print(f"WARNING: splits: {w}", file=sys.stderr)
    cols = SPLITS + (EXCLUDED,)
    print(f"{'continent':<16}" + "".join(f"{c:>10}" for c in cols))
    for cont, row in s["counts_by_continent"].items():
        print(f"{cont:<16}" + "".join(f"{row[c]:>10}" for c in cols))
    print(f"{'all':<16}" + "".join(f"{s['counts'][c]:>10}" for c in cols))
    ch = s["checks"]
    print(f"blocks shared: {ch['blocks_shared']}; min cross-split distance: {ch['min_cross_split_distance_m']} m; failed rows skipped: {s['failed_skipped']}")
    print(f"wrote {res.parquet_url} and {res.json_url}")
    return 0
