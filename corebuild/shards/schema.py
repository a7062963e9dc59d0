"""The shard schema, derived from the record types.

Each column is said once, in `LAYOUT`: its name, Arrow type and doc, and the record field it
holds (or how it is derived). From that one declaration come the Arrow schema (`shard_schema`),
record -> row (`record_to_row`, what the writer stores), row -> record (`row_to_record`, what the
dataset tools read back) and docs/schema.md (`schema_markdown`). The aerial and the map crop are
one declaration (`crop_part`) under two prefixes.

Shards are GeoParquet-compatible: `geometry` holds the sampled point as WKB and the schema carries
the `geo` metadata key (GeoParquet 1.1, CRS OGC:CRS84), so GeoPandas and DuckDB spatial read
it as geometry. Images are encoded bytes in binary columns. Failed samples are rows too.

What a row does not keep reads back as None: the locate answer (`Record.location`, see
`NOT_STORED`) and the map crop's size, centre and tile counts (`Part.unstored`). Derived columns
(geometry, failure_class, the build identity) are not read back, and `error` is stored redacted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import pyarrow as pa
import shapely
from pyproj import CRS
from shapely.geometry import Point

from corebuild.failures import failure_class, table_markdown
from corebuild.record import AerialCrop, Description, OcrText, Record, Segment, StreetCapture, StreetView
from corebuild.redact import redact_text


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class RunStamp:
    build_id: str
    config_hash: str
    code_version: str


@dataclass(frozen=True)
class Column:
    """One column, or one member of a struct column: name, Arrow type, doc, and either the field
    it holds (`field`, converted by `to_cell` on write and `from_cell` on read) or how it is
    derived from the record and the run (`derive`; such a column is not read back)."""

    name: str
    type: pa.DataType
    doc: str
    field: Optional[str] = None
    to_cell: Callable[[Any], Any] = _same
    from_cell: Callable[[Any], Any] = _same
    derive: Optional[Callable[[Record, RunStamp], Any]] = None
    nullable: bool = True


def held(name: str, typ: pa.DataType, doc: str, field: Optional[str] = None, **kw: Any) -> Column:
    """A column holding a field (of the same name unless `field` says otherwise)."""
    return Column(name, typ, doc, field or name, **kw)


def derived(name: str, typ: pa.DataType, doc: str, derive: Callable[[Record, RunStamp], Any], **kw: Any) -> Column:
    return Column(name, typ, doc, derive=derive, **kw)


@dataclass(frozen=True)
class Part:
    """Side-by-side columns holding one optional part of the record (`Record.<field>`, a `cls`).
    The part is absent (all its columns null) exactly when its first column is null."""

    field: str
    cls: type
    columns: tuple[Column, ...]
    unstored: tuple[str, ...] = ()  # fields of `cls` no column holds: None when read back

    def cells(self, rec: Record) -> dict[str, Any]:
        part = getattr(rec, self.field)
        return {c.name: None if part is None else c.to_cell(getattr(part, c.field)) for c in self.columns}

    def read(self, row: Mapping[str, Any]) -> Any:
        if row.get(self.columns[0].name) is None:
            return None
        return self.cls(**{c.field: c.from_cell(row.get(c.name)) for c in self.columns}, **dict.fromkeys(self.unstored))


@dataclass(frozen=True)
class Struct:
    """A list column with one struct per item of a tuple of dataclasses (views, OCR readings,
    segments); its members are Columns whose `field` is the item's attribute."""

    cls: type
    members: tuple[Column, ...]

    @property
    def type(self) -> pa.DataType:
        return pa.list_(pa.struct([(m.name, m.type) for m in self.members]))

    def to_cells(self, items: Optional[tuple[Any, ...]]) -> Optional[list[dict[str, Any]]]:
        if items is None:
            return None
        return [{m.name: m.to_cell(getattr(x, m.field)) for m in self.members} for x in items]

    def from_cells(self, cells: Optional[list[dict[str, Any]]]) -> Optional[tuple[Any, ...]]:
        if cells is None:
            return None
        return tuple(self.cls(**{m.field: m.from_cell(c.get(m.name)) for m in self.members}) for c in cells)

    def column(self, name: str, doc: str, field: Optional[str] = None) -> Column:
        return held(name, self.type, doc, field, to_cell=self.to_cells, from_cell=self.from_cells)


def _flat(pairs: tuple[tuple[float, float], ...]) -> list[float]:
    return [c for xy in pairs for c in xy]


def _pairs(flat: Optional[list[float]]) -> tuple[tuple[float, float], ...]:
    flat = flat or []
    return tuple(zip(flat[0::2], flat[1::2]))


def _tuple(cell: Optional[list[Any]]) -> tuple[Any, ...]:
    return tuple(cell or ())


_VIEWS = Struct(
    StreetView,
    (
        held("heading", pa.float32(), "degrees clockwise from north"),
        held("fov", pa.float32(), "horizontal field of view, degrees"),
        held("pitch", pa.float32(), "degrees"),
        held("width", pa.int32(), "pixels"),
        held("height", pa.int32(), "pixels"),
        held("format", pa.string(), "jpeg | png", "image_format"),
        held("image", pa.binary(), "encoded as fetched"),
    ),
)
_OCR = Struct(
    OcrText,
    (
        held("heading", pa.float32(), "heading of the view it was read in"),
        held("text", pa.string(), "the reading"),
        held("confidence", pa.float32(), "the backend's confidence"),
        held("box", pa.list_(pa.float32()), "x1, y1, ..., x4, y4 in the view's pixels", to_cell=_flat, from_cell=_pairs),
        held("dropped", pa.string(), "why it is not evidence (e.g. \"on_car\"), else null"),
    ),
)
_SEGMENTS = Struct(
    Segment,
    (
        held("heading", pa.float32(), "heading of the view it was found in"),
        held("label", pa.string(), "open-vocabulary label, if one was given"),
        held("label_score", pa.float32(), "the label's score"),
        held("bbox", pa.list_(pa.float32()), "x, y, w, h in the view's pixels", to_cell=list, from_cell=_tuple),
        held("area", pa.int32(), "pixels"),
        held("predicted_iou", pa.float32(), "the segmenter's predicted IoU"),
        held("stability", pa.float32(), "the segmenter's stability score"),
        held("rle_counts", pa.list_(pa.int32()), "uncompressed COCO RLE, column-major", to_cell=list, from_cell=_tuple),
        held("rle_size", pa.list_(pa.int32()), "height, width", to_cell=list, from_cell=_tuple),
    ),
)
_TIMING = pa.struct([("stage", pa.string()), ("seconds", pa.float32())])


def _timings_out(timings: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
    return [{"stage": k, "seconds": v} for k, v in timings]


def _timings_in(cells: Optional[list[dict[str, Any]]]) -> tuple[tuple[str, float], ...]:
    return tuple((c["stage"], c["seconds"]) for c in cells or ())


# One AerialCrop as columns: `<prefix>_<name>`; docs may name the `{prefix}` and the `{crop}`.
_CROP = (
    held("provider", pa.string(), "{prefix} provider name"),
    held("image", pa.binary(), "north-up {prefix} crop centred on the camera, encoded"),
    held("format", pa.string(), "jpeg | png", "image_format"),
    held("zoom", pa.int16(), "Web Mercator zoom of the {crop}"),
    held("width", pa.int32(), "pixels"),
    held("height", pa.int32(), "pixels"),
    held("west", pa.float64(), "{crop} bounds, degrees"),
    held("south", pa.float64(), "{crop} bounds, degrees"),
    held("east", pa.float64(), "{crop} bounds, degrees"),
    held("north", pa.float64(), "{crop} bounds, degrees"),
    held("center_lat", pa.float64(), "true {crop} centre latitude, degrees"),
    held("center_lon", pa.float64(), "true {crop} centre longitude, degrees"),
    held("gsd_m", pa.float64(), "ground metres per pixel at the {crop} centre"),
    held("tiles", pa.int16(), "number of tiles stitched"),
    held(
        "blank_tiles", pa.int16(),
        "stitched tiles that were blank or the source's placeholder (fewer than max_blank_share of them, else the row failed)",
    ),
    held("attribution", pa.string(), "source attribution, if any"),
    held("license", pa.string(), "licence of the {prefix} imagery: SPDX id, or LicenseRef-... for the source's terms (corebuild/licenses.py)"),
)
# The map crop's shards have never stored these (its reader gets None for them).
MAP_OMITS = ("width", "height", "center_lat", "center_lon", "tiles", "blank_tiles")


def crop_part(prefix: str, crop: str = "crop", omit: tuple[str, ...] = (), **docs: str) -> Part:
    """The columns of one AerialCrop (`Record.<prefix>`), named `<prefix>_<member>`, from the one
    crop declaration `_CROP`, less the members in `omit`; `docs` replaces members' docs."""
    cols = tuple(
        dataclasses.replace(c, name=f"{prefix}_{c.name}", doc=docs.get(c.name, c.doc).format(prefix=prefix, crop=crop))
        for c in _CROP
        if c.name not in omit
    )
    return Part(prefix, AerialCrop, cols, unstored=tuple(c.field for c in _CROP if c.name in omit))


def _street() -> Part:
    return Part(
        "street",
        StreetCapture,
        (
            held("street_provider", pa.string(), "street-level provider name", "provider"),
            held("pano_id", pa.string(), "provider's panorama/image id"),
            held("sequence_id", pa.string(), "capture sequence (Mapillary), if the provider has one"),
            held("street_lat", pa.float64(), "camera latitude (snapped by the provider), degrees", "lat"),
            held("street_lon", pa.float64(), "camera longitude, degrees", "lon"),
            held("capture_date", pa.string(), "capture date as the provider reports it (YYYY-MM)"),
            held("street_distance_m", pa.float64(), "metres from the sampled point to the camera", "distance_m"),
            held("street_license", pa.string(), "licence of the street imagery: SPDX id, or LicenseRef-... for the provider's terms (corebuild/licenses.py)", "license"),
            held("street_attribution", pa.string(), "attribution the licence asks for: the provider's credit, and the image's creator where known", "copyright"),
            _VIEWS.column("street_views", "one entry per heading: degrees clockwise from north, encoded image", "views"),
        ),
    )


def _description() -> Part:
    return Part(
        "description",
        Description,
        (
            held("description", pa.string(), "scene description", "text"),
            held("describer_backend", pa.string(), "template | vllm | openai", "backend"),
            held("describer_model", pa.string(), "model id (\"template\" for the offline describer)", "model_id"),
            held("prompt_id", pa.string(), "prompt set id in prompts/"),
            held("prompt_hash", pa.string(), "sha256 prefix of the prompt set file"),
            held("description_parts", pa.string(), "the model's structured answer as JSON (road, buildings, environment, signs), null for the template", "parts"),
            held("describer_sampling", pa.string(), "sampling parameters sent to the model, as JSON", "sampling"),
            held("prompt_tokens", pa.int32(), "prompt tokens the model reported"),
            held("completion_tokens", pa.int32(), "completion tokens the model reported"),
        ),
    )


def _strs_out(values: Optional[tuple[str, ...]]) -> Optional[list[str]]:
    return None if values is None else list(values)


def _strs_in(values: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    return None if values is None else tuple(values)


def _redacted(error: Optional[str]) -> Optional[str]:
    # The last gate: a quoted body or exception text never carries a credential.
    return redact_text(error) if error else error


def _layout() -> tuple[Union[Column, Part], ...]:
    return (
        held("sample_id", pa.string(), "stable key: <region>-s<seed>-<point index>", nullable=False),
        held("region_id", pa.string(), "region manifest id", nullable=False),
        held("seed", pa.int32(), "sampling seed"),
        held("point_index", pa.int32(), "index of the point in the region's sample"),
        held("lat", pa.float64(), "sampled point latitude, degrees WGS84"),
        held("lon", pa.float64(), "sampled point longitude, degrees WGS84"),
        derived("geometry", pa.binary(), "sampled point as WKB (GeoParquet primary geometry, OGC:CRS84)", lambda r, s: shapely.to_wkb(Point(r.lon, r.lat)), nullable=False),
        held("status", pa.string(), "kept | failed", nullable=False),
        held("failure_reason", pa.string(), "<stage>.<kind> for failed rows, else null"),
        derived(
            "failure_class", pa.string(), "transient (re-attempted by `build --retry-failed`) | permanent, for failed rows (table below), else null",
            lambda r, s: failure_class(r.failure_reason) if r.failed else None,
        ),
        held("error", pa.string(), "human-readable failure message (no secrets), else null", to_cell=_redacted),
        _street(),
        crop_part("aerial"),
        crop_part("map", "map crop", MAP_OMITS, provider="map-tile source (second aerial modality, e.g. OSM), null when off", attribution="map source attribution"),
        _OCR.column("ocr", "OCR evidence: text, confidence, box, heading of the view"),
        held("ocr_backend", pa.string(), "OCR backend and model id"),
        held("ocr_languages_read", pa.list_(pa.string()), "the region's OCR languages a reader of this row reads (codes as in its manifest)", to_cell=_strs_out, from_cell=_strs_in),
        held("ocr_languages_unread", pa.list_(pa.string()), "the region's OCR languages no reader here reads: sign text in them is not evidence", to_cell=_strs_out, from_cell=_strs_in),
        _SEGMENTS.column("segments", "open-world masks per view (RLE) with open-vocabulary labels; null when segmentation was off"),
        held("segmenter", pa.string(), "segmentation backend and model id, null when off"),
        held("labeler", pa.string(), "mask labeler backend and model id, null when masks are unlabelled"),
        _description(),
        held("signs_unverifiable", pa.list_(pa.string()), "sign text the description claims in a script no OCR reader here read: kept, unverified (else null)", to_cell=_strs_out, from_cell=_strs_in),
        held("stage_seconds", pa.list_(_TIMING), "wall seconds spent per stage on this record", "timings", to_cell=_timings_out, from_cell=_timings_in),
        derived("build_id", pa.string(), "build this row came from (see manifest.json)", lambda r, s: s.build_id),
        derived("config_hash", pa.string(), "hash of the content-relevant config", lambda r, s: s.config_hash),
        derived("code_version", pa.string(), "corebuild version + git commit", lambda r, s: s.code_version),
    )


LAYOUT = _layout()
NOT_STORED = ("location",)  # Record fields no column holds: the locate answer; the row keeps the capture
COLUMNS: tuple[Column, ...] = tuple(c for item in LAYOUT for c in (item.columns if isinstance(item, Part) else (item,)))
COLUMN_DOCS = {c.name: c.doc for c in COLUMNS}


def record_to_row(rec: Record, stamp: RunStamp) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in LAYOUT:
        if isinstance(item, Part):
            row.update(item.cells(rec))
        elif item.derive is not None:
            row[item.name] = item.derive(rec, stamp)
        else:
            row[item.name] = item.to_cell(getattr(rec, item.field))
    return row


def row_to_record(row: Mapping[str, Any]) -> Record:
    """The record a row holds, the inverse of `record_to_row`: its parts (street capture with its
    views and images, crops, description), OCR, segments and timings. A column the row lacks (a
    read of some columns, an older shard) reads as null; what no column holds is None."""
    fields: dict[str, Any] = dict.fromkeys(NOT_STORED)
    for item in LAYOUT:
        if isinstance(item, Part):
            fields[item.field] = item.read(row)
        elif item.derive is None:
            fields[item.field] = item.from_cell(row.get(item.name))
    return Record(**fields)


def geo_metadata() -> dict[str, Any]:
    return {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Point"],
                "crs": CRS("OGC:CRS84").to_json_dict(),
            }
        },
    }


def shard_schema() -> pa.Schema:
    fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in COLUMNS]
    return pa.schema(fields, metadata={b"geo": json.dumps(geo_metadata()).encode()})


def schema_markdown() -> str:
    """docs/schema.md, generated from the columns so the documentation cannot drift from the writer."""
    lines = [
        "# Shard schema",
        "",
        "Generated from `corebuild/shards/schema.py` (`python -m corebuild.shards.schema > docs/schema.md`); a test keeps it in sync.",
        "",
        "Each build writes `<output>/<region>/shards/part-u<unit>-<k>.parquet` (zstd, images stored as they",
        "came (no second compression), row groups of 32 rows)",
        "and `manifest.json`, whose `shards` list is the dataset: a shard it does not list belongs to an",
        "unfinished work unit and is deleted by the next run (see the README on resuming).",
        "Every sampled point is one row: `status` is `kept` or `failed`, and failed rows carry",
        "`failure_reason` and `error`. The schema's `geo` metadata key makes the files GeoParquet 1.1",
        "(primary column `geometry`, WKB points, CRS OGC:CRS84), so GeoPandas and DuckDB spatial read",
        "the location as geometry.",
        "",
        "| column | type | meaning |",
        "|---|---|---|",
    ]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | `{c.type}` | {c.doc.replace('|', chr(92) + '|')} |")
    lines += [
        "",
        "## Failure reasons",
        "",
        "`failure_reason` is `<stage>.<kind>` (`street.over_query_limit`, `aerial.http_503`); its kind decides",
        "`failure_class` (`corebuild/failures.py`). Transient rows are re-attempted in place by",
        "`corebuild build ... --retry-failed` (or only the reasons or kinds named:",
        "`--retry-failed street.over_query_limit,http_5xx`); `manifest.json` counts failures by reason and by class.",
        "",
        *table_markdown(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
