"""The synthetic world's road network as a file the sampler reads (`--roads`): `.osm.pbf` (or
any OSM format osmium writes, by suffix) or, for `.geojson`, GeoJSON; so the demo can be built
along its roads and over its whole area, and the yields compared."""

from __future__ import annotations

import json
from pathlib import Path

from corebuild.errors import CorebuildError
from corebuild.synthetic.world import World

AVENUE_WIDTH_M = 14.0  # the world's wide roads (every third): tertiary, the others residential


def road_lines(world: World) -> list[tuple[str, list[tuple[float, float]]]]:
    """(highway, [(lon, lat), ...]) per road of the world, in road order."""
    out = []
    for road in world.roads:
        coords = [world.to_latlon(x, y)[::-1] for x, y in road.line.coords]
        out.append(("tertiary" if road.width >= AVENUE_WIDTH_M else "residential", coords))
    return out


def write_geojson(path: str, ways: list[tuple[str, list[tuple[float, float]]]]) -> None:
    features = [
        {"type": "Feature", "properties": {"highway": hw}, "geometry": {"type": "LineString", "coordinates": [list(c) for c in coords]}}
        for hw, coords in ways
    ]
    Path(path).write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def write_osm(path: str, ways: list[tuple[str, list[tuple[float, float]]]]) -> None:
    """Nodes with their lon/lat, then ways over them (osmium writes the format the suffix names)."""
    try:
        import osmium
    except ImportError:
        raise CorebuildError("writing OpenStreetMap files needs osmium (pip install 'corebuild[roads]')") from None
    node_id = 0
    with osmium.SimpleWriter(str(path), overwrite=True) as writer:
        for way_id, (highway, coords) in enumerate(ways, start=1):
            ids = []
            for lon, lat in coords:
                node_id += 1
                writer.add_node(osmium.osm.mutable.Node(id=node_id, location=osmium.osm.Location(lon, lat), version=1))
                ids.append(node_id)
            writer.add_way(osmium.osm.mutable.Way(id=way_id, nodes=ids, tags={"highway": highway}, version=1))


def write_roads(world: World, path: str) -> int:
    """The world's roads written to `path` (GeoJSON for .geojson/.json, else OSM); how many."""
    ways = road_lines(world)
    (write_geojson if str(path).lower().endswith((".geojson", ".json")) else write_osm)(path, ways)
    return len(ways)
