"""Sampling along roads (corebuild.stages.roads): the area sampler's guarantees, on the roads."""

import dataclasses
import json
import re

import numpy as np
import pytest
import shapely
from shapely.geometry import Point

from corebuild.config import BuildConfig
from corebuild.errors import ConfigError, ManifestError
from corebuild.regions import parse_region
from corebuild.stages.roads import load_roads
from corebuild.stages.sample import SampleConfig, SamplingPlan, sample_region
from corebuild.synthetic.roads import road_lines, write_geojson, write_roads
from tests.conftest import rect_manifest
from tests.stages.test_sample import _min_distance, _union_of_chunks

pytest.importorskip("osmium")


@pytest.fixture(scope="module")
def tiny_roads(tiny_world, tmp_path_factory):
    """The tiny town's roads, as GeoJSON and as .osm.pbf."""
    d = tmp_path_factory.mktemp("roads")
    write_roads(tiny_world, str(d / "tiny.geojson"))
    write_roads(tiny_world, str(d / "tiny.osm.pbf"))
    return d


def _mixed(tiny_region, path):
    """Three parallel east-west ways 100 m apart across the tiny town: the middle one a motorway."""
    lat0, lon0 = tiny_region.centroid
    ways = [(hw, [(lon0 - 0.004, lat0 + dy / 111320), (lon0 + 0.004, lat0 + dy / 111320)]) for hw, dy in (("residential", -100), ("motorway", 0), ("footway", 100))]
    write_geojson(str(path), ways)
    return ways


def _local(plan, points):
    x, y = plan.fwd.transform([p[1] for p in points], [p[0] for p in points])
    return shapely.points(np.asarray(x), np.asarray(y))


def _distance_to_roads(plan, points) -> np.ndarray:
    return shapely.distance(_local(plan, points), shapely.union_all(plan.roads.lines))


def test_along_roads_deterministic_spaced_inside_and_on_a_road(tiny_region, tiny_roads):
    cfg = SampleConfig(seed=4, roads=str(tiny_roads / "tiny.osm.pbf"))
    a, b = sample_region(tiny_region, cfg), sample_region(tiny_region, cfg)
    assert a == b and len(a.points) == tiny_region.quota and a.shortfall_reason is None
    assert a.points != sample_region(tiny_region, SampleConfig(seed=4)).points
    assert all(tiny_region.polygon.contains(Point(lon, lat)) for lat, lon in a.points)
    assert _min_distance(a.points) >= 25 * 0.999
    assert _distance_to_roads(SamplingPlan(tiny_region, cfg), a.points).max() < 0.5


@pytest.mark.parametrize("chunk_cells", [1, 2])
def test_chunking_does_not_change_the_road_sample(tiny_region, tiny_roads, chunk_cells):
    cfg = SampleConfig(seed=2, roads=str(tiny_roads / "tiny.geojson"), chunk_cells=chunk_cells)
    assert _union_of_chunks(tiny_region, cfg) == sample_region(tiny_region, cfg)


def test_geojson_and_osm_pbf_give_the_same_sample(tiny_region, tiny_roads):
    geo, osm = (sample_region(tiny_region, SampleConfig(seed=1, roads=str(tiny_roads / f))) for f in ("tiny.geojson", "tiny.osm.pbf"))
    assert geo == osm and len(geo.points) == tiny_region.quota


def test_newline_delimited_geojson_reads_like_a_collection(tiny_world, tiny_roads, tmp_path):
    lines = [json.dumps({"type": "Feature", "properties": {"highway": hw}, "geometry": {"type": "LineString", "coordinates": c}}) for hw, c in road_lines(tiny_world)]
    (tmp_path / "tiny.geojsonl").write_text("\n".join(lines) + "\n")
    a, b = load_roads(str(tmp_path / "tiny.geojsonl"), ("residential", "tertiary")), load_roads(str(tiny_roads / "tiny.geojson"), ("residential", "tertiary"))
    assert list(a[0]) == list(b[0]) and a[1] == b[1]


def test_the_tag_filter_decides_which_roads_count(tiny_region, tmp_path):
    ways = _mixed(tiny_region, tmp_path / "mixed.geojson")
    motorway = shapely.linestrings(ways[1][1])
    cfg = SampleConfig(roads=str(tmp_path / "mixed.geojson"), road_tags=("motorway",))
    res = sample_region(dataclasses.replace(tiny_region, quota=10), cfg)
    lats = np.array([p[0] for p in res.points])
    assert len(res.points) == 10 and np.allclose(lats, motorway.coords[0][1], atol=1e-6)
    every = sample_region(dataclasses.replace(tiny_region, quota=30), dataclasses.replace(cfg, road_tags=SampleConfig.road_tags))
    assert len({round(p[0], 4) for p in every.points}) == 3  # all three ways count by default


def test_no_roads_inside_the_polygon_is_a_recorded_shortfall(tiny_region, tmp_path):
    _mixed(tiny_region, tmp_path / "mixed.geojson")
    res = sample_region(tiny_region, SampleConfig(roads=str(tmp_path / "mixed.geojson"), road_tags=("trunk",)))
    assert res.points == () and res.shortfall_reason == "no roads inside the polygon (wanted 40)"


def test_a_short_road_network_says_how_much_road_there_is(tiny_region, tmp_path):
    _mixed(tiny_region, tmp_path / "mixed.geojson")
    res = sample_region(dataclasses.replace(tiny_region, quota=500), SampleConfig(roads=str(tmp_path / "mixed.geojson")))
    assert 0 < len(res.points) < 500 and re.fullmatch(r"2\.\d km of roads hold only \d+ points 25 m apart \(wanted 500\)", res.shortfall_reason)


@pytest.mark.parametrize("name, content, why", [
    ("absent.osm.pbf", None, "no such file"),
    ("broken.osm.pbf", b"\x00\x01 not a pbf", "cannot read"),
    ("broken.geojson", b"{\"type\": \"FeatureCollection\", \"features\": [", "cannot read"),
    ("latin1.geojson", "{\"highway\": \"caf\xe9\"}".encode("latin-1"), "cannot read"),
])
def test_a_missing_or_unreadable_road_file_is_one_clear_line(tiny_region, tmp_path, name, content, why):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^roads {path}: {why}") as exc:
        SamplingPlan(tiny_region, SampleConfig(roads=str(path))).density
    assert "\n" not in str(exc.value)


def test_without_osmium_an_osm_file_names_the_extra(tiny_roads, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "osmium", None)
    load_roads.cache_clear()
    with pytest.raises(ConfigError, match=r"pip install 'corebuild\[roads\]'"):
        load_roads(str(tiny_roads / "tiny.osm.pbf"), ("residential",))
    load_roads.cache_clear()


def test_the_config_hash_holds_the_road_file_content_and_tags_not_its_path(tiny_roads, tmp_path):
    copy = tmp_path / "copy.geojson"
    copy.write_bytes((tiny_roads / "tiny.geojson").read_bytes())
    def cfg(path, **kw):
        return BuildConfig(region_id="tiny", sample=SampleConfig(roads=str(path), **kw))
    assert cfg(copy).content_hash() == cfg(tiny_roads / "tiny.geojson").content_hash() != BuildConfig(region_id="tiny").content_hash()
    assert cfg(copy, road_tags=("motorway",)).content_hash() != cfg(copy).content_hash()
    copy.write_text(copy.read_text().replace("residential", "service"))
    assert cfg(copy).content_hash() != cfg(tiny_roads / "tiny.geojson").content_hash()
    assert "roads" not in cfg(copy).content_dict()["sample"] and cfg(copy).content_dict()["sample"]["roads_hash"]


# --- the region manifest's `roads`, and --roads over it -----------------------------------------

def _manifest(tmp_path, **extra):
    path = tmp_path / "town.json"
    doc = rect_manifest("town", -33.92, 18.42, 380, 300, quota=40, **extra)
    path.write_text(json.dumps(doc))
    return doc, str(path)


def test_a_manifest_names_its_roads_relative_to_itself(tmp_path, tiny_roads):
    (tmp_path / "osm").mkdir()
    (tmp_path / "osm" / "town.geojson").write_bytes((tiny_roads / "tiny.geojson").read_bytes())
    doc, path = _manifest(tmp_path, roads="osm/town.geojson")
    assert parse_region(doc, path).roads == str(tmp_path / "osm" / "town.geojson")
    assert parse_region(_manifest(tmp_path)[0], path).roads is None
    assert parse_region(_manifest(tmp_path, roads="gs://b/osm/town.osm.pbf")[0], path).roads == "gs://b/osm/town.osm.pbf"  # read when the build starts


@pytest.mark.parametrize("value, message", [
    ("nowhere.osm.pbf", "roads: no such file: "),
    (3, "roads: expected str, got int"),
    ("  ", "roads: expected a file path"),
])
def test_a_bad_manifest_roads_field_is_a_manifest_error(tmp_path, value, message):
    doc, path = _manifest(tmp_path, roads=value)
    with pytest.raises(ManifestError, match=f"^{path}: {message}"):
        parse_region(doc, path)


def test_the_roads_flag_beats_the_manifest_and_prepare_applies_it(tmp_path, tiny_roads, monkeypatch):
    from corebuild.running import build

    (tmp_path / "town.geojson").write_bytes((tiny_roads / "tiny.geojson").read_bytes())
    _manifest(tmp_path, roads="town.geojson")
    seen = []

    def stop(cfg, region):  # preflight: the config prepare resolved, then nothing more
        seen.append(cfg.sample.roads)
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "preflight", stop)
    for flag, expected in ((None, str(tmp_path / "town.geojson")), ("other.geojson", "other.geojson")):
        cfg = BuildConfig(region_id="town", manifests_dir=str(tmp_path), imagery="synthetic", sample=SampleConfig(roads=flag))
        with pytest.raises(KeyboardInterrupt):
            build.prepare(cfg)
        assert seen[-1] == expected


def test_the_roads_flag_is_generated_with_its_help():
    from corebuild.cli import build_config, parser

    args = parser().parse_args(["build", "--region", "demo", "--roads", "x.osm.pbf"])
    assert build_config(args).sample.roads == "x.osm.pbf"
    assert build_config(parser().parse_args(["build", "--region", "demo"])).sample.roads is None



def test_preflight_reads_the_road_file_before_any_work(tmp_path):
    from corebuild.config import RunnerConfig
    from corebuild.regions import load_region
    from corebuild.running.build import preflight

    region = load_region("demo", BuildConfig("demo").manifests_dir)
    (tmp_path / "bad.geojson").write_text("not json")
    cfg = BuildConfig("demo", sample=SampleConfig(roads=str(tmp_path / "bad.geojson")), runner=RunnerConfig(runner="DataflowRunner"))
    with pytest.raises(ConfigError, match="bad.geojson: cannot read"):
        preflight(cfg, region)


def test_without_roads_the_config_hash_is_as_before_roads_existed():
    assert "road_tags" not in BuildConfig(region_id="tiny").content_dict()["sample"]
    assert BuildConfig(region_id="tiny", sample=SampleConfig(road_tags=("motorway",))).content_hash() == BuildConfig(region_id="tiny").content_hash()


def test_about_oversample_times_quota_candidates_survive_along_roads(tiny_region, tiny_roads):
    for quota_of, pool in (("sampled", tiny_region.quota), ("kept", tiny_region.quota / 0.5)):  # a kept quota: quota / expected yield
        plan = SamplingPlan(tiny_region, SampleConfig(roads=str(tiny_roads / "tiny.geojson"), quota_of=quota_of))
        survivors = len(plan.survivors()[0])
        assert plan.pool_quota == pool and 0.75 * 1.3 * pool <= survivors <= 1.25 * 1.3 * pool, (quota_of, survivors)


def test_the_order_of_the_ways_in_the_file_does_not_matter(tiny_region, tiny_world, tiny_roads, tmp_path):
    write_geojson(str(tmp_path / "reversed.geojson"), road_lines(tiny_world)[::-1])
    cfg = SampleConfig(seed=6, roads=str(tiny_roads / "tiny.osm.pbf"))
    assert sample_region(tiny_region, dataclasses.replace(cfg, roads=str(tmp_path / "reversed.geojson"))) == sample_region(tiny_region, cfg)


def test_a_road_along_a_cell_edge_is_sampled_once_however_chunked(tiny_region):
    """Candidates on a cell's edge belong to the neighbour cell: with no spacing (no halo) a chunk
    would otherwise lose them, or two chunks keep them."""
    from corebuild.stages.roads import RoadNetwork

    def plan(cfg):
        p = SamplingPlan(tiny_region, cfg)
        p.__dict__["roads"] = RoadNetwork(shapely.linestrings([[(-300.0, 0.0), (300.0, 0.0)], [(0.0, -250.0), (0.0, 250.0)]]))
        return p

    cfg = SampleConfig(min_spacing_m=0.0, chunk_cells=1)
    whole = plan(cfg)
    parts = [plan(cfg).chunk_survivors(c) for c in whole.chunks()]
    chunked = whole.select(*(np.concatenate([p[k] for p in parts]) for k in range(3)))
    assert chunked == whole.select(*whole.survivors()) and len(chunked.points) == tiny_region.quota


def test_a_road_file_in_a_bucket_samples_as_the_local_file(tiny_region, tiny_roads, gcs_emulator):
    """Dataflow workers read gs:// where a launcher's path is not: the same points, the same
    config hash (the bytes, not where they lie), and a missing object is one clear error."""
    from corebuild.shards.storage import open_storage
    from corebuild.stages.roads import ROAD_TAGS

    bucket = f"gs://{gcs_emulator['bucket']}/roads-test"
    open_storage(bucket).write("tiny.osm.pbf", (tiny_roads / "tiny.osm.pbf").read_bytes())
    local, remote = SampleConfig(seed=5, roads=str(tiny_roads / "tiny.osm.pbf")), SampleConfig(seed=5, roads=f"{bucket}/tiny.osm.pbf")
    assert sample_region(tiny_region, remote) == sample_region(tiny_region, local)
    cfg = lambda s: BuildConfig(region_id="tiny", sample=s)  # noqa: E731
    assert cfg(remote).content_hash() == cfg(local).content_hash()
    with pytest.raises(ConfigError, match=r"roads gs://.*/missing\.osm\.pbf: no such object"):
        load_roads(f"{bucket}/missing.osm.pbf", ROAD_TAGS)
