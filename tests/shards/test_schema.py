"""The shard schema comes from the record types: one declaration per column, one for any crop,
and row_to_record inverts record_to_row (used by the dataset tools instead of fake records)."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa

from corebuild.record import AerialCrop, Description, OcrText, Record, Segment, StreetCapture, StreetLocation, StreetView
from corebuild.shards import schema
from corebuild.shards.schema import COLUMNS, MAP_OMITS, RunStamp, record_to_row, row_to_record, shard_schema

STAMP = RunStamp("b1", "c0ffee", "0.1.0+gabc")


def _crop(provider: str, zoom: int) -> AerialCrop:
    return AerialCrop(provider, zoom, 512, 256, 8.2, 47.4, 8.3, 47.6, 47.5001, 8.2501, 0.125, 6, b"\x89PNG" + provider.encode(), "png", f"(c) {provider}", 1, "ODbL-1.0")


def _full(copyright="Mapillary, CC BY-SA 4.0, by someone", map_crop=None) -> Record:
    """A kept record with every part filled; values exact in float32 so Arrow keeps them. The map
    crop's size, centre and tile counts have no columns (MAP_OMITS): by default it has none."""
    views = (StreetView(0.0, 90.0, 0.0, 8, 8, b"jpeg0"), StreetView(90.0, 90.0, -5.0, 8, 6, b"png90", "png"))
    return Record(
        "r-s3-0000007", "r", 3, 7, 47.5, 8.25,
        street=StreetCapture("mapillary", "P1", 47.5001, 8.2501, "2020-05", 12.5, views, copyright, "seq-1", "CC-BY-SA-4.0"),
        aerial=_crop("esri", 19),
        map=map_crop or dataclasses.replace(_crop("osm", 18), **dict.fromkeys(MAP_OMITS)),
        ocr=(OcrText(0.0, "CAFE", 0.875, ((1.0, 2.0), (3.0, 2.0), (3.0, 4.0), (1.0, 4.0))), OcrText(90.0, "TAXI", 0.5, ((5.0, 6.0), (7.0, 6.0)), "on_vehicle")),
        ocr_backend="rapidocr:v4",
        segments=(Segment(90.0, (1.0, 2.0, 3.5, 4.0), 12, 0.875, 0.75, (0, 3, 5, 4), (3, 4), "sign", 0.625), Segment(0.0, (0.0, 0.0, 8.0, 8.0), 64, 0.5, 0.5, (0, 64), (8, 8))),
        segmenter="sam:vit_b",
        labeler="clip:vit_b32",
        description=Description("A street with \"CAFE\".", "vllm", "qwen", "p-v1", "ab" * 8, json.dumps({"signs": ["CAFE"]}), json.dumps({"temperature": 0}), 120, 80),
        timings=(("fetch", 1.25), ("ocr", 0.5), ("describe", 2.0)),
    ).finish()


def _through_arrow(row: dict) -> dict:
    return pa.Table.from_pylist([row], schema=shard_schema()).to_pylist()[0]


def test_a_kept_record_with_every_part_round_trips():
    rec = _full()
    assert row_to_record(record_to_row(rec, STAMP)) == rec
    assert row_to_record(_through_arrow(record_to_row(rec, STAMP))) == rec  # what a reader of a shard gets


def test_what_no_column_holds_reads_back_as_none():
    located = StreetLocation("mapillary", "P1", 47.5001, 8.2501, "2020-05", 12.5, "seq-1")
    rec = _full(map_crop=_crop("osm", 18)).with_(location=located)
    back = row_to_record(record_to_row(rec, STAMP))
    assert back.location is None  # the locate answer: the row keeps the capture
    assert back.street == rec.street  # its licence and attribution (copyright) included
    assert back.map == dataclasses.replace(rec.map, **dict.fromkeys(MAP_OMITS))  # the map crop's shards never kept these
    assert back.with_(street=rec.street, map=rec.map, location=located) == rec


def test_a_failed_record_round_trips_with_its_timings():
    rec = Record("r-s0-0000002", "r", 0, 2, 47.0, 8.0).timed("sample", 0.25).fail("street.zero_results", "no panorama within 50 m")
    row = record_to_row(rec, STAMP)
    assert row["failure_class"] == "permanent" and row["stage_seconds"] == [{"stage": "sample", "seconds": 0.25}]
    assert row_to_record(row) == rec
    assert row_to_record(_through_arrow(row)) == rec


def test_a_row_of_some_columns_reads_as_a_record_with_the_rest_null():
    rec = row_to_record({"sample_id": "r-s0-1", "description": "x", "ocr": [{"heading": 0.0, "text": "A", "confidence": 0.5, "box": [0.0] * 8}]})
    assert rec.sample_id == "r-s0-1" and rec.street is None and rec.aerial is None and rec.timings == ()
    assert rec.description.text == "x" and rec.description.parts is None
    assert rec.ocr == (OcrText(0.0, "A", 0.5, ((0.0, 0.0),) * 4),)  # shards from before `dropped` existed


def test_aerial_and_map_columns_come_from_one_crop_declaration(monkeypatch):
    names = [c.name for c in COLUMNS]
    aerial = [n.removeprefix("aerial_") for n in names if n.startswith("aerial_")]
    mapped = [n.removeprefix("map_") for n in names if n.startswith("map_")]
    assert mapped == [m for m in aerial if m not in MAP_OMITS]
    monkeypatch.setattr(schema, "_CROP", schema._CROP + (schema.held("rotation", pa.float32(), "degrees"),))
    later = [c.name for item in schema._layout() if isinstance(item, schema.Part) for c in item.columns]
    assert "aerial_rotation" in later and "map_rotation" in later


def test_every_field_of_the_record_types_is_a_column_or_declared_unstored():
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    parts = [item for item in schema.LAYOUT if isinstance(item, schema.Part)]
    top = {item.field for item in schema.LAYOUT if not isinstance(item, schema.Part) and item.derive is None}
    assert fields(Record) == top | {p.field for p in parts} | set(schema.NOT_STORED)
    for p in parts:
        assert fields(p.cls) == {c.field for c in p.columns} | set(p.unstored), p.field
    for struct in (schema._VIEWS, schema._OCR, schema._SEGMENTS):
        assert fields(struct.cls) == {m.field for m in struct.members}, struct.cls


def test_report_qc_reads_the_row_as_a_record():
    from corebuild.dataset.report import qc_notes

    row = _through_arrow(record_to_row(_full(), STAMP))
    notes = [t for _, t in qc_notes(row)]
    assert notes == ["sign text claimed 1, in OCR evidence 1", "OCR readings 2, dropped 1 (on_vehicle 1)"]
    assert (False, "no description") in qc_notes({"sample_id": "x", "ocr": None})
