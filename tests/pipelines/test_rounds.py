"""A quota of kept samples: top-up rounds until the region holds it, trimmed to exactly it, the
same rows whatever the rounds' sizes, deduplicated across rounds, resumed after a kill in a round,
and a recorded shortfall when it cannot be met."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from apache_beam.testing import test_pipeline

from corebuild.config import BuildConfig
from corebuild.dataset.reader import open_build
from corebuild.running.build import run_build
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.ocr import OcrConfig
from corebuild.stages.sample import SampleConfig
from corebuild.stages.write import WriteConfig
from tests.conftest import ROOT
from tests.pipelines.test_resume import rows_of, sigkill_when


def config(region: str, out, manifests_dir, prompts_dir, unit: int = 5, **sample) -> BuildConfig:
    return BuildConfig(
        region_id=region,
        output_dir=str(out),
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(**sample),
        ocr=OcrConfig(backend="off"),  # OCR is most of a point's time and plays no part in rounds
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
        write=WriteConfig(unit_points=unit),
    )


def build(cfg: BuildConfig, **kw):
    return run_build(cfg, pipeline_factory=test_pipeline.TestPipeline, progress=False, **kw)


def _rows(result, columns: list[str]) -> list[dict]:
    build = open_build(str(result.out_dir))
    return [r for name in build.shard_names() for r in build.read_table(name, columns).to_pylist()]


def _doc(result) -> dict:
    return json.loads((result.out_dir / "_build.json").read_text())


@pytest.fixture(scope="module")
def tiny12(manifests_dir, prompts_dir, tmp_path_factory):
    """tiny, --limit 12, units of 5: round 1 (12 points: units 0-2, the last ending short) keeps
    10; round 2 grows unit 2 to 15 points, then the sample is trimmed at its 12th kept point."""
    return build(config("tiny", tmp_path_factory.mktemp("tiny12"), manifests_dir, prompts_dir, limit=12))


def test_the_quota_is_met_exactly_in_top_up_rounds(tiny12):
    m = tiny12.manifest
    c, q = m["counts"], m["quota"]
    assert m["consistent"] and c["kept"] == 12 and c["sampled"] == c["rows"] == 14
    assert q == {
        "of": "kept", "quota": 40, "target": 12, "kept": 12, "sampled": 14, "rounds": 2, "yield": round(12 / 14, 4),
        "expected_yield": 0.5, "missing": 0, "shortfall": None, "trimmed": 1,
    }
    rounds = _doc(tiny12)["rounds"]
    assert [(r["take"], r["kept"]) for r in rounds] == [(12, 10), (15, 12)]
    assert m["sampling"] == [{"region_id": "tiny", "requested": 15, "sampled": 14, "shortfall": None, "trimmed_at": 14}]
    # The sample is a prefix: the kept 12th point is its last row.
    rows = sorted(_rows(tiny12, ["point_index", "status"]), key=lambda r: r["point_index"])
    assert [r["point_index"] for r in rows] == list(range(14)) and rows[-1]["status"] == "kept"
    unit2 = json.loads((tiny12.out_dir / "_done" / "u00002.json").read_text())
    assert unit2["grown"] == [{"attempt": 1, "points": [12, 14]}] and unit2["cut"][0]["below"] == 14 and unit2["points"] == [10, 11, 12, 13]
    assert "quota 12 kept met; yield 85.7% in 2 rounds" in tiny12.summary


def test_the_rounds_sizes_change_no_row(tiny12, manifests_dir, prompts_dir, tmp_path):
    """A margin four times larger overshoots further and is trimmed further: the same rows, since
    a point's outcome depends only on the points before it."""
    cfg = config("tiny", tmp_path, manifests_dir, prompts_dir, limit=12, round_margin=4.0)
    wide = build(cfg)
    assert _doc(wide)["rounds"][-1]["take"] > 15 and wide.manifest["quota"]["trimmed"] > 1
    assert wide.manifest["config_hash"] == tiny12.manifest["config_hash"]  # how rounds are sized is not the rows' config
    assert rows_of(str(wide.out_dir)) == rows_of(str(tiny12.out_dir))


def test_a_panorama_kept_in_one_round_is_not_kept_again(manifests_dir, prompts_dir, tmp_path):
    """crowded at 1 m spacing: many points share panoramas. Later rounds' points lose to earlier
    rounds' keepers; the candidates run out before the quota and the shortfall says why."""
    result = build(config("crowded", tmp_path, manifests_dir, prompts_dir, unit=2, min_spacing_m=1.0))
    m, doc = result.manifest, _doc(result)
    first = doc["rounds"][0]["take"]
    rows = _rows(result, ["sample_id", "point_index", "status", "failure_reason", "error", "pano_id"])
    kept = [r["pano_id"] for r in rows if r["status"] == "kept"]
    assert len(kept) == len(set(kept)) == m["counts"]["kept"]
    index = {r["sample_id"]: r["point_index"] for r in rows}
    lost_to_round_1 = [r for r in rows if r["failure_reason"] == "street.duplicate" and r["point_index"] >= first and index[r["error"].split(" as ")[-1].split()[0].strip("()., ")] < first]
    assert lost_to_round_1, "no later-round point met a round-1 keeper"
    q = m["quota"]
    assert m["consistent"] and len(doc["rounds"]) >= 2 and q["missing"] == 12 - m["counts"]["kept"] > 0
    assert q["shortfall"].startswith(f"yield {100 * q['yield']:.0f}% and candidates exhausted after {len(doc['rounds'])} rounds")
    assert q["shortfall"] in result.summary and "short" in result.summary


def test_max_rounds_stops_and_a_rerun_tops_up(tiny12, manifests_dir, prompts_dir, tmp_path):
    import dataclasses

    cfg = config("tiny", tmp_path, manifests_dir, prompts_dir, limit=12, max_rounds=1)
    one = build(cfg)
    assert one.manifest["quota"]["missing"] == 2 and one.manifest["quota"]["shortfall"] == "yield 83%, stopped after 1 round (--max-rounds 1)"
    more = build(dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, max_rounds=5)))  # not in the config hash: resumes
    assert len(more.manifest["attempts"]) == 2 and more.manifest["quota"]["missing"] == 0 and more.manifest["quota"]["rounds"] == 2
    assert rows_of(str(more.out_dir)) == rows_of(str(tiny12.out_dir))


def test_quota_of_sampled_keeps_the_config_hash_of_builds_before_rounds():
    """Its rows are the golden recording from before rounds (tests/pipelines/test_golden_demo.py);
    its config hash is the one BuildConfig("demo") had from 84accad to 4f2048d, so builds made
    then still resume as --quota-of sampled builds (with --ocr-det-side 0: full-size detection, as
    then; the smaller default detection side reads differently, so it has another hash; and with
    --ocr-runtime onnxruntime, which ran the models then)."""
    from corebuild.stages.ocr import OcrConfig

    then = OcrConfig(det_side=0, runtime="onnxruntime")
    assert BuildConfig("demo", sample=SampleConfig(quota_of="sampled"), ocr=then).content_hash() == "7cf0adb166657d63"
    assert BuildConfig("demo", ocr=then).content_hash() != "7cf0adb166657d63"
    assert BuildConfig("demo", sample=SampleConfig(quota_of="sampled")).content_hash() != "7cf0adb166657d63"


def test_a_killed_top_up_round_resumes_to_the_same_rows(manifests_dir, prompts_dir, tmp_path):
    """SIGKILL (the build, its Beam workers, the synthetic server) once round 2 has started; the
    rerun resumes round 2 and ends with a clean build's rows."""
    clean = build(config("small", tmp_path / "clean", manifests_dir, prompts_dir, unit=2, min_spacing_m=1.0))
    assert clean.manifest["quota"]["rounds"] == 2
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "corebuild", "build", "--region", "small", "--manifests", str(manifests_dir), "--output", str(out),
        "--min-spacing", "1", "--unit-points", "2", "--no-progress", "--ocr-backend", "off", "--prompts", str(prompts_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    doc_path = out / "small" / "_build.json"
    sigkill_when(proc, lambda: doc_path.exists() and len(json.loads(doc_path.read_text() or "{}").get("rounds", [])) == 2, within_s=300)
    assert not (out / "small" / "manifest.json").exists(), "killed too late to test a resume"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    m = json.loads((out / "small" / "manifest.json").read_text())
    assert m["consistent"] and len(m["attempts"]) == 2 and m["quota"]["rounds"] == 2 and m["quota"]["missing"] == 0
    assert rows_of(str(out / "small")) == rows_of(str(clean.out_dir))


def test_a_retry_re_trims_to_the_clean_rows(tiny12, manifests_dir, prompts_dir, tmp_path, synthetic_key):
    """The first kept point of the clean build meets a quota answer (OVER_QUERY_LIMIT, transient):
    the rounds sample past the clean end to replace it. `--retry-failed` keeps it, which makes one
    kept sample too many: the sample is trimmed again, to exactly the clean build's rows."""
    from corebuild.aio import serve_app
    from corebuild.regions import load_region
    from corebuild.running.build import with_synthetic_endpoints
    from corebuild.synthetic.server import serve_in_thread
    from corebuild.synthetic.world import World
    from tests.pipelines.test_retry_failed import QuotaGate

    clean = {r["point_index"]: r for r in _rows(tiny12, ["point_index", "status", "lat", "lon"])}
    hole = min(i for i, r in clean.items() if r["status"] == "kept")
    world = serve_in_thread(World.for_region(load_region("tiny", manifests_dir)))
    gate = QuotaGate(world.base_url)
    proxy = serve_app(gate.app())
    try:
        gate.locations, gate.closed = {f"{clean[hole]['lat']:.7f},{clean[hole]['lon']:.7f}"}, True
        cfg = with_synthetic_endpoints(config("tiny", tmp_path, manifests_dir, prompts_dir, limit=12), proxy.base_url)
        first = build(cfg)
        q = first.manifest["quota"]
        assert first.transient == 1 and q["kept"] == 12 and q["sampled"] > tiny12.manifest["quota"]["sampled"]
        gate.closed = False
        again = build(cfg, retry_failed="transient")
    finally:
        proxy.stop()
        world.stop()
    q = again.manifest["quota"]
    assert again.transient == 0 and q["kept"] == 12 and q["sampled"] == tiny12.manifest["quota"]["sampled"] and again.manifest["consistent"]
    assert rows_of(str(again.out_dir)) == rows_of(str(tiny12.out_dir))
