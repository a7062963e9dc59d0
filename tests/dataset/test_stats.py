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
