"""The synthetic world's road network as a file (`corebuild synthetic roads`), read back with osmium."""

import pytest

from corebuild.cli import main
from corebuild.synthetic.roads import write_roads

osmium = pytest.importorskip("osmium")


def _read_ways(path) -> list[tuple[str, list[tuple[float, float]]]]:
    return [
        (w.tags["highway"], [(n.lon, n.lat) for n in w.nodes])
        for w in osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY).with_locations()
        if w.is_way()
    ]


def test_the_world_roads_round_trip_through_osm_pbf(tiny_world, tmp_path):
    assert write_roads(tiny_world, str(tmp_path / "tiny.osm.pbf")) == len(tiny_world.roads)
    ways = _read_ways(tmp_path / "tiny.osm.pbf")
    assert len(ways) == len(tiny_world.roads)
    for (highway, coords), road in zip(ways, tiny_world.roads):
        assert highway == ("tertiary" if road.width >= 14 else "residential")
        expected = [tiny_world.to_latlon(x, y) for x, y in road.line.coords]
        assert len(coords) == len(expected)
        assert all(abs(lon - e_lon) <= 1e-6 and abs(lat - e_lat) <= 1e-6 for (lon, lat), (e_lat, e_lon) in zip(coords, expected))


def test_the_cli_writes_a_region_roads(manifests_dir, tmp_path, capsys):
    out = tmp_path / "tiny.osm.pbf"
    assert main(["synthetic", "roads", "--region", "tiny", "--manifests", str(manifests_dir), "--out", str(out)]) == 0
    assert len(_read_ways(out)) > 5 and capsys.readouterr().out.strip().endswith(f"roads -> {out}")
