"""The Beam pipeline end to end on a small synthetic region (TestPipeline, DirectRunner)."""

import glob
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from PIL import Image
from shapely.geometry import Point
import io

from corebuild.running.build import run_build, with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.sample import SampleConfig


PLANTED_KEY = "AIzaPLANTED-test-key-5c1f"


@pytest.fixture(scope="module")
def built(tiny_server, manifests_dir, prompts_dir, tmp_path_factory):
    from corebuild.running.build import SYNTHETIC_KEY_ENV

    env = pytest.MonkeyPatch()
    env.setenv(SYNTHETIC_KEY_ENV, PLANTED_KEY)
    out = tmp_path_factory.mktemp("build")
    cfg = BuildConfig(
        region_id="tiny",
        output_dir=str(out),
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(limit=12),
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
    )
    cfg = with_synthetic_endpoints(cfg, tiny_server.base_url)
    yield run_build(cfg, pipeline_factory=test_pipeline.TestPipeline)
    env.undo()


def test_every_sampled_point_is_a_row_and_counts_add_up(built, tiny_region):
    m = json.loads((built.out_dir / "manifest.json").read_text())
    c = m["counts"]
    # --limit 12 is 12 kept samples (top-up rounds); every sampled point is a row, kept or failed.
    assert m["consistent"] and c["kept"] == 12 and c["sampled"] == c["rows"] == c["kept"] + c["failed"] and m["quota"]["missing"] == 0
    assert c["failed"] == sum(c["failed_by_reason"].values()) and c["duplicate_sample_ids"] == 0
    assert m["models"]["ocr"].startswith("rapidocr:") and m["models"]["segmentation"] is None
    assert m["config"]["imagery"] == "synthetic" and len(m["config_hash"]) == 16
    assert sum(s["rows"] for s in m["shards"]) == c["sampled"] and all(len(s["sha256"]) == 64 for s in m["shards"])


def test_shards_open_unchanged_in_pyarrow_and_pandas(built, tiny_region):
    files = sorted(glob.glob(str(built.out_dir / "shards" / "*.parquet")))
    table = pq.read_table(files)  # pyarrow, whole dataset
    df = pd.concat([pd.read_parquet(f) for f in files])
    assert table.num_rows == len(df) == built.manifest["counts"]["sampled"]
    assert set(df.status) <= {"kept", "failed"}
    assert all(tiny_region.polygon.contains(Point(lon, lat)) for lat, lon in zip(df.lat, df.lon))
    kept = df[df.status == "kept"]
    assert len(kept) == 12
    for _, row in kept.iterrows():
        assert Image.open(io.BytesIO(row.aerial_image)).size == (512, 512)
        assert all(Image.open(io.BytesIO(v["image"])).size == (640, 640) for v in row.street_views)
        assert len(row.description.split()) >= 12 and row.prompt_id == "template-v1"
    failed = df[df.status == "failed"]
    assert failed.failure_reason.notna().all() and failed.error.notna().all()
    assert json.loads(pq.read_schema(files[0]).metadata[b"geo"])["primary_column"] == "geometry"


def test_the_api_key_never_reaches_the_output(built):
    for path in built.out_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path


def test_unreachable_provider_gives_failure_rows_and_a_consistent_build(manifests_dir, prompts_dir, tmp_path, synthetic_key):
    import dataclasses

    from corebuild.stages.fetch.http import HttpConfig

    cfg = BuildConfig(
        region_id="tiny",
        output_dir=str(tmp_path),
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(limit=4),
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
    )
    cfg = with_synthetic_endpoints(cfg, "http://127.0.0.1:9")  # nothing listens on the discard port
    cfg = dataclasses.replace(cfg, fetch=dataclasses.replace(cfg.fetch, http=HttpConfig(attempts=2, backoff_initial_s=0.01)))
    result = run_build(cfg, pipeline_factory=test_pipeline.TestPipeline)
    c = result.manifest["counts"]
    assert result.manifest["consistent"] and c["sampled"] == 4 and c["failed_by_reason"] == {"street.unreachable": 4}


def test_a_build_can_write_straight_to_gcs(gcs_emulator, tiny_server, manifests_dir, prompts_dir, synthetic_key):
    import pyarrow as pa

    from corebuild.shards.storage import open_storage

    url = f"gs://{gcs_emulator['bucket']}/builds"
    cfg = BuildConfig(
        region_id="tiny",
        output_dir=url,
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(limit=5),
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
    )
    result = run_build(with_synthetic_endpoints(cfg, tiny_server.base_url), pipeline_factory=test_pipeline.TestPipeline)
    assert result.out_url == f"{url}/tiny" and result.manifest["consistent"]
    storage = open_storage(url)
    shards = [n for n in storage.list("tiny/shards/") if n.endswith(".parquet")]
    # Two rounds on gs:// (the second grows a unit, then the sample is trimmed): 5 kept.
    m = json.loads(storage.read("tiny/manifest.json"))
    assert m["counts"]["kept"] == 5 and m["quota"]["rounds"] == 2 and m["consistent"]
    assert shards and sum(pq.read_table(pa.BufferReader(storage.read(n)), use_threads=False).num_rows for n in shards) == m["counts"]["sampled"]
    assert storage.list("tiny/_sampling/") == ["tiny/_sampling/tiny.json"]


def test_segmentation_runs_in_the_pipeline_and_lands_in_the_shards(tiny_server, manifests_dir, prompts_dir, synthetic_key, tmp_path, monkeypatch):
    """A tiny randomly initialised SAM (the real segment-anything code) registered as a backend,
    labels from a fixed labeler: masks, labels and ids must reach the shards and the manifest."""
    from corebuild.stages import segment as seg
    from corebuild.stages.segment.sam import SamSegmenter
    from corebuild.stages.segment import SegmentConfig
    from tests.stages.segment.test_sam import KEEP_ALL, tiny_sam

    model = tiny_sam()
    monkeypatch.setitem(seg.SEGMENTERS, "tiny_sam", lambda cfg: SamSegmenter.from_model(model, cfg, KEEP_ALL))

    class Shopfronts:
        name, model_id = "fixed", "shopfront"

        def label(self, image, masks, labels, template):
            return [("shopfront", 1.0)] * len(masks)

    monkeypatch.setitem(seg.LABELERS, "fixed", lambda cfg: Shopfronts())
    cfg = BuildConfig(
        region_id="tiny",
        output_dir=str(tmp_path),
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(limit=3),
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
        segment=SegmentConfig(backend="tiny_sam", labeler="fixed", points_per_side=4, max_side=64, min_area_frac=0.0, prompts_dir=str(prompts_dir)),
    )
    result = run_build(with_synthetic_endpoints(cfg, tiny_server.base_url), pipeline_factory=test_pipeline.TestPipeline)
    assert result.manifest["models"]["segmentation"].startswith("sam:segment-anything==1.0:vit_b:")
    assert result.manifest["models"]["mask_labels"] == "fixed:shopfront"
    df = pd.concat([pd.read_parquet(f) for f in glob.glob(str(result.out_dir / "shards" / "*.parquet"))])
    kept = df[df.status == "kept"]
    assert len(kept) >= 2
    for _, row in kept.iterrows():
        assert len(row.segments) > 0 and row.segmenter and row.labeler == "fixed:shopfront"
        assert all(s["label"] == "shopfront" and list(s["rle_size"]) == [640, 640] for s in row.segments)


def test_audit_sheet_of_a_build(built, tmp_path):
    import subprocess
    import sys
    from html.parser import HTMLParser

    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, "-m", "corebuild", "audit", str(built.out_dir), "--fraction", "0.5", "--out", str(tmp_path / "a")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    kept = built.manifest["counts"]["kept"]
    rows = list(__import__("csv").DictReader(open(tmp_path / "a" / "audit.csv")))
    assert len(rows) == round(kept * 0.5) and all(row["verdict"] == "" and row["status"] == "kept" for row in rows)

    class Images(HTMLParser):
        srcs: list = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    parser = Images()
    parser.feed((tmp_path / "a" / "audit.html").read_text())
    assert len(parser.srcs) == 2 * len(rows)  # a street view and an aerial crop per row
    for src in parser.srcs:  # every image resolves: an embedded, decodable picture
        Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1]))).load()


# ----- the map modality (a second aerial crop in map style) ---------------------------------------

MAP_COLUMNS = ("map_provider", "map_image", "map_format", "map_zoom", "map_west", "map_south", "map_east", "map_north", "map_gsd_m", "map_attribution")


def test_without_a_map_preset_the_map_columns_are_null(built):
    table = pq.read_table(sorted(glob.glob(str(built.out_dir / "shards" / "*.parquet"))), columns=["status", *MAP_COLUMNS])
    assert "kept" in table.column("status").to_pylist()
    for name in MAP_COLUMNS:
        assert table.column(name).null_count == table.num_rows, name


def test_a_map_preset_fills_the_map_columns(tiny_world, manifests_dir, prompts_dir, synthetic_key, tmp_path):
    """--map-preset osm on a synthetic region: the build serves its world itself, points the map
    client at the world's OSM-style tiles, and every kept row carries the map crop."""
    import numpy as np

    from corebuild.geo import mercator_gsd
    from corebuild.stages.ocr import OcrConfig
    from corebuild.stages.fetch.aerial import plan_crop
    from corebuild.synthetic.render import render_map_tile

    cfg = BuildConfig(
        region_id="tiny",
        output_dir=str(tmp_path),
        manifests_dir=str(manifests_dir),
        map_preset="osm",
        sample=SampleConfig(limit=5),
        ocr=OcrConfig(backend="off"),  # not what this is about
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
    )
    result = run_build(cfg, pipeline_factory=test_pipeline.TestPipeline, progress=False)
    m = result.manifest
    assert m["consistent"] and m["config"]["fetch"]["map"]["provider_name"] == "synthetic_map"
    df = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(str(result.out_dir / "shards" / "*.parquet")))])
    kept, failed = df[df.status == "kept"], df[df.status == "failed"]
    assert len(kept) >= 2, df.failure_reason.tolist()
    assert m["counts"]["licenses"] == {"street": {"CC0-1.0": len(kept)}, "aerial": {"CC0-1.0": len(kept)}}
    for _, row in kept.iterrows():
        assert row.map_provider == "synthetic_map" and row.map_format == "png" and row.map_zoom == 19
        assert row.map_attribution == "corebuild synthetic world (map style)"
        # generated imagery, whichever client fetched it: the synthetic world's licence on every image
        assert (row.street_license, row.aerial_license, row.map_license) == ("CC0-1.0",) * 3
        assert row.street_attribution == "corebuild synthetic world (generated)"
        img = Image.open(io.BytesIO(row.map_image))
        assert img.format == "PNG" and img.size == (512, 512)
        assert row.map_west < row.street_lon < row.map_east and row.map_south < row.street_lat < row.map_north
        # Zoom 19 against the aerial crop's 20: the map crop covers the aerial one, twice as wide.
        assert row.map_west < row.aerial_west and row.map_east > row.aerial_east and row.map_south < row.aerial_south and row.map_north > row.aerial_north
        assert row.map_gsd_m == pytest.approx(mercator_gsd(row.street_lat, 19), rel=1e-3)
        assert row.map_image != row.aerial_image
    # The crop is the world's map tiles, stitched around the camera.
    row = kept.iloc[0]
    plan = plan_crop(row.street_lat, row.street_lon, 19, 512)
    ref = Image.new("RGB", (512, 512))
    for t, off in zip(plan.tiles, plan.offsets):
        ref.paste(render_map_tile(tiny_world, t.z, t.x, t.y), off)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(row.map_image)).convert("RGB")), np.asarray(ref))
    for name in MAP_COLUMNS:
        assert failed[name].isna().all(), name
