import math

from corebuild.dataset.stats import text_stats, tokens


def test_measures_on_known_texts():
    same = text_stats(["the red house", "the red house"])
    assert same["mean_tokens"] == 3 and same["type_token_ratio"] == 1.0 and math.isclose(same["mean_similarity"], 1.0)
    apart = text_stats(["red house corner", "blue lake park"])
    assert math.isclose(apart["mean_similarity"], 0.0, abs_tol=1e-12)
    rep = text_stats(["a a a b"])
    assert rep["type_token_ratio"] == 0.5 and math.isnan(rep["mean_similarity"])
    assert tokens('A sign reads "LUNA".') == ["a", "sign", "reads", '"', "luna", '"', "."]


def test_stats_command_on_a_real_build(tmp_path):
    import subprocess
    import sys

    from corebuild.shards.storage import open_storage
    from corebuild.shards.schema import shard_schema
    from corebuild.shards.writer import ShardWriter

    w = ShardWriter(open_storage(str(tmp_path)), "demo/shards/part")
    for i, d in enumerate(["a red building and trees", "a yellow shop on a corner", None]):
        row = {n: None for n in shard_schema().names}
        row.update(sample_id=f"demo-s0-{i:07d}", region_id="demo", status="kept" if d else "failed", geometry=b"\x01", description=d)
        w.write(row)
    w.close()
    (tmp_path / "demo" / "manifest.json").write_text(__import__("json").dumps({"region_id": "demo", "shards": w.details}))
    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "corebuild", "stats", str(tmp_path / "demo")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = dict(line.split()[:2] for line in r.stdout.splitlines()[1:])
    assert out["texts"] == "2" and float(out["mean_tokens"]) == 5.5


def test_the_manifest_and_stats_count_rows_per_ocr_coverage(tmp_path):
    import subprocess
    import sys

    from corebuild.shards.manifest import count_shards
    from corebuild.shards.schema import shard_schema
    from corebuild.shards.storage import open_storage
    from corebuild.shards.writer import ShardWriter
    from tests.conftest import ROOT

    storage = open_storage(str(tmp_path))
    w = ShardWriter(storage, "il/shards/part")
    cover = [(["en"], []), (["en"], ["ar", "he"]), (["en"], ["he"]), ([], ["ar", "he", "en"]), (["en"], [])]
    for i, (read, unread) in enumerate(cover):
        row = {n: None for n in shard_schema().names}
        row.update(sample_id=f"il-s0-{i:07d}", region_id="il", status="kept", geometry=b"\x01", description="a street with shops",
                   ocr_languages_read=read, ocr_languages_unread=unread)
        w.write(row)
    w.close()
    counts = count_shards(storage, [f"il/shards/{d['path']}" if "/" not in d["path"] else d["path"] for d in w.details])
    assert counts["ocr_coverage"] == {"full": 2, "partial": 2, "none": 1, "unread": {"ar": 2, "en": 1, "he": 3}}
    (tmp_path / "il" / "manifest.json").write_text(__import__("json").dumps({"region_id": "il", "shards": w.details}))
    r = subprocess.run([sys.executable, "-m", "corebuild", "stats", str(tmp_path / "il")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.split()[:3] == ["full", "2", "40.0%"] for line in lines) and any(line.split()[:2] == ["none", "1"] for line in lines)
    assert "unread here: ar (2 rows), en (1 rows), he (3 rows)" in r.stdout
