"""Killed builds resume to exactly the rows of a clean build: no duplicates, none missing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from apache_beam.testing import test_pipeline

from corebuild.running.build import run_build
from corebuild.config import BuildConfig
from corebuild.stages.write import WriteConfig
from corebuild.dataset.reader import open_build
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.sample import SampleConfig
from tests.conftest import ROOT

UNIT = 2  # twelve points: six units
IGNORED = {"build_id", "stage_seconds", "config_hash", "code_version"}  # differ per attempt, not per sample


def rows_of(url: str) -> dict[str, tuple]:
    """sample_id -> every column that describes the sample (images by digest)."""
    build = open_build(url)
    out: dict[str, tuple] = {}
    for name in build.shard_names():
        for row in build.read_table(name).to_pylist():
            assert row["sample_id"] not in out, f"duplicate {row['sample_id']}"
            out[row["sample_id"]] = tuple(
                (k, hashlib.sha256(repr(v).encode()).hexdigest() if isinstance(v, (bytes, list)) else v) for k, v in sorted(row.items()) if k not in IGNORED
            )
    return out


def config(region: str, out: str, manifests_dir, prompts_dir) -> BuildConfig:
    return BuildConfig(
        region_id=region,
        output_dir=out,
        manifests_dir=str(manifests_dir),
        # A fixed sample of 12 points: the unit structure is under test here (kills in a top-up
        # round: tests/pipelines/test_rounds.py).
        sample=SampleConfig(min_spacing_m=1.0, quota_of="sampled"),
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
        write=WriteConfig(unit_points=UNIT),
    )


def _clean(region, manifests_dir, prompts_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"clean-{region}")
    cfg = config(region, str(out), manifests_dir, prompts_dir)  # serves its synthetic world itself
    return run_build(cfg, pipeline_factory=test_pipeline.TestPipeline, progress=False), cfg


@pytest.fixture(scope="module")
def crowded(manifests_dir, prompts_dir, tmp_path_factory):
    return _clean("crowded", manifests_dir, prompts_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def small(manifests_dir, prompts_dir, tmp_path_factory):
    return _clean("small", manifests_dir, prompts_dir, tmp_path_factory)


def test_clean_build_is_six_units_with_stable_shard_names(crowded):
    result, _ = crowded
    m = result.manifest
    assert m["consistent"] and m["counts"]["sampled"] == 12 and m["units"] == {
        "unit_points": UNIT, "done": 6, "done_before_this_attempt": 0, "problem": None,
    }
    assert [s["path"] for s in m["shards"]] == [f"part-u{u:05d}-000.parquet" for u in range(6)]
    dups = [r for r in open_build(str(result.out_dir)).read_table("shards/part-u00001-000.parquet").to_pylist() if r["failure_reason"] == "street.duplicate"]
    assert dups and all("as crowded-s0-0000000" in r["error"] or "as crowded-s0-0000001" in r["error"] for r in dups)  # unit 1 lost to unit 0


@pytest.mark.parametrize("lost", [(0,), (1,), (0, 3)], ids=["keeper-redone", "duplicates-redone", "two-units"])
def test_resume_from_partial_states_gives_the_clean_rows(crowded, tmp_path, lost):
    """Markers lost (shards kept), a unit lost whole, a stray shard: the rerun redoes exactly
    the units without markers and ends with the clean build's rows, dedupe across units included."""
    result, cfg = crowded
    shutil.copytree(result.out_dir, tmp_path / "crowded")
    d = tmp_path / "crowded"
    (d / "manifest.json").unlink()
    for u in lost:
        (d / "_done" / f"u{u:05d}.json").unlink()
    (d / "_done" / "u00004.json").unlink()
    (d / "shards" / "part-u00004-000.parquet").unlink()
    (d / "shards" / "part-u00003-001.parquet").write_bytes(b"half a shard from a killed attempt")
    untouched = sorted(set(range(6)) - set(lost) - {4})
    mtimes = {u: (d / "shards" / f"part-u{u:05d}-000.parquet").stat().st_mtime_ns for u in untouched}

    resumed = run_build(BuildConfig(**{**cfg.__dict__, "output_dir": str(tmp_path)}), pipeline_factory=test_pipeline.TestPipeline, progress=False)
    m = resumed.manifest
    assert m["consistent"] and m["units"]["done_before_this_attempt"] == len(untouched) and len(m["attempts"]) == 2
    assert m["build_id"] == result.manifest["build_id"]  # one build, two attempts
    assert not (d / "shards" / "part-u00003-001.parquet").exists()
    assert {u: (d / "shards" / f"part-u{u:05d}-000.parquet").stat().st_mtime_ns for u in untouched} == mtimes  # not redone
    assert rows_of(str(d)) == rows_of(str(result.out_dir))


def test_another_config_is_refused_not_mixed(crowded, tmp_path):
    from corebuild.errors import ConfigError

    result, cfg = crowded
    shutil.copytree(result.out_dir, tmp_path / "crowded")
    other = BuildConfig(**{**cfg.__dict__, "output_dir": str(tmp_path), "sample": SampleConfig(min_spacing_m=1.0, seed=7, quota_of="sampled")})
    with pytest.raises(ConfigError, match=r"differs in: sample\.seed"):
        run_build(other, pipeline_factory=test_pipeline.TestPipeline, progress=False)


def sigkill_when(proc: subprocess.Popen, ready, within_s: float = 240, poll_s: float = 0.02) -> None:
    """Wait until `ready()`, then SIGKILL the process group of `proc` (started with
    start_new_session: the build, its Beam workers and the synthetic server, as an OOM kill would)."""
    deadline = time.monotonic() + within_s
    try:
        while not ready():
            assert proc.poll() is None, f"the build ended before it could be killed: {(proc.stdout or proc.stderr).read().decode()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready to be killed in {within_s} s"
            time.sleep(poll_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended on its own just now: the caller's assertions say whether that matters
        proc.wait(30)


def _kill_and_resume(output: str, manifests_dir, prompts_dir, env: dict, count_done) -> list[str]:
    """Run the real CLI, SIGKILL it once two units are done, then rerun it."""
    cmd = _cli("small", output, manifests_dir)
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sigkill_when(proc, lambda: count_done() >= 2, poll_s=0.05)
    done_at_kill = count_done()
    assert 2 <= done_at_kill and not _manifest_exists(output), "killed too late to test a resume"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming build" in again.stderr and f"{done_at_kill} unit(s) already done" in again.stderr
    return [again.stdout]


def _cli(region: str, output: str, manifests_dir) -> list[str]:
    return [
        sys.executable, "-m", "corebuild", "build", "--region", region, "--manifests", str(manifests_dir), "--output", output,
        "--min-spacing", "1", "--unit-points", str(UNIT), "--no-progress", "--quota-of", "sampled",
    ]


def _manifest_exists(output: str) -> bool:
    from corebuild.shards.storage import open_storage

    return open_storage(output).exists("small/manifest.json")


def _markers_and_shards_agree(build_dir) -> int:
    """Every unit marked done has its shards, whole and readable, with that unit's rows; returns
    how many units are done. (A killed attempt may leave shards without a marker, never the reverse.)"""
    import pyarrow.parquet as pq

    done = sorted((build_dir / "_done").glob("u*.json")) if (build_dir / "_done").exists() else []
    for marker in done:
        doc = json.loads(marker.read_text())
        for shard in doc["shards"]:
            table = pq.read_table(build_dir / "shards" / shard["path"], use_threads=False)
            assert table.num_rows == shard["rows"], (marker.name, shard)
    return len(done)


def test_sigkill_at_random_moments_then_resume_gives_the_clean_rows(small, tmp_path, manifests_dir, prompts_dir, capsys):
    """Three attempts killed (SIGKILL to the whole process group: build, Beam workers, synthetic
    server) at random moments, then one that finishes: 0 duplicates, 0 missing, the clean rows.
    The seed is printed, and COREBUILD_KILL_SEED replays a failing sequence."""
    import random

    result, _ = small
    seed = int(os.environ.get("COREBUILD_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    build_dir = tmp_path / "small"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _cli("small", str(tmp_path), manifests_dir)
    # An uninterrupted run in another output tells how long a whole attempt takes here.
    t0 = time.monotonic()
    whole = subprocess.run(_cli("small", str(tmp_path / "whole"), manifests_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    duration = time.monotonic() - t0
    assert whole.returncode == 0, whole.stderr[-3000:]
    moments = []
    for attempt in range(3):
        at = rng.uniform(0.05, 0.95) * duration
        done_before = _markers_and_shards_agree(build_dir)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(at)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its workers and server too, if any outlived it
            except ProcessLookupError:
                pass  # it finished first and took its process group with it
            proc.wait(30)
        moments.append((round(at, 1), "finished first" if finished else "killed", done_before, _markers_and_shards_agree(build_dir)))
    with capsys.disabled():
        print(f"\nkill seed {seed}: whole attempt {duration:.1f} s; (kill at s, outcome, units done before, after): {moments}")
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, f"seed {seed}: {again.stderr[-3000:]}"
    done_at_start = moments[-1][3]
    if done_at_start and not (build_dir / "manifest.json").exists():
        assert f"{done_at_start} unit(s) already done" in again.stderr, again.stderr[-2000:]
    m = json.loads((build_dir / "manifest.json").read_text())
    assert m["consistent"] and m["counts"]["duplicate_sample_ids"] == 0 and m["counts"]["rows"] == m["counts"]["sampled"] == 12, f"seed {seed}"
    assert rows_of(str(build_dir)) == rows_of(str(result.out_dir)), f"seed {seed}"
    assert rows_of(str(tmp_path / "whole" / "small")) == rows_of(str(result.out_dir))
    assert not [p for p in (build_dir / "shards").iterdir() if p.name not in {s["path"] for s in m["shards"]}], "stray shard files"


def test_sigkill_and_resume_on_gcs(small, gcs_emulator, manifests_dir, prompts_dir):
    from corebuild.shards.storage import open_storage

    result, _ = small
    url = f"gs://{gcs_emulator['bucket']}/resume-{uuid.uuid4().hex[:8]}"
    store = open_storage(url)
    _kill_and_resume(url, manifests_dir, prompts_dir, {"STORAGE_EMULATOR_HOST": gcs_emulator["host"]}, lambda: len(store.list("small/_done/")))
    assert open_build(f"{url}/small").manifest["consistent"]
    assert rows_of(f"{url}/small") == rows_of(str(result.out_dir))
