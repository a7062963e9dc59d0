"""The shard schema, written once here, and record -> row conversion.

Shards are GeoParquet-compatible: `geometry` holds the sampled point as WKB and the schema carries
the `geo` metadata key (GeoParquet 1.1, CRS OGC:CRS84), so GeoPandas and DuckDB spatial read
it as geometry. Images are encoded bytes in binary columns. Failed samples are rows too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import shapely
from pyproj import CRS
from shapely.geometry import Point

from .failures import failure_class, table_markdown
from .record import Record
from .redact import redact_text

_VIEW = pa.struct(
    [
        ("heading", pa.float32()),
        ("fov", pa.float32()),
        ("pitch", pa.float32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("image", pa.binary()),
    ]
)
_OCR = pa.struct(
    [
        ("heading", pa.float32()),
        ("text", pa.string()),
        ("confidence", pa.float32()),
        ("box", pa.list_(pa.float32())),  # x1, y1, ..., x4, y4 in the view's pixels
        ("dropped", pa.string()),  # why it is not evidence (e.g. "on_car"), else null
    ]
)
_SEGMENT = pa.struct(
    [
        ("heading", pa.float32()),
        ("label", pa.string()),
        ("label_score", pa.float32()),
        ("bbox", pa.list_(pa.float32())),  # x, y, w, h in the view's pixels
        ("area", pa.int32()),
        ("predicted_iou", pa.float32()),
        ("stability", pa.float32()),
        ("rle_counts", pa.list_(pa.int32())),  # uncompressed COCO RLE, column-major
        ("rle_size", pa.list_(pa.int32())),  # height, width
    ]
)
_TIMING = pa.struct([("stage", pa.string()), ("seconds", pa.float32())])

FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("sample_id", pa.string(), "stable key: <region>-s<seed>-<point index>"),
    ("region_id", pa.string(), "region manifest id"),
    ("seed", pa.int32(), "sampling seed"),
    ("point_index", pa.int32(), "index of the point in the region's sample"),
    ("lat", pa.float64(), "sampled point latitude, degrees WGS84"),
    ("lon", pa.float64(), "sampled point longitude, degrees WGS84"),
    ("geometry", pa.binary(), "sampled point as WKB (GeoParquet primary geometry, OGC:CRS84)"),
    ("status", pa.string(), "kept | failed"),
    ("failure_reason", pa.string(), "<stage>.<kind> for failed rows, else null"),
    ("failure_class", pa.string(), "transient (re-attempted by `build --retry-failed`) | permanent, for failed rows (table below), else null"),
    ("error", pa.string(), "human-readable failure message (no secrets), else null"),
    ("street_provider", pa.string(), "street-level provider name"),
    ("pano_id", pa.string(), "provider's panorama/image id"),
    ("sequence_id", pa.string(), "capture sequence (Mapillary), if the provider has one"),
    ("street_lat", pa.float64(), "camera latitude (snapped by the provider), degrees"),
    ("street_lon", pa.float64(), "camera longitude, degrees"),
    ("capture_date", pa.string(), "capture date as the provider reports it (YYYY-MM)"),
    ("street_distance_m", pa.float64(), "metres from the sampled point to the camera"),
    ("street_views", pa.list_(_VIEW), "one entry per heading: degrees clockwise from north, encoded image"),
    ("aerial_provider", pa.string(), "aerial provider name"),
    ("aerial_image", pa.binary(), "north-up aerial crop centred on the camera, encoded"),
    ("aerial_format", pa.string(), "jpeg | png"),
    ("aerial_zoom", pa.int16(), "Web Mercator zoom of the crop"),
    ("aerial_width", pa.int32(), "pixels"),
    ("aerial_height", pa.int32(), "pixels"),
    ("aerial_west", pa.float64(), "crop bounds, degrees"),
    ("aerial_south", pa.float64(), "crop bounds, degrees"),
    ("aerial_east", pa.float64(), "crop bounds, degrees"),
    ("aerial_north", pa.float64(), "crop bounds, degrees"),
    ("aerial_center_lat", pa.float64(), "true crop centre latitude, degrees"),
    ("aerial_center_lon", pa.float64(), "true crop centre longitude, degrees"),
    ("aerial_gsd_m", pa.float64(), "ground metres per pixel at the crop centre"),
    ("aerial_tiles", pa.int16(), "number of tiles stitched"),
    ("aerial_blank_tiles", pa.int16(), "stitched tiles that were blank or the source's placeholder (fewer than max_blank_share of them, else the row failed)"),
    ("aerial_attribution", pa.string(), "source attribution, if any"),
    ("map_provider", pa.string(), "map-tile source (second aerial modality, e.g. OSM), null when off"),
    ("map_image", pa.binary(), "north-up map crop centred on the camera, encoded"),
    ("map_format", pa.string(), "jpeg | png"),
    ("map_zoom", pa.int16(), "Web Mercator zoom of the map crop"),
    ("map_west", pa.float64(), "map crop bounds, degrees"),
    ("map_south", pa.float64(), "map crop bounds, degrees"),
    ("map_east", pa.float64(), "map crop bounds, degrees"),
    ("map_north", pa.float64(), "map crop bounds, degrees"),
    ("map_gsd_m", pa.float64(), "ground metres per pixel at the map crop centre"),
    ("map_attribution", pa.string(), "map source attribution"),
    ("ocr", pa.list_(_OCR), "OCR evidence: text, confidence, box, heading of the view"),
    ("ocr_backend", pa.string(), "OCR backend and model id"),
    ("segments", pa.list_(_SEGMENT), "open-world masks per view (RLE) with open-vocabulary labels; null when segmentation was off"),
    ("segmenter", pa.string(), "segmentation backend and model id, null when off"),
    ("labeler", pa.string(), "mask labeler backend and model id, null when masks are unlabelled"),
    ("description", pa.string(), "scene description"),
    ("describer_backend", pa.string(), "template | vllm | openai"),
    ("describer_model", pa.string(), "model id (\"template\" for the offline describer)"),
    ("prompt_id", pa.string(), "prompt set id in prompts/"),
    ("prompt_hash", pa.string(), "sha256 prefix of the prompt set file"),
    ("description_parts", pa.string(), "the model's structured answer as JSON (road, buildings, environment, signs), null for the template"),
    ("describer_sampling", pa.string(), "sampling parameters sent to the model, as JSON"),
    ("prompt_tokens", pa.int32(), "prompt tokens the model reported"),
    ("completion_tokens", pa.int32(), "completion tokens the model reported"),
    ("stage_seconds", pa.list_(_TIMING), "wall seconds spent per stage on this record"),
    ("build_id", pa.string(), "build this row came from (see manifest.json)"),
    ("config_hash", pa.string(), "hash of the content-relevant config"),
    ("code_version", pa.string(), "corebuild version + git commit"),
]

COLUMN_DOCS = {name: doc for name, _, doc in FIELDS}


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
    fields = [pa.field(name, typ, nullable=name not in ("sample_id", "region_id", "status", "geometry")) for name, typ, _ in FIELDS]
    return pa.schema(fields, metadata={b"geo": json.dumps(geo_metadata()).encode()})


@dataclass(frozen=True)
class RunStamp:
    build_id: str
    config_hash: str
    code_version: str


def record_to_row(rec: Record, stamp: RunStamp) -> dict[str, Any]:
    s, a, m, d = rec.street, rec.aerial, rec.map, rec.description
    return {
        "sample_id": rec.sample_id,
        "region_id": rec.region_id,
        "seed": rec.seed,
        "point_index": rec.point_index,
        "lat": rec.lat,
        "lon": rec.lon,
        "geometry": shapely.to_wkb(Point(rec.lon, rec.lat)),
        "status": rec.status,
        "failure_reason": rec.failure_reason,
        "failure_class": failure_class(rec.failure_reason) if rec.failed else None,
        "error": redact_text(rec.error) if rec.error else rec.error,  # the last gate: a quoted body or exception text never carries a credential
        "street_provider": s.provider if s else None,
        "pano_id": s.pano_id if s else None,
        "sequence_id": s.sequence_id if s else None,
        "street_lat": s.lat if s else None,
        "street_lon": s.lon if s else None,
        "capture_date": s.capture_date if s else None,
        "street_distance_m": s.distance_m if s else None,
        "street_views": [
            {"heading": v.heading, "fov": v.fov, "pitch": v.pitch, "width": v.width, "height": v.height, "format": v.image_format, "image": v.image}
            for v in s.views
        ]
        if s
        else None,
        "aerial_provider": a.provider if a else None,
        "aerial_image": a.image if a else None,
        "aerial_format": a.image_format if a else None,
        "aerial_zoom": a.zoom if a else None,
        "aerial_width": a.width if a else None,
        "aerial_height": a.height if a else None,
        "aerial_west": a.west if a else None,
        "aerial_south": a.south if a else None,
        "aerial_east": a.east if a else None,
        "aerial_north": a.north if a else None,
        "aerial_center_lat": a.center_lat if a else None,
        "aerial_center_lon": a.center_lon if a else None,
        "aerial_gsd_m": a.gsd_m if a else None,
        "aerial_tiles": a.tiles if a else None,
        "aerial_blank_tiles": a.blank_tiles if a else None,
        "aerial_attribution": a.attribution if a else None,
        "map_provider": m.provider if m else None,
        "map_image": m.image if m else None,
        "map_format": m.image_format if m else None,
        "map_zoom": m.zoom if m else None,
        "map_west": m.west if m else None,
        "map_south": m.south if m else None,
        "map_east": m.east if m else None,
        "map_north": m.north if m else None,
        "map_gsd_m": m.gsd_m if m else None,
        "map_attribution": m.attribution if m else None,
        "ocr": [
            {"heading": t.heading, "text": t.text, "confidence": t.confidence, "box": [c for xy in t.box for c in xy], "dropped": t.dropped}
            for t in rec.ocr
        ]
        if rec.ocr is not None
        else None,
        "ocr_backend": rec.ocr_backend,
        "segments": [
            {
                "heading": g.heading, "label": g.label, "label_score": g.label_score, "bbox": list(g.bbox), "area": g.area,
                "predicted_iou": g.predicted_iou, "stability": g.stability, "rle_counts": list(g.rle_counts), "rle_size": list(g.rle_size),
            }
            for g in rec.segments
        ]
        if rec.segments is not None
        else None,
        "segmenter": rec.segmenter,
        "labeler": rec.labeler,
        "description": d.text if d else None,
        "describer_backend": d.backend if d else None,
        "describer_model": d.model_id if d else None,
        "prompt_id": d.prompt_id if d else None,
        "prompt_hash": d.prompt_hash if d else None,
        "description_parts": d.parts if d else None,
        "describer_sampling": d.sampling if d else None,
        "prompt_tokens": d.prompt_tokens if d else None,
        "completion_tokens": d.completion_tokens if d else None,
        "stage_seconds": [{"stage": k, "seconds": v} for k, v in rec.timings],
        "build_id": stamp.build_id,
        "config_hash": stamp.config_hash,
        "code_version": stamp.code_version,
    }


# Encoded images are incompressible and never repeat: zstd and dictionaries only cost CPU there.
IMAGE_COLUMNS = ("street_views.list.element.image", "aerial_image", "map_image")


class ShardWriter:
    """Rows -> Parquet shards in a Storage (local directory or gs://), rolling over by size.

    A shard is encoded straight into a spool file (beside its final name locally, a temp file
    for gs://) and then stored atomically (rename / one upload), so a shard exists whole or not
    at all and memory holds one row group, not a shard. Row groups hold `row_group_rows` rows
    (rows carry ~0.3 MB of images). A finished shard is stored and hashed on a background thread
    while the next one encodes (at most one in flight); `close()` returns only once every shard
    is stored, so a caller may then write a completion marker.

    An OSError while Arrow writes the spool (a full disk is first met there: ENOSPC from the
    sink's write) becomes a StorageError naming the shard ("disk full writing ..."), and any error
    in `write` or `close` drops the half-written spool file: the writer is then spent.
    """

    def __init__(
        self, storage, prefix: str, target_bytes: int = 256 * 1024 * 1024, row_group_rows: int = 32, codec: str = "zstd", stable_names: bool = False
    ):
        import uuid

        self.storage, self.prefix, self.stable_names = storage, prefix, stable_names
        self.target_bytes, self.row_group_rows, self.codec = target_bytes, row_group_rows, codec
        self.schema = shard_schema()
        paths = _column_paths(self.schema)
        self._options = {
            "compression": {name: ("none" if name in IMAGE_COLUMNS else codec) for name in paths},
            # Dictionaries and min/max statistics of unique image/WKB bytes help no reader and cost a pass.
            "use_dictionary": [n for n in paths if n not in IMAGE_COLUMNS and n != "geometry"],
            "write_statistics": [n for n in paths if n not in IMAGE_COLUMNS and n != "geometry"],
        }
        self._tag = uuid.uuid4().hex[:12]  # unique per writer: workers never collide
        self._rows: list[dict[str, Any]] = []
        self._sink = None  # (spool path or BytesIO, pyarrow sink)
        self._writer = None
        self._n = 0
        self.written: list[tuple[str, int]] = []  # (name, rows)
        self.details: list[dict[str, Any]] = []  # path (base name), rows, bytes, sha256
        self._shard_rows = 0
        self._pool = None
        self._pending = None  # the shard being stored
        self._spent = False  # an error dropped the shard being written

    def _name(self) -> str:
        # Stable names (a work unit's shards) are overwritten by a retry; unique ones never collide.
        return f"{self.prefix}-{self._n:03d}.parquet" if self.stable_names else f"{self.prefix}-{self._tag}-{self._n:04d}.parquet"

    def write(self, row: dict[str, Any]) -> None:
        if self._spent:
            raise RuntimeError(f"ShardWriter({self.prefix!r}) failed earlier; its rows are lost")
        self._rows.append(row)
        if len(self._rows) >= self.row_group_rows:
            try:
                self._flush_rows()
                if self._writer is not None and self._sink[1].tell() >= self.target_bytes:
                    self._finish_shard()
            except BaseException:
                self._discard()
                raise

    def _spool_error(self, exc: OSError) -> Exception:
        """An OSError from writing the spool -> StorageError naming the shard (and the spool
        file when it lies elsewhere, as gs:// spools in the local temp directory do)."""
        import os

        from .storage import _os_error

        join = getattr(self.storage, "join", None)
        where = join(self._name()) if join else self._name()
        spool = self._sink[0] if self._sink is not None else None
        if isinstance(spool, Path) and os.path.dirname(where) != str(spool.parent):
            where = f"{spool} (the local spool file of {where})"
        return _os_error("writing", where, exc)

    def _flush_rows(self) -> None:
        import io

        import pyarrow.parquet as pq

        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        try:
            if self._writer is None:
                spool = getattr(self.storage, "spool_path", None)
                if spool is not None:
                    path = spool(self._name())
                    self._sink = (path, None)  # an error opening it still drops the file (gs:// spools exist already)
                    self._sink = (path, pa.OSFile(str(path), "wb"))  # native writes: no Python per page
                else:  # a Storage without spooling (e.g. a test double): build the shard in memory
                    buf = io.BytesIO()
                    self._sink = (buf, pa.PythonFile(buf, mode="w"))
                self._writer = pq.ParquetWriter(self._sink[1], self.schema, **self._options)  # writes the magic bytes
            self._writer.write_table(table, row_group_size=len(self._rows))
        except OSError as exc:  # pyarrow raises the sink's OSError (errno set) as it is
            raise self._spool_error(exc) from None
        self._shard_rows += len(self._rows)
        self._rows = []

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        from concurrent.futures import ThreadPoolExecutor

        where, sink = self._sink
        try:
            self._writer.close()  # the footer: the last bytes of the spool
            size = sink.tell()
            sink.close()
        except OSError as exc:
            raise self._spool_error(exc) from None
        self._wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="corebuild-shard")
        self._pending = self._pool.submit(self._store, self._name(), where, self._shard_rows, size)
        self._n += 1
        self._writer, self._sink, self._shard_rows = None, None, 0

    def _store(self, name: str, where, rows: int, size: int) -> None:
        import hashlib

        if isinstance(where, Path):
            digest = hashlib.sha256()
            with open(where, "rb") as f:  # from the page cache: the bytes were just written
                for block in iter(lambda: f.read(8 << 20), b""):
                    digest.update(block)
            self.storage.write_file(name, where)
        else:
            data = where.getvalue()
            digest = hashlib.sha256(data)
            self.storage.write(name, data)
        self.written.append((name, rows))
        self.details.append({"path": name.rsplit("/", 1)[-1], "rows": rows, "bytes": size, "sha256": digest.hexdigest()})

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a storage error (disk full) surfaces here, in the caller

    def _discard(self) -> None:
        """After an error: drop the shard being written (its spool file), let a shard already
        being stored finish (its own error, if any, is not the one reported), and stop."""
        from contextlib import suppress

        self._spent = True
        self._rows = []
        if self._sink is not None:
            where, sink = self._sink
            if self._writer is not None:
                with suppress(Exception):  # writes a footer that nobody reads; may fail the same way
                    self._writer.close()
            if sink is not None:
                with suppress(Exception):
                    sink.close()
            if isinstance(where, Path):
                with suppress(OSError):
                    where.unlink(missing_ok=True)
            self._writer, self._sink = None, None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending = None

    def close(self) -> list[tuple[str, int]]:
        if self._spent:
            raise RuntimeError(f"ShardWriter({self.prefix!r}) failed earlier; its rows are lost")
        try:
            self._flush_rows()
            self._finish_shard()
            self._wait()
        except BaseException:
            self._discard()
            raise
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return self.written


def _column_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths (`street_views.list.element.image`), as writer options name them."""
    out: list[str] = []

    def walk(prefix: str, typ: pa.DataType) -> None:
        if pa.types.is_struct(typ):
            for f in typ:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(typ):
            walk(f"{prefix}.list.element", typ.value_type)
        else:
            out.append(prefix)

    for f in schema:
        walk(f.name, f.type)
    return out


def schema_markdown() -> str:
    """docs/schema.md, generated from FIELDS so the documentation cannot drift from the writer."""
    lines = [
        "# Shard schema",
        "",
        "Generated from `corebuild/write.py` (`python -m corebuild.write > docs/schema.md`); a test keeps it in sync.",
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
    for name, typ, doc in FIELDS:
        lines.append(f"| `{name}` | `{typ}` | {doc.replace('|', chr(92) + '|')} |")
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
