"""manifest.json's counts, read from the shards: kept rows per licence of their imagery."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from corebuild.shards.manifest import count_shards
from corebuild.shards.schema import shard_schema
from corebuild.shards.storage import open_storage
from tests.builds import fake_rows, write_fake_build


def _write(storage, name: str, rows: list[dict], drop: tuple[str, ...] = ()) -> str:
    table = pa.Table.from_pylist(rows, schema=shard_schema())
    table = table.drop_columns(list(drop))  # a shard written before these columns existed
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write(name, buf.getvalue())
    return name


def test_count_shards_counts_kept_rows_per_street_and_aerial_licence(tmp_path):
    storage = open_storage(str(tmp_path / "b"))
    rows = fake_rows("b", 47.0, 8.0, 10, fail_every=5)  # rows 4 and 9 failed: not counted
    for i in (0, 1, 2):
        rows[i].update(street_license="CC-BY-SA-4.0", street_attribution="Mapillary, CC BY-SA 4.0, by alice", aerial_license="ODbL-1.0")
    rows[3]["street_license"] = None  # a kept row whose provider said nothing (counted, not dropped)
    old = fake_rows("b", 47.0, 8.0, 5, seed=1, fail_every=5)  # 4 kept rows from before licences
    names = [_write(storage, "shards/part-u00000-000.parquet", rows),
             _write(storage, "shards/part-u00001-000.parquet", old, drop=("street_license", "street_attribution", "aerial_license", "map_license"))]
    counts = count_shards(storage, names)
    assert counts["kept"] == 12
    assert counts["licenses"] == {
        "street": {"CC-BY-SA-4.0": 3, "CC0-1.0": 4, "unrecorded": 5},
        "aerial": {"CC0-1.0": 5, "ODbL-1.0": 3, "unrecorded": 4},
    }


def test_a_generated_builds_manifest_counts_its_licences(tmp_path):
    url = write_fake_build(tmp_path, "za", -33.9, 18.4, 10)
    manifest = json.loads(open_storage(url).read("manifest.json"))
    assert manifest["counts"]["licenses"] == {"street": {"CC0-1.0": 8}, "aerial": {"CC0-1.0": 8}}
