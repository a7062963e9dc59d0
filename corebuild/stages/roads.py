"""Road networks for sampling along roads (`--roads FILE` or a manifest's `roads`): the ways
whose `highway` tag counts, read from an OpenStreetMap extract (`.osm.pbf`, `.osm`: osmium, the
`roads` extra) or GeoJSON (a FeatureCollection or one feature per line, no extra needed).

Lines come back in lon/lat, rounded to OSM's 1e-7 degrees and in a canonical order, so a
GeoJSON and a `.osm.pbf` of the same roads give the same sample."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import shapely
from shapely.strtree import STRtree

from corebuild.errors import ConfigError

# Where street-level imagery is taken: ways a car drives (Street View) and ways a person walks
# with a camera (Mapillary, trekkers). Left out: *_link ramps (short, repeat their road), steps,
# cycleway and bridleway (seldom covered), and what is not built (construction, proposed).
ROAD_TAGS = (
    "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential",
    "living_street", "service", "pedestrian", "track", "footway", "path",
)
OSM_SUFFIXES = (".pbf", ".osm", ".osm.bz2", ".osm.gz", ".o5m", ".opl")  # what osmium reads; the rest is GeoJSON
_PRECISION = 7  # OSM stores 1e-7 degrees


def _fail(path: str, why: str) -> ConfigError:
    return ConfigError(f"roads {path}: {why}")


@lru_cache(maxsize=8)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@lru_cache(maxsize=8)
def local_copy(path: str) -> str:
    """A local file holding the road file's bytes: the path itself, or for a storage URL
    (`gs://bucket/roads/x.osm.pbf`, which Dataflow workers can read where a launcher's path is
    not) a copy downloaded once per process, with the same name so its format is known."""
    if "://" not in path:
        return path
    from corebuild.shards.storage import open_storage

    parent, name = path.rstrip("/").rsplit("/", 1)
    try:
        data = open_storage(parent).read(name)
    except Exception as exc:  # credentials, network: one line that names the file
        raise _fail(path, f"cannot read: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    if data is None:
        raise _fail(path, "no such object")
    local = os.path.join(tempfile.mkdtemp(prefix="corebuild-roads-"), name)
    with open(local, "wb") as f:
        f.write(data)
    return local


def roads_hash(path: str) -> str:
    """The hash of the file's bytes: what the config hash records instead of its path."""
    local = local_copy(path)
    try:
        st = os.stat(local)
    except OSError as exc:
        raise _fail(path, exc.strerror or "cannot read") from None
    return _file_hash(local, st.st_size, st.st_mtime_ns)


def _geojson_features(text: str) -> Iterator[Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:  # newline-delimited: one feature per line
        yield from (json.loads(line) for line in text.splitlines() if line.strip())
        return
    yield from doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]


def _geojson_ways(path: str) -> Iterator[tuple[str, list]]:
    """(highway, [[lon, lat], ...]) per LineString (each part of a MultiLineString)."""
    for feature in _geojson_features(Path(path).read_text(encoding="utf-8")):
        geom, props = feature.get("geometry") or {}, feature.get("properties") or {}
        parts = {"LineString": [geom.get("coordinates")], "MultiLineString": geom.get("coordinates")}.get(geom.get("type"), [])
        for coords in parts:
            yield str(props.get("highway", "")), coords


def _osm_ways(path: str) -> Iterator[tuple[str, list]]:
    try:
        import osmium
    except ImportError:
        raise _fail(path, "reading OpenStreetMap files needs osmium (pip install 'corebuild[roads]')") from None
    processor = osmium.FileProcessor(path, osmium.osm.NODE | osmium.osm.WAY).with_locations()
    for obj in processor:
        if obj.is_way() and "highway" in obj.tags:
            try:
                yield obj.tags["highway"], [(n.lon, n.lat) for n in obj.nodes]
            except osmium.InvalidLocationError:  # a way whose nodes the extract cut off
                continue


@lru_cache(maxsize=4)
def load_roads(path: str, tags: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(lon/lat LineStrings, their highway tags) of the ways whose tag is in `tags`, canonical order.
    `path`: a local file or a storage URL (gs://)."""
    local = local_copy(path)
    if not os.path.isfile(local):
        raise _fail(path, "no such file")
    reader = _osm_ways if path.lower().endswith(OSM_SUFFIXES) else _geojson_ways
    try:
        ways = [(hw, np.round(np.asarray(c, dtype=float)[:, :2], _PRECISION)) for hw, c in reader(local) if hw in tags and c and len(c) >= 2]
    except ConfigError:
        raise
    except Exception as exc:  # JSON, UTF-8, osmium's RuntimeError on a damaged file, bad coordinates
        raise _fail(path, f"cannot read: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    lines = shapely.linestrings([c for _, c in ways]) if ways else np.empty(0, dtype=object)
    order = sorted(range(len(ways)), key=lambda i: shapely.to_wkb(lines[i]))
    return lines[order], tuple(ways[i][0] for i in order)


def line_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty LineStrings of clipped geometries (a clip may leave points or nothing),
    with the index of the geometry each came from."""
    parts, which = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 0)
    return parts[keep], which[keep]


class RoadNetwork:
    """Road lines in the sampler's local equal-area plane, indexed for per-cell clipping."""

    def __init__(self, lines: np.ndarray):
        self.lines = lines
        self.tree = STRtree(lines)

    def cells(self, ix: np.ndarray, iy: np.ndarray, size: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per cell: its road pieces and their cumulative lengths. A pure function of the cell
        (pieces in road order, sums within the cell), whatever other cells are asked with it."""
        boxes = shapely.box(ix * size, iy * size, (ix + 1) * size, (iy + 1) * size)
        cell, road = self.tree.query(boxes, predicate="intersects")
        order = np.lexsort((road, cell))
        cell, road = cell[order], road[order]
        parts, which = line_parts(shapely.intersection(self.lines[road], boxes[cell]))
        which = cell[which]
        out = []
        for i in range(len(ix)):
            mine = parts[which == i]
            out.append((mine, np.cumsum(shapely.length(mine))))
        return out


def along(pieces: np.ndarray, cum: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) at distances `t` along the pieces laid end to end."""
    k = np.minimum(np.searchsorted(cum, t, side="right"), len(cum) - 1)
    start = cum[k] - shapely.length(pieces[k])
    pts = shapely.line_interpolate_point(pieces[k], np.maximum(t - start, 0.0))
    return shapely.get_x(pts), shapely.get_y(pts)

