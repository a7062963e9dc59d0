"""Whole builds against servers that misbehave on 20% of requests (corebuild.synthetic.faults):
Street View, XYZ tiles and the OpenAI-compatible describer answer with 429 + Retry-After, 5xx,
stalls past the client's timeout, dropped connections, bodies cut mid-transfer, complete bodies
that do not decode, placeholder tiles and malformed model JSON.

Transient faults (the first one or two attempts of a request) must be retried into exactly the
rows of a clean build; persistent ones must end as failure rows that say what happened. Either way
every sampled point is one row.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from apache_beam.testing import test_pipeline

from corebuild.running.build import SYNTHETIC_KEY_ENV, run_build, with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.stages.write import WriteConfig
from corebuild.dataset.reader import open_build
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.stages.fetch.http import HttpConfig
from corebuild.stages.ocr import OcrConfig
from corebuild.stages.sample import SampleConfig
from corebuild.synthetic.faults import ALL_KINDS, FaultConfig
from corebuild.synthetic.server import serve_in_thread

KEY = "AIzaFAULTSUITE-planted-key-31"
N = 24
IGNORED = {"build_id", "stage_seconds", "config_hash", "code_version"}
AERIAL = {"aerial_image", "aerial_blank_tiles"}
# Every reason a fault may end in: specific to the stage and to what went wrong.
FAULT_REASONS = {
    f"{stage}.{kind}"
    for stage in ("street", "aerial", "describe")
    for kind in ("http_429", "http_500", "http_502", "http_503", "http_504", "timeout", "unreachable", "truncated", "bad_image", "bad_metadata", "bad_response", "bad_format", "no_imagery")
}


def _rows(out_dir) -> dict[str, dict]:
    build = open_build(str(out_dir))
    rows: dict[str, dict] = {}
    for name in build.shard_names():
        for row in build.read_table(name).to_pylist():
            assert row["sample_id"] not in rows, f"duplicate {row['sample_id']}"
            rows[row["sample_id"]] = {
                k: hashlib.sha256(repr(v).encode()).hexdigest() if isinstance(v, (bytes, list)) else v for k, v in row.items() if k not in IGNORED
            }
    return rows


def _build(world, manifests_dir, prompts_dir, out, faults, limit=N, monkeypatch=None):
    server = serve_in_thread(world, faults=faults)
    try:
        cfg = BuildConfig(
            region_id="tiny",
            output_dir=str(out),
            manifests_dir=str(manifests_dir),
            sample=SampleConfig(limit=limit),
            # A stall of 2.5 s is a timeout to a 2 s client (room for a loaded CI machine); short backoff keeps the suite quick
            # (Retry-After: 1 is still honoured: the wait is never shorter than it).
            fetch=FetchConfig(http=HttpConfig(timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=2.0)),
            describe=DescribeConfig(
                backend="openai", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), base_url=server.base_url, model="synthetic", timeout_s=2.0
            ),
            write=WriteConfig(unit_points=8),
            ocr=OcrConfig(backend="off"),  # local work, no route to fault: most of a point's time
        )
        result = run_build(with_synthetic_endpoints(cfg, server.base_url), pipeline_factory=test_pipeline.TestPipeline, progress=False)
        injector = server.server.faults
        return result, (Counter(injector.injected) if injector else Counter()), (list(injector.log) if injector else [])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def key():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SYNTHETIC_KEY_ENV, KEY)
        yield KEY


@pytest.fixture(scope="module")
def clean(key, tiny_world, manifests_dir, prompts_dir, tmp_path_factory):
    result, injected, _ = _build(tiny_world, manifests_dir, prompts_dir, tmp_path_factory.mktemp("clean"), None)
    assert not injected
    return result, _rows(result.out_dir)


@pytest.fixture(scope="module")
def transient(key, tiny_world, manifests_dir, prompts_dir, tmp_path_factory):
    faults = FaultConfig(rate=0.2, seed=1, hang_s=2.5)
    return _build(tiny_world, manifests_dir, prompts_dir, tmp_path_factory.mktemp("transient"), faults)


def _fault_table(title: str, injected: Counter, counts: dict) -> str:
    lines = [f"{title}: {sum(injected.values())} faults served: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items()))]
    lines.append(f"  rows {counts['rows']}: kept {counts['kept']}, failed {counts['failed']} " + str(dict(sorted(counts["failed_by_reason"].items()))))
    return "\n".join(lines)


def test_transient_faults_are_retried_into_the_clean_rows(clean, transient, capsys):
    (clean_result, clean_rows), (result, injected, log) = clean, transient
    m = result.manifest
    with capsys.disabled():
        print("\n" + _fault_table("20% transient faults", injected, m["counts"]))
    # Every kind of fault was served, on every route that has it.
    assert set(injected) == set(ALL_KINDS), injected
    assert {route for route, *_ in log} == {"street_metadata", "street_image", "tile", "llm"}
    # One row per sampled point, the quota of kept samples met (top-up rounds), and the same
    # outcome for each point as in the clean build.
    assert m["consistent"] and m["counts"]["sampled"] == m["counts"]["rows"] and m["counts"]["kept"] == N
    rows = _rows(result.out_dir)
    assert rows.keys() == clean_rows.keys()
    blank = 0
    for sid, row in rows.items():
        want = clean_rows[sid]
        if row["aerial_blank_tiles"]:
            # A placeholder tile is the server's answer, not a glitch: stitched in, and counted.
            blank += 1
            assert {k: v for k, v in row.items() if k not in AERIAL} == {k: v for k, v in want.items() if k not in AERIAL}, sid
            assert row["aerial_image"] != want["aerial_image"] and want["aerial_blank_tiles"] == 0
        else:
            assert row == want, sid
    assert blank > 0  # some crops met a placeholder tile (too few of them to fail the crop)


def test_persistent_faults_end_as_failure_rows_that_say_why(clean, key, tiny_world, manifests_dir, prompts_dir, tmp_path, capsys):
    _, clean_rows = clean
    n = 16
    faults = FaultConfig(rate=0.2, seed=2, persistent=True, hang_s=2.5)
    result, injected, log = _build(tiny_world, manifests_dir, prompts_dir, tmp_path, faults, limit=n)
    m = result.manifest
    with capsys.disabled():
        print("\n" + _fault_table("20% persistent faults", injected, m["counts"]))
    assert m["consistent"] and m["counts"]["sampled"] == m["counts"]["rows"] == n
    rows = _rows(result.out_dir)
    assert sum(injected.values()) > n and len(set(injected)) >= 6
    reasons = Counter()
    for sid, row in rows.items():
        want = clean_rows[sid]
        if row["status"] == "kept":
            # Untouched by a fault (or only by placeholder tiles): the clean row.
            assert {k: v for k, v in row.items() if k not in AERIAL} == {k: v for k, v in want.items() if k not in AERIAL}, sid
            continue
        reasons[row["failure_reason"]] += 1
        if row["failure_reason"] == want["failure_reason"]:
            continue  # failed the same way in the clean build (no panorama there)
        assert row["failure_reason"] in FAULT_REASONS, row
        assert row["error"] and KEY not in row["error"]
    assert len(reasons) >= 4, reasons  # several kinds of fault, each with its own reason
    clean_failed = sum(clean_rows[sid]["status"] == "failed" for sid in rows)
    assert sum(reasons.values()) > clean_failed


def test_no_fault_leaks_the_key_into_the_build(transient):
    result, _, _ = transient
    for path in result.out_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_faults_are_a_pure_function_of_the_request():
    """The same request meets the same fault in every run (so a rerun of a flaky build is
    reproducible), and a fault rate of 0.2 faults about a fifth of distinct requests."""
    from corebuild.synthetic.faults import FaultInjector

    a, b = FaultInjector(FaultConfig(rate=0.2, seed=5)), FaultInjector(FaultConfig(rate=0.2, seed=5))
    keys = [f"GET /tiles/20/{x}/7.png? " for x in range(4000)]
    picks = [a.fault_for("tile", k) for k in keys]
    assert picks == [b.fault_for("tile", k) for k in keys]
    share = sum(p is not None for p in picks) / len(keys)
    assert 0.18 < share < 0.22
    assert set(picks) - {None} == {"http_429", "http_5xx", "timeout", "reset", "truncated", "corrupt", "placeholder"}
    other = FaultInjector(FaultConfig(rate=0.2, seed=6))
    assert picks != [other.fault_for("tile", k) for k in keys]
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultConfig(rate=0.2, kinds=("gremlins",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FaultConfig(rate=1.5)

