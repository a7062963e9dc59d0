"""`corebuild eval retrieval` on small generated builds whose aerial colours are named in the
descriptions (learnable), with tiny encoders so the whole file runs in seconds."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from corebuild.errors import CorebuildError
from corebuild.eval import retrieval as R
from corebuild.shards.manifest import count_shards
from corebuild.shards.schema import shard_schema
from corebuild.shards.storage import open_storage
from tests.builds import fake_rows

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30), "white": (245, 245, 245), "purple": (130, 30, 150)}
NAMES = list(COLOURS)
TINY = R.RetrievalConfig(epochs=12, seed=0, dim=32, hidden=64, width=8, text_buckets=1024, image_px=16, batch_size=16, lr=1e-2)


def _aerial(left: str, right: str) -> bytes:
    img = Image.new("RGB", (32, 32), COLOURS[left])
    img.paste(COLOURS[right], (16, 0, 32, 32))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_build(root: Path, n: int = 90, *, aerial: bool = True, maps: bool = False, kept: bool = True) -> str:
    """A region build in the shard schema: row i's aerial is two colour halves, and its
    description names both colours and a sign whose text is also in the row's OCR."""
    storage = open_storage(str(root / "town"))
    rows = fake_rows("town", 47.0, 8.0, n, spread_m=2000, fail_every=1 if not kept else 0)
    for i, row in enumerate(rows):
        if row["status"] != "kept":
            continue
        a, b = NAMES[i % 6], NAMES[(i // 6) % 6]
        row["description"] = f'Facing west: a {a} building. Facing east: a {b} building, a sign reading "KIOSK {i}" and LOTTO{i} on it.'
        row["ocr"] = [dict(row["ocr"][0], text=f"KIOSK {i}"), dict(row["ocr"][0], text=f"LOTTO{i}")]
        row["aerial_image"] = _aerial(a, b) if aerial else None
        if maps:
            row["map_image"] = _aerial(b, a)
    names = []
    for k in range(0, n, 30):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[k : k + 30], schema=shard_schema()), buf, row_group_size=8)
        names.append(f"shards/part-{k // 30:05d}.parquet")
        storage.write(names[-1], buf.getvalue())
    counts = count_shards(storage, names)
    manifest = {"build_id": "town-test", "region_id": "town", "region": {"name": "Town", "country": "CH", "continent": "Europe"},
                "counts": {"sampled": n}, "consistent": True, "shards": counts["shards"]}
    storage.write("manifest.json", json.dumps(manifest).encode())
    return storage.url


def write_split(root: Path, n: int = 90, train: int = 50, val: int = 20, name: str = "s") -> str:
    ids = [f"town-s0-{i}" for i in range(n)]
    split = ["train" if i < train else "val" if i < train + val else "test" for i in range(n)]
    path = root / "splits" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"sample_id": ids, "split": split}), path)
    return str(path)


@pytest.fixture(scope="module")
def town(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("town")
    return write_build(root), write_split(root)


@pytest.fixture(scope="module")
def trained(town) -> dict:
    return R.run_retrieval(*town, TINY, "tiny")


# --- metrics on hand-made rankings ----------------------------------------------------------------


def test_ranks_recall_and_median_on_known_similarities():
    sim = np.array([
        [0.9, 0.1, 0.2, 0.0],  # true first: rank 1
        [0.5, 0.4, 0.3, 0.0],  # one above: rank 2
        [0.9, 0.8, 0.1, 0.7],  # three above: rank 4
        [0.3, 0.3, 0.3, 0.3],  # all tied: ties count against the query, rank 4
    ])
    assert R.ranks_from_similarity(sim).tolist() == [1, 2, 4, 4]
    m = R.metrics_from_similarity(sim, ks=(1, 2, 3))
    assert (m["recall@1"], m["recall@2"], m["recall@3"]) == (0.25, 0.5, 0.5)
    assert m["median_rank"] == 3.0 and m["candidates"] == 4
    assert m["chance"] == {"recall@1": 0.25, "recall@2": 0.5, "recall@3": 0.75, "median_rank": 2.5}
    assert R.chance(5)["recall@10"] == 1.0  # K above the gallery: certain
    with pytest.raises(ValueError):
        R.ranks_from_similarity(np.zeros((2, 3)))


# --- sign text ablation ---------------------------------------------------------------------------


def test_strip_sign_text_removes_quoted_phrases_and_ocr_texts():
    text = 'A red building, a sign reading "CAFE ROMA" on the left, Bäckerei Meier above a door de, a poster “SALE”. A cat.'
    out = R.strip_sign_text(text, ["CAFE ROMA", "bäckerei meier", "A", "de"])  # "A": too short to strip unquoted
    assert out == "A red building, a sign reading on the left, above a door, a poster. A cat."
    assert R.strip_sign_text("No signs.", []) == "No signs."


def test_ablation_queries_are_the_stripped_descriptions(town):
    rows = R.read_rows(town[0], {"train": {"town-s0-3"}, "val": set(), "test": set()}, 8)
    assert rows.texts == ['Facing west: a yellow building. Facing east: a red building, a sign reading "KIOSK 3" and LOTTO3 on it.']
    assert rows.texts_no_sign == ["Facing west: a yellow building. Facing east: a red building, a sign reading and on it."]


# --- training and the report ----------------------------------------------------------------------


def test_training_beats_chance_and_writes_the_report(town, trained):
    for split in ("val", "test"):
        m = trained["aerial"]["splits"][split]["full"]
        assert m["candidates"] == 20
        assert m["recall@5"] >= 2 * m["chance"]["recall@5"], m
        assert m["median_rank"] < m["chance"]["median_rank"] / 2, m
        assert trained["aerial"]["splits"][split]["no_sign_text"]["candidates"] == 20
    assert trained["aerial"]["losses"][-1] < trained["aerial"]["losses"][0]
    assert trained["map"] == R.NO_MAP
    written = json.loads((Path(town[0]) / "eval" / "retrieval-tiny.json").read_text())
    assert written["aerial"]["splits"] == json.loads(json.dumps(trained["aerial"]["splits"]))
    assert written["config"]["epochs"] == 12 and written["rows"]["train"] == 50
    assert len(written["split_sha256"]) == 64 and written["code_version"]


def test_same_seed_same_metrics(town, trained):
    again = R.run_retrieval(*town, TINY, "again")
    assert again["aerial"]["splits"] == trained["aerial"]["splits"]
    assert again["aerial"]["losses"] == trained["aerial"]["losses"]


def test_map_modality_when_the_build_has_it(tmp_path):
    build = write_build(tmp_path, 45, maps=True)
    rep = R.run_retrieval(build, write_split(tmp_path, 45, 25, 10), dataclasses.replace(TINY, epochs=1))
    assert rep["map"]["splits"]["test"]["full"]["candidates"] == 10
    assert rep["map"]["train_rows"] == 25


def test_cli_prints_the_table(town, capsys, monkeypatch):
    from corebuild.cli import main

    monkeypatch.setattr(R, "RetrievalConfig", lambda **kw: dataclasses.replace(TINY, **kw))  # tiny encoders, CLI flags on top
    assert main(["eval", "retrieval", town[0], "--split", town[1], "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "chance R@10" in out and "no sign text" in out and R.NO_MAP in out
    assert (Path(town[0]) / "eval" / "retrieval-s.json").exists()


# --- errors ---------------------------------------------------------------------------------------


def test_empty_train_split(town, tmp_path):
    with pytest.raises(CorebuildError, match="train split is empty"):
        R.run_retrieval(town[0], write_split(tmp_path, train=0), TINY)


def test_no_kept_rows(tmp_path):
    build = write_build(tmp_path, 30, kept=False)
    with pytest.raises(CorebuildError, match="no kept rows"):
        R.run_retrieval(build, write_split(tmp_path, 30, 10, 10), TINY)


def test_no_aerial_images(tmp_path):
    build = write_build(tmp_path, 30, aerial=False)
    with pytest.raises(CorebuildError, match="no aerial images"):
        R.run_retrieval(build, write_split(tmp_path, 30, 10, 10), TINY)


def test_split_of_another_build(town, tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"sample_id": ["elsewhere-1", "elsewhere-2"], "split": ["train", "train"]}), path)
    with pytest.raises(CorebuildError, match="another build"):
        R.run_retrieval(town[0], str(path), TINY)


def test_missing_init_weights_named(town, tmp_path):
    missing = str(tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(CorebuildError, match=f"--init {missing}: no such file"):
        R.run_retrieval(*town, dataclasses.replace(TINY, init=missing))


def test_init_loads_open_clip_and_fine_tunes_it(tmp_path, monkeypatch):
    """The --init path with a randomly initialised open_clip model (no real weights here): the
    smallest stock architecture, so the test stays fast; ViT-B-32 takes the same path."""
    import open_clip
    import torch

    loaded = []
    monkeypatch.setattr(open_clip, "load_checkpoint", lambda model, path: loaded.append(path))
    weights = tmp_path / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"stand-in")
    build = write_build(tmp_path, 12)
    torch.manual_seed(0)
    rep = R.run_retrieval(build, write_split(tmp_path, 12, 4, 4), dataclasses.replace(TINY, init=str(weights), init_arch="ViT-S-32", epochs=1, batch_size=4))
    assert loaded == [str(weights)]
    assert rep["aerial"]["model"] == "open_clip" and len(rep["aerial"]["losses"]) == 1
    assert rep["config"]["image_px"] == 224 and rep["config"]["init_arch"] == "ViT-S-32"
    assert rep["aerial"]["splits"]["test"]["full"]["candidates"] == 4
