"""corebuild.running.build: what each round runs with."""

import dataclasses

import pytest

from corebuild.config import BuildConfig, RunnerConfig
from corebuild.running import build
from corebuild.shards.units import BuildState
from corebuild.stages.ocr import OcrConfig

LOCAL2 = BuildConfig("demo", ocr=OcrConfig(threads=1, parallel=2), runner=RunnerConfig(direct_num_workers=2, direct_running_mode="multi_processing"))


def _state(done=(), retry=(), take=None):
    return BuildState("b", "h", 100, 1, frozenset(done), False, retry=frozenset(retry), take=take)


@pytest.mark.parametrize("state, take, parallel", [
    (_state(), 600, 1),  # round 1: six units for two workers, every worker busy: one view at a time
    (_state(done=range(6)), 690, 2),  # the top-up round: one new unit, a worker idle: two at once
    (_state(done=range(6)), 800, 1),  # two new units: both workers busy
    (_state(done=range(7), retry=[5, 650]), 700, 1),  # retrying failures of two finished units
    (_state(done=range(7), retry=[650]), 700, 2),
])
def test_a_round_reads_views_at_once_only_where_it_leaves_workers_idle(state, take, parallel):
    assert build.round_config(LOCAL2, state, take).ocr.parallel == parallel


def test_one_view_at_a_time_off_the_local_runner_and_where_asked():
    dataflow = dataclasses.replace(LOCAL2, runner=RunnerConfig(runner="DataflowRunner"))
    assert build.round_config(dataflow, _state(done=range(6)), 690).ocr.parallel == 1
    one = dataclasses.replace(LOCAL2, ocr=OcrConfig(parallel=1))
    assert build.round_config(one, _state(done=range(6)), 690) is one
    # nothing else of the config changes, and so neither does its hash
    round2 = build.round_config(LOCAL2, _state(), 600)
    assert dataclasses.replace(round2, ocr=LOCAL2.ocr) == LOCAL2 and round2.content_hash() == LOCAL2.content_hash()


def test_each_round_runs_its_pipeline_with_its_round_config(monkeypatch, manifests_dir, tmp_path):
    from corebuild.regions import load_region
    from corebuild.shards.storage import open_storage

    ran = []
    monkeypatch.setattr(build, "run_pipeline", lambda cfg, *args, **kw: ran.append(cfg.ocr.parallel))
    prep = build.Prepared(LOCAL2, load_region("demo", manifests_dir), open_storage(str(tmp_path)), _state(), None, {}, False, None)
    build.execute(prep, _state(take=600), 1, progress=False)
    build.execute(prep, _state(done=range(6), take=690), 2, progress=False)
    assert ran == [1, 2]


def test_a_synthetic_build_prepares_while_its_world_server_starts(tmp_path, manifests_dir, monkeypatch):
    """The server's URL is known when its process starts (the build binds the socket), so the
    build's checks run while the server generates its world; it waits for the server after them."""
    from corebuild.synthetic.server import ServerStart

    order = []
    checks, wait = build.preflight, ServerStart.wait
    monkeypatch.setattr(build, "preflight", lambda cfg, region: order.append("preflight") or checks(cfg, region))
    monkeypatch.setattr(ServerStart, "wait", lambda self, *a: order.append("wait") or wait(self, *a))
    prep = build.prepare(BuildConfig("tiny", output_dir=str(tmp_path), manifests_dir=str(manifests_dir)))
    try:
        assert order == ["preflight", "wait"] and prep.server.poll() is None
        base = prep.cfg.fetch.streetview.base_url
        assert prep.cfg.fetch.aerial.url_template == f"{base}/tiles/{{z}}/{{x}}/{{y}}.png"
    finally:
        prep.close()
