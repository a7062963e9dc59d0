"""corebuild.dataset.torch_data (the torch reader) and the docs/reading.md recipes (datasets, DuckDB, GeoPandas)
over generated builds: every kept sample is read exactly once across workers and ranks."""

from __future__ import annotations

import io
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, get_worker_info

from tests.conftest import ROOT
from corebuild.dataset import torch_data as data_mod
from corebuild.dataset.torch_data import CorebuildDataset, Sample, View
from corebuild.dataset.reader import find_builds
from corebuild.errors import CorebuildError
from tests.builds import write_fake_build


def _shards(root: str) -> list[str]:
    return [u for b in find_builds(root) for u in b.shard_urls()]


def _ids(urls: list[str]) -> dict[str, str]:
    """sample_id -> status, read directly with pyarrow."""
    out: dict[str, str] = {}
    for u in urls:
        t = pq.read_table(u, columns=["sample_id", "status"], use_threads=False).to_pydict()
        out.update(zip(t["sample_id"], t["status"]))
    return out


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> str:
    """Two regions, six shards, 14 row groups of 1-4 rows; every 5th row failed."""
    root = tmp_path_factory.mktemp("builds") / "out"  # named as in docs/reading.md
    write_fake_build(root, "ra", -33.9, 18.4, 25)  # shards 10+10+5 rows
    write_fake_build(root, "rb", 6.5, 3.4, 17, seed=1, rows_per_shard=6)  # 6+6+5
    # A shard the manifest does not list (a killed attempt): never read.
    pq.write_table(pq.read_table(_shards(str(root))[0]), root / "ra" / "shards" / "part-u99999-000.parquet")
    return str(root)


@pytest.fixture(scope="module")
def status(out) -> dict[str, str]:
    return _ids(_shards(out))


@pytest.fixture(scope="module")
def kept(status) -> set[str]:
    return {k for k, v in status.items() if v == "kept"}


def _id_and_worker(s: Sample) -> tuple[str, int]:
    info = get_worker_info()
    return s["sample_id"], info.id if info else -1


def _load(ds: CorebuildDataset, workers: int = 2) -> list[tuple[str, int]]:
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def test_dataloader_two_workers_reads_every_kept_sample_once(out, kept):
    got = _load(CorebuildDataset(out, transform=_id_and_worker))
    ids = [sid for sid, _ in got]
    assert len(ids) == len(set(ids)) and set(ids) == kept
    assert {w for _, w in got} == {0, 1}


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_times_workers_partition_the_samples(out, kept, shuffle):
    per_rank = [
        [sid for sid, _ in _load(CorebuildDataset(out, transform=_id_and_worker, rank=r, world_size=2, shuffle=shuffle, seed=3))]
        for r in range(2)
    ]
    assert all(per_rank) and set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(kept)


def test_rank_and_world_size_default_to_torch_distributed(out, monkeypatch):
    explicit = [s["sample_id"] for s in CorebuildDataset(out, rank=1, world_size=2, columns=["sample_id"])]
    assert [s["sample_id"] for s in CorebuildDataset(out, columns=["sample_id"])] != explicit
    monkeypatch.setattr(data_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(data_mod.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(data_mod.dist, "get_world_size", lambda: 2)
    assert [s["sample_id"] for s in CorebuildDataset(out, columns=["sample_id"])] == explicit
    with pytest.raises(ValueError):
        CorebuildDataset(out, rank=2, world_size=2)


def test_equal_per_rank_cuts_every_worker_to_the_smallest_workers_count(out, kept):
    for epoch in range(2):
        streams: dict[bool, dict[tuple[int, int], list[str]]] = {False: {}, True: {}}
        for equal in (False, True):
            for r in range(2):
                ds = CorebuildDataset(out, transform=_id_and_worker, rank=r, world_size=2, shuffle=True, equal_per_rank=equal)
                ds.set_epoch(epoch)
                for sid, w in _load(ds):
                    streams[equal].setdefault((r, w), []).append(sid)
        full, cut = streams[False], streams[True]
        m = min(len(v) for v in full.values())
        assert sorted(v for s in full.values() for v in s) == sorted(kept) and m < max(len(v) for v in full.values())  # uneven
        assert cut.keys() == full.keys() and all(cut[k] == full[k][:m] for k in full)  # same stream, truncated


def test_filters_and_num_rows(out, status, kept):
    everything = CorebuildDataset(out, kept_only=False, columns=["sample_id", "status"])
    assert sorted(s["sample_id"] for s in everything) == sorted(status) and everything.num_rows() == len(status) == 42
    assert CorebuildDataset(out).num_rows() == len(kept) == 34
    chosen = {"ra-s0-0", "ra-s0-4", "rb-s1-16", "rb-s1-9", "nope"}  # ra-s0-4 and rb-s1-9 are failed rows
    ds = CorebuildDataset(out, sample_ids=chosen)
    assert {s["sample_id"] for s in ds} == chosen & kept == {"ra-s0-0", "rb-s1-16"} and ds.num_rows() == 2
    assert {s["sample_id"] for s in CorebuildDataset(out, sample_ids=chosen, kept_only=False)} == chosen - {"nope"}
    assert [s["sample_id"] for s in pickle.loads(pickle.dumps(ds))] == [s["sample_id"] for s in ds]


def test_split_convenience_reads_a_splits_file(out, tmp_path):
    path = tmp_path / "splits" / "blocks.parquet"  # the columns corebuild.dataset.splits.load_split reads
    path.parent.mkdir()
    pq.write_table(pa.table({"sample_id": ["ra-s0-1", "ra-s0-2", "rb-s1-0", "rb-s1-1"], "split": ["val", "val", "val", "train"]}), path)
    ds = CorebuildDataset(out, split=(str(path), "val"), sample_ids={"ra-s0-1", "rb-s1-0", "rb-s1-1"})
    assert {s["sample_id"] for s in ds} == {"ra-s0-1", "rb-s1-0"}


def test_sources_are_manifest_shards_or_explicit_files(out, kept):
    urls = _shards(out)
    assert {s["sample_id"] for s in CorebuildDataset(urls)} == kept
    regions = [str(Path(out) / "ra"), str(Path(out) / "rb")]
    assert len(CorebuildDataset(regions).items) == len(CorebuildDataset(out).items) == 14
    assert {s["sample_id"] for s in CorebuildDataset(urls[:1])} == {k for k in kept if k.startswith("ra-s0-") and int(k[6:]) < 10}
    with pytest.raises(CorebuildError, match="no column"):
        CorebuildDataset(out, columns=["sample_id", "nonsense"])
    assert len(next(iter(CorebuildDataset(out, columns=None))).row) == len(pq.read_schema(urls[0]).names)


def test_images_decode_only_on_access(out, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    samples = list(CorebuildDataset(out))
    assert [s["sample_id"] for s in samples] and not opened  # iterating decodes nothing
    s = samples[0]
    assert isinstance(s["aerial_image"], bytes) and s["aerial_format"] == "jpeg" and not opened
    assert "aerial" in s and "street_views" in s and "map" not in s and len(s) == len(list(s)) == 9 and not opened
    aerial = s["aerial"]
    assert isinstance(aerial, Image.Image) and aerial.size == (64, 64) and len(opened) == 1
    assert s["aerial"] is aerial and len(opened) == 1  # cached
    views = s["street_views"]
    assert [v.heading for v in views] == [0, 90, 180, 270] and all(isinstance(v.image, Image.Image) for v in views)
    assert len(opened) == 5 and s.row["street_views"][0]["image"][:2] == b"\xff\xd8"  # raw JPEG still reachable
    again = pickle.loads(pickle.dumps(s))  # the cache is not pickled
    assert again["aerial"].size == (64, 64) and len(opened) == 6


def test_decode_bytes_leaves_images_encoded(out):
    s = next(iter(CorebuildDataset(out, decode="bytes")))
    assert s["aerial"] == s["aerial_image"] and isinstance(s["aerial"], bytes)
    assert all(isinstance(v, View) and v.image[:2] == b"\xff\xd8" for v in s["street_views"])
    assert Image.open(io.BytesIO(s["street_views"][1].image)).size == (64, 64)
    with pytest.raises(ValueError, match="decode"):
        CorebuildDataset(out, decode="numpy")  # type: ignore[arg-type]


def to_tensors(s: Sample) -> dict:
    """The example transform from corebuild.dataset.torch_data's docstring (smaller images)."""

    def chw(img):
        return torch.from_numpy(np.array(img.convert("RGB").resize((32, 32)))).permute(2, 0, 1)

    return {
        "aerial": chw(s["aerial"]),
        "street": torch.stack([chw(v.image) for v in s["street_views"]]),
        "text": s["description"], "lat": s["lat"], "lon": s["lon"], "sample_id": s["sample_id"],
    }


def test_transform_output_reaches_the_batch(out, kept):
    batches = list(DataLoader(CorebuildDataset(out, transform=to_tensors), batch_size=4, num_workers=2))
    b = batches[0]
    assert b["aerial"].shape == (4, 3, 32, 32) and b["aerial"].dtype == torch.uint8
    assert b["street"].shape == (4, 4, 3, 32, 32) and b["lat"].dtype == torch.float64
    assert all(t.startswith("A street in r") for t in b["text"])
    assert sorted(i for b in batches for i in b["sample_id"]) == sorted(kept)


def test_shuffle_changes_order_per_epoch_not_the_set(out, kept):
    ds = CorebuildDataset(out, columns=["sample_id"], shuffle=True, seed=7)
    orders = []
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        orders.append([s["sample_id"] for s in ds])
    assert orders[0] == orders[2] != orders[1] and set(orders[1]) == kept and len(orders[1]) == len(kept)
    plain = [s["sample_id"] for s in CorebuildDataset(out, columns=["sample_id"])]
    assert plain != orders[0] and sorted(plain) == sorted(orders[0])
    ds.transform = _id_and_worker  # workers copy the dataset, epoch included, when the iterator starts
    ds.set_epoch(1)
    assert sorted(sid for sid, _ in _load(ds)) == sorted(kept)


def test_gs_shards_are_read_by_range(gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator["host"])
    root = f"gs://{gcs_emulator['bucket']}/data-test"
    write_fake_build(root, "rg", 1.3, 103.8, 12)
    ds = CorebuildDataset(root, transform=_id_and_worker)
    assert ds.num_rows() == 10 and len(ds.items) == 4  # shards of 10 + 2 rows, row groups of 4
    assert sorted(sid for sid, _ in _load(ds)) == sorted(f"rg-s0-{i}" for i in range(12) if i % 5 != 4)


# --- docs/reading.md recipes, run verbatim from the document (cwd: the parent of out/) ---------

DOC = ROOT / "docs" / "reading.md"


def _blocks(section: str, lang: str) -> list[str]:
    """Fenced `lang` code blocks under the `## section` heading of docs/reading.md."""
    text = DOC.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith(lang + "\n")]


def test_recipe_hugging_face_datasets(out, status, kept, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)  # not ~/.cache
    monkeypatch.chdir(Path(out).parent)
    full, streaming = _blocks("Hugging Face `datasets`", "python")
    ns: dict = {}
    exec(full, ns)
    assert sorted(ns["files"]) == sorted(str(Path(u).relative_to(Path(out).parent)) for u in _shards(out))
    raw = datasets.load_dataset("parquet", data_files=ns["files"], split="train")  # unchanged: every row, every column
    assert raw.num_rows == len(status) and raw.column_names == pq.read_schema(ns["files"][0]).names
    ds = ns["ds"]
    assert sorted(ds["sample_id"]) == sorted(kept)
    row = ds[0]
    assert row["aerial"].size == (64, 64) and len(row["street"]) == 4 and row["street"][2].mode == "RGB"
    per_rank = []
    for rank in range(2):
        ns.update(rank=rank, world_size=2)
        exec(streaming, ns)
        per_rank.append([r["sample_id"] for r in ns["ds"]])
    assert set(per_rank[0]).isdisjoint(per_rank[1]) and sorted(per_rank[0] + per_rank[1]) == sorted(kept)


def test_recipe_duckdb(out, status, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    monkeypatch.chdir(Path(out).parent)
    con = duckdb.connect()
    results = [con.sql(q).fetchall() for block in _blocks("DuckDB", "sql") for q in block.split(";") if q.strip()]
    shards_set, counts, kept_rows, bbox, wkt, in_extent = results
    files = _shards(out)
    listed = con.sql("SELECT getvariable('shards')").fetchall()[0][0]
    assert listed == sorted(os.path.relpath(u) for u in files)  # the unlisted shard is not there
    expect = Counter()
    for u in files:
        t = pq.read_table(u, columns=["region_id", "status", "failure_reason"], use_threads=False).to_pylist()
        expect.update((r["region_id"], r["status"], r["failure_reason"]) for r in t)
    assert {(r, s, f): n for r, s, f, n in counts} == dict(expect)
    assert sorted(r[0] for r in kept_rows) == sorted(k for k, v in status.items() if v == "kept")
    assert Image.open(io.BytesIO(kept_rows[0][2])).size == (64, 64) and kept_rows[0][3][0]["heading"] == 0
    assert bbox == [("ra", 20)] and in_extent == [(25,)]
    sid, text, crs = wkt[0]
    lat, lon = con.sql(f"SELECT lat, lon FROM read_parquet({files!r}) WHERE sample_id = '{sid}'").fetchall()[0]
    assert text == f"POINT ({lon!r} {lat!r})" and crs == "OGC:CRS84"
    typ = con.sql(f"SELECT typeof(geometry) FROM read_parquet({files!r}) LIMIT 1").fetchall()
    assert typ == [("GEOMETRY('OGC:CRS84')",)]
    glob = con.sql(f"SELECT count(*) FROM read_parquet('{out}/*/shards/*.parquet')").fetchall()
    assert glob == [(len(status) + 10,)]  # why the docs say: use the manifest's list, not a glob


def test_recipe_geopandas(out):
    pytest.importorskip("geopandas")
    shard_path = _shards(out)[0]
    ns: dict = {"shard_path": shard_path}
    exec(_blocks("GeoPandas", "python")[0], ns)
    gdf = ns["gdf"]
    assert gdf.crs.to_string() == "OGC:CRS84" and set(gdf.geom_type) == {"Point"} and len(gdf) == 10
    t = pq.read_table(shard_path, columns=["lat", "lon"]).to_pydict()
    assert np.allclose(gdf.geometry.y, t["lat"]) and np.allclose(gdf.geometry.x, t["lon"])
