import json

import pyarrow as pa
import shapely

from tests.conftest import ROOT
from corebuild.record import AerialCrop, Description, OcrText, Record, StreetCapture, StreetView
from corebuild.shards.schema import COLUMNS, RunStamp, record_to_row, shard_schema

STAMP = RunStamp("b1", "c0ffee", "0.1.0+gabc")


def _kept():
    views = (StreetView(0.0, 90, 0, 8, 8, b"jpegbytes"),)
    return Record(
        "r-s0-0000001", "r", 0, 1, 47.5, 8.25,
        street=StreetCapture("google_streetview", "P1", 47.5001, 8.2501, "2020-05", 12.5, views),
        aerial=AerialCrop("xyz", 20, 512, 512, 8.2, 47.4, 8.3, 47.6, 47.5001, 8.2501, 0.1, 4, b"png"),
        ocr=(OcrText(0.0, "CAFE", 0.9, ((1, 2), (3, 2), (3, 4), (1, 4))),),
        description=Description("A street.", "template", "template", "template-v1", "ab" * 8),
    ).finish()


def test_schema_carries_geoparquet_metadata():
    geo = json.loads(shard_schema().metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}


def test_rows_round_trip_through_arrow_for_kept_and_failed():
    failed = Record("r-s0-0000002", "r", 0, 2, 47.0, 8.0).fail("street.zero_results", "none here")
    table = pa.Table.from_pylist([record_to_row(_kept(), STAMP), record_to_row(failed, STAMP)], schema=shard_schema())
    rows = table.to_pylist()
    assert rows[0]["status"] == "kept" and rows[0]["street_views"][0]["image"] == b"jpegbytes"
    assert rows[0]["ocr"][0]["box"] == [1, 2, 3, 2, 3, 4, 1, 4]
    assert shapely.from_wkb(rows[0]["geometry"]).equals(shapely.Point(8.25, 47.5))
    assert rows[1]["status"] == "failed" and rows[1]["failure_reason"] == "street.zero_results"
    assert rows[1]["street_views"] is None and rows[1]["description"] is None
    assert {r["config_hash"] for r in rows} == {"c0ffee"}


def test_every_column_is_documented():
    assert all(c.doc for c in COLUMNS)
    assert shard_schema().names == [c.name for c in COLUMNS]


def test_docs_schema_is_generated_from_the_writer():
    from corebuild.shards.schema import schema_markdown

    doc = ROOT / "docs" / "schema.md"
    assert doc.read_text() == schema_markdown(), "regenerate: python -m corebuild.shards.schema > docs/schema.md"
