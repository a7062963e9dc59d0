"""`corebuild card BUILD`: a Hugging Face dataset card whose front matter `datasets` reads: the
splits of a `corebuild splits` file, loaded offline with `datasets.load_dataset(BUILD)`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from corebuild.dataset import card
from corebuild.dataset.reader import find_builds
from corebuild.dataset.splits import SplitConfig, load_split, write_splits
from tests.builds import write_fake_build

N = 60


def _card(*argv: str) -> int:
    p = argparse.ArgumentParser()
    card.add_arguments(p)
    return card.main(p.parse_args(list(argv)))


def _front_matter(readme: Path) -> tuple[dict, str]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def _load(build: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    return datasets.load_dataset(str(build), cache_dir=str(tmp_path / "hf-cache"))


@pytest.fixture()
def split_build(tmp_path):
    url = write_fake_build(tmp_path / "out", "za", -33.9, 18.4, N, spread_m=6000.0)
    res = write_splits(find_builds(url), SplitConfig(block_km=2.0, ratios=(0.6, 0.2, 0.2), min_distance_m=0.0), url, allow_small=True)
    return Path(url), res.parquet_url


def test_the_card_publishes_a_split_files_splits_to_datasets(split_build, tmp_path, monkeypatch):
    build, split_url = split_build
    assert _card(str(build), "--split", split_url) == 0
    fm, body = _front_matter(build / "README.md")
    # the configs wiring: one file pattern per split, the copies the card wrote
    assert fm["configs"] == [{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in ("train", "val", "test")]}]
    want = {s: load_split(split_url, s) for s in ("train", "val", "test")}
    assert all(want.values()) and sum(map(len, want.values())) == json.loads((build / "manifest.json").read_text())["counts"]["kept"]
    ds = _load(build, tmp_path, monkeypatch)
    assert set(ds) == {"train", "val", "test"}
    for s, ids in want.items():
        assert ds[s].num_rows == len(ids) and set(ds[s]["sample_id"]) == ids and set(ds[s]["status"]) == {"kept"}
    # Hub metadata from the Hub's own lists
    from datasets.utils.metadata import known_task_ids

    sizes = json.loads((Path(__import__("datasets").__file__).parent / "utils/resources/size_categories.json").read_text())
    assert fm["license"] == "cc0-1.0" and fm["pretty_name"] == "corebuild cross-view: Test za"
    assert set(fm["task_categories"]) <= set(known_task_ids) and fm["size_categories"] == ["n<1K"] and fm["size_categories"][0] in sizes
    for heading in ("## Size and splits", "## Licences and attribution", "## How the texts were made", "## Text statistics", "## Results", "## Columns", "## Known limits"):
        assert heading in body
    assert "`street_attribution`" in body and "| `CC0-1.0` |" in body and "the copy costs" in body


def test_without_a_split_file_the_shards_are_train(split_build, tmp_path, monkeypatch):
    build, _ = split_build
    assert _card(str(build)) == 0
    fm, body = _front_matter(build / "README.md")
    shards = [f"shards/{s['path']}" for s in json.loads((build / "manifest.json").read_text())["shards"]]
    assert fm["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": shards}]}]
    ds = _load(build, tmp_path, monkeypatch)
    assert set(ds) == {"train"} and ds["train"].num_rows == N  # failed rows too: the card says to filter `status`
    assert "failed rows included (12 of them)" in body


def test_several_licences_are_other_with_a_licence_file(tmp_path):
    google = "LicenseRef-Google-Maps-Platform-ToS"
    url = write_fake_build(tmp_path, "mx", 19.4, -99.1, 20, licenses=lambda i: (google if i % 2 else "CC-BY-SA-4.0", "ODbL-1.0"))
    assert _card(url) == 0
    fm, body = _front_matter(Path(url) / "README.md")
    assert fm["license"] == "other" and fm["license_link"] == "LICENSE.md"
    assert fm["license_name"] == "cc-by-sa-4.0-and-google-maps-platform-tos-and-odbl-1.0"
    assert "may not be redistributed" in body
    licences = (Path(url) / "LICENSE.md").read_text()
    assert all(f"`{i}`" in licences for i in ("CC-BY-SA-4.0", google, "ODbL-1.0"))
    # all on the Hub's list: the set itself
    url = write_fake_build(tmp_path, "br", -23.5, -46.6, 10, licenses=lambda i: ("CC-BY-SA-4.0", "ODbL-1.0"))
    assert _card(url) == 0
    assert _front_matter(Path(url) / "README.md")[0]["license"] == ["cc-by-sa-4.0", "odbl"]


def test_evaluation_reports_are_listed_as_found(tmp_path):
    url = write_fake_build(tmp_path, "za", -33.9, 18.4, 10)
    ev = Path(url) / "eval"
    ev.mkdir()
    metrics = {"queries": 11, "candidates": 11, "recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.75, "chance": {"recall@1": 0.0909}}
    (ev / "retrieval-blocks.json").write_text(json.dumps({"split_file": "s.parquet", "aerial": {"splits": {"val": {"full": metrics, "no_sign_text": None}}}, "map": "no map images"}))
    (ev / "retrieval-broken.json").write_text("{not json")
    (ev / "fidelity.json").write_text(json.dumps({"rows_checked": 8, "overall": {"claims": 20, "true": 15, "precision": 0.75}, "claims": {"sign_text": {"claims": 4, "true": 3, "precision": 0.75}}}))
    assert _card(url) == 0
    _, body = _front_matter(Path(url) / "README.md")
    assert "| aerial / val / full | 11 | 0.250 | 0.500 | 0.750 | recall@1 0.091 |" in body
    assert "`eval/retrieval-broken.json`" in body and "8 rows checked, 20 claims, precision 0.750" in body


def test_an_empty_split_is_left_out_of_the_configs(tmp_path, monkeypatch):
    url = write_fake_build(tmp_path / "out", "za", -33.9, 18.4, 20)
    res = write_splits(find_builds(url), SplitConfig(block_km=2.0, ratios=(1.0, 0.0, 0.0), min_distance_m=0.0), url, allow_small=True)
    assert _card(url, "--split", res.parquet_url) == 0
    fm, body = _front_matter(Path(url) / "README.md")
    assert fm["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]  # `datasets` refuses a split of no rows
    assert "| val | 0 | none (empty: not in `configs`) |" in body
    assert {s: d.num_rows for s, d in _load(Path(url), tmp_path, monkeypatch).items()} == {"train": 16}
