"""OCR chosen per region, end to end: the demo town with its signs in Japanese, and in Arabic,
built from the command line. The Japanese town is read by PP-OCRv5 (chosen for it); no reader
here reads Arabic, and the rows and manifest say so."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from corebuild.cli import main
from tests.conftest import ROOT


@pytest.mark.parametrize("script, languages, reader, read, unread", [
    ("japanese", [["ja", "en"]], "rapidocr-v5", ["ja", "en"], []),
    ("arabic", [["ar", "en"]], "rapidocr", ["en"], ["ar"]),
])
def test_a_town_with_signs_in_another_script(tmp_path, capsys, script, languages, reader, read, unread):
    doc = json.loads((ROOT / "region_manifests" / "demo.json").read_text())
    rid = f"demo-{script}"
    doc.update(id=rid, ocr_languages=languages, synthetic_world={**doc["synthetic_world"], "script": script})
    (tmp_path / "regions").mkdir()
    (tmp_path / "regions" / f"{rid}.json").write_text(json.dumps(doc, ensure_ascii=False))
    argv = ["build", "--region", rid, "--manifests", str(tmp_path / "regions"), "--output", str(tmp_path / "out"),
            "--limit", "3", "--quota-of", "sampled", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "out" / rid / "manifest.json").read_text())
    assert manifest["models"]["ocr"].startswith(f"{reader}:")
    assert manifest["models"]["ocr_coverage"]["read"] == read and manifest["models"]["ocr_coverage"]["unread"] == unread
    rows = [r for r in pq.read_table(tmp_path / "out" / rid / "shards").to_pylist() if r["status"] == "kept"]
    assert rows and all(r["ocr_languages_read"] == read and r["ocr_languages_unread"] == unread for r in rows)
    kind = "partial" if unread else "full"
    assert manifest["counts"]["ocr_coverage"][kind] == len(rows)
    texts = [o["text"] for r in rows for o in r["ocr"] or []]
    if script == "japanese":  # kana read off the synthetic signs: PP-OCRv4 has none in its dictionary
        assert any(0x3040 <= ord(c) <= 0x30FF for t in texts for c in t), texts
