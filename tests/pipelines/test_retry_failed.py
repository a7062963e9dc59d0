"""`--retry-failed`: transient failure rows of a finished build are re-attempted in place and end
as exactly the rows of a clean build, dedupe across units included, locally and on gs://.

The quota gate in front of the synthetic world answers the way Google documents it: Street View
metadata says `OVER_QUERY_LIMIT` inside an HTTP 200 JSON body, and the image endpoint answers 429
with a `Retry-After` HTTP-date an hour away (longer than any client should wait). It does so for
chosen points only while it is closed: during the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from email.utils import formatdate

import aiohttp
import pytest
from aiohttp import web
from apache_beam.testing import test_pipeline

from corebuild.aio import serve_app
from corebuild.running.build import SYNTHETIC_KEY_ENV, run_build, with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.stages.write import WriteConfig
from corebuild.dataset.reader import open_build
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.stages.fetch.http import HttpConfig
from corebuild.stages.ocr import OcrConfig
from corebuild.regions import load_region
from corebuild.stages.sample import SampleConfig
from corebuild.synthetic.server import serve_in_thread
from corebuild.synthetic.world import World
from tests.conftest import ROOT
from tests.pipelines.test_resume import UNIT, rows_of, sigkill_when


class QuotaGate:
    """A reverse proxy: documented quota answers for the chosen points while `closed`."""

    def __init__(self, upstream: str):
        self.upstream, self.closed = upstream, False
        self.locations: set[str] = set()  # "lat,lon" as the client sends it
        self.panos: set[str] = set()
        self.served = {"over_query_limit": 0, "http_429": 0}

    async def handle(self, request: web.Request) -> web.Response:
        q = request.query
        if self.closed and request.path == "/maps/api/streetview/metadata" and q.get("location") in self.locations:
            self.served["over_query_limit"] += 1
            return web.json_response({"error_message": "You have exceeded your rate-limit for this API.", "status": "OVER_QUERY_LIMIT"})
        if self.closed and request.path == "/maps/api/streetview" and q.get("pano") in self.panos:
            self.served["http_429"] += 1
            return web.Response(
                status=429, headers={"Retry-After": formatdate(time.time() + 3600, usegmt=True)},
                content_type="application/json", text=json.dumps({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}),
            )
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, f"{self.upstream}{request.rel_url}", data=await request.read()) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body, headers={"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture(scope="module")
def gate(manifests_dir):
    world = serve_in_thread(World.for_region(load_region("crowded", manifests_dir)))
    gate = QuotaGate(world.base_url)
    proxy = serve_app(gate.app())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SYNTHETIC_KEY_ENV, "retry-test-key-0123456789")
        yield gate, proxy.base_url
    proxy.stop()
    world.stop()


def _cfg(out: str, manifests_dir, prompts_dir, base_url: str) -> BuildConfig:
    cfg = BuildConfig(
        region_id="crowded",
        output_dir=out,
        manifests_dir=str(manifests_dir),
        # A fixed sample (a retry with top-up rounds and a re-trim: tests/pipelines/test_rounds.py).
        sample=SampleConfig(min_spacing_m=1.0, quota_of="sampled"),
        fetch=FetchConfig(http=HttpConfig(backoff_initial_s=0.05, backoff_max_s=0.2)),
        ocr=OcrConfig(backend="off"),  # local work, untouched by the gate: most of a point's time
        describe=DescribeConfig(prompts_dir=str(prompts_dir)),
        write=WriteConfig(unit_points=UNIT),
    )
    return with_synthetic_endpoints(cfg, base_url)


def _run(cfg: BuildConfig, **kw):
    return run_build(cfg, pipeline_factory=test_pipeline.TestPipeline, progress=False, **kw)


@pytest.fixture(scope="module")
def clean(gate, manifests_dir, prompts_dir, tmp_path_factory):
    g, url = gate
    result = _run(_cfg(str(tmp_path_factory.mktemp("clean")), manifests_dir, prompts_dir, url))
    rows = {r["point_index"]: r for n in open_build(str(result.out_dir)).shard_names() for r in open_build(str(result.out_dir)).read_table(n).to_pylist()}
    # Close the gate on the lowest point that keeps a panorama another point also reached (so
    # another point keeps it during the first run, and must give it back after the retry), and
    # on the images of another kept point's panorama.
    dup_of = {r["error"].rsplit(" as ", 1)[-1] for r in rows.values() if r["failure_reason"] == "street.duplicate"}
    keeper = min(r["point_index"] for r in rows.values() if r["sample_id"] in dup_of)
    other = next(r for i, r in sorted(rows.items()) if r["status"] == "kept" and r["pano_id"] != rows[keeper]["pano_id"] and i != keeper)
    g.locations = {f"{rows[keeper]['lat']:.7f},{rows[keeper]['lon']:.7f}"}
    g.panos = {other["pano_id"]}
    return result, rows, keeper, other["point_index"]


@pytest.fixture(scope="module")
def gated(gate, clean, manifests_dir, prompts_dir, tmp_path_factory):
    """The first run, with the gate closed; each test retries a copy of it."""
    g, url = gate
    out = tmp_path_factory.mktemp("gated")
    g.closed = True
    try:
        first = _run(_cfg(str(out), manifests_dir, prompts_dir, url))
    finally:
        g.closed = False
    return first


def _copy(gated, dest: str) -> None:
    from corebuild.shards.storage import open_storage

    src, dst = open_storage(str(gated.out_dir.parent)), open_storage(dest)
    for name in src.list("crowded/"):
        dst.write(name, src.read(name))


def test_retry_failed_turns_quota_holes_into_the_clean_rows(gate, clean, gated, manifests_dir, prompts_dir, tmp_path):
    g, url = gate
    clean_result, clean_rows, keeper, other = clean
    first = gated
    _copy(gated, str(tmp_path))
    c = first.manifest["counts"]
    got = {r["point_index"]: r for n in open_build(str(first.out_dir)).shard_names() for r in open_build(str(first.out_dir)).read_table(n).to_pylist()}
    assert (got[keeper]["failure_reason"], got[keeper]["failure_class"]) == ("street.over_query_limit", "transient")
    assert (got[other]["failure_reason"], got[other]["failure_class"]) == ("street.http_429", "transient")
    assert "asked to wait 3599 s" in got[other]["error"] or "asked to wait 3600 s" in got[other]["error"], got[other]["error"]  # and would not
    assert g.served["over_query_limit"] >= 2  # asked again inside the request before giving up
    # Someone else kept the keeper's panorama meanwhile.
    stand_in = [r for r in got.values() if r["pano_id"] == clean_rows[keeper]["pano_id"] and r["status"] == "kept"]
    assert len(stand_in) == 1 and stand_in[0]["point_index"] != keeper
    assert c["failed_by_class"]["transient"] == 2 and first.transient == 2
    assert "2 transient failure(s) remain" in first.summary and "--retry-failed" in first.summary
    assert all(r["failure_class"] == ("permanent" if r["status"] == "failed" else None) for i, r in got.items() if i not in (keeper, other))

    shards_before = {s["path"] for s in first.manifest["shards"]}
    again = _run(_cfg(str(tmp_path), manifests_dir, prompts_dir, url), retry_failed="transient")
    m = again.manifest
    assert m["consistent"] and m["counts"]["failed_by_class"].get("transient", 0) == 0 and again.transient == 0
    assert m["retried"] == {"selection": "transient", "points": 2, "by_reason": {"street.http_429": 1, "street.over_query_limit": 1}}
    assert len(m["attempts"]) == 2 and m["attempts"][1]["retried"]["points"] == 2
    assert rows_of(str(again.out_dir)) == rows_of(str(clean_result.out_dir))
    # Units rewritten as a new generation; the old generation is gone; untouched units kept their files.
    shards_after = {s["path"] for s in m["shards"]}
    rewritten = shards_after - shards_before
    assert rewritten and all("-g1-" in p for p in rewritten)
    assert sorted(p.name for p in (again.out_dir / "shards").iterdir()) == sorted(shards_after)
    assert len(shards_after) == len(shards_before)


def test_retry_only_the_reasons_named(gate, clean, gated, manifests_dir, prompts_dir, tmp_path):
    g, url = gate
    _, clean_rows, keeper, other = clean
    _copy(gated, str(tmp_path))
    again = _run(_cfg(str(tmp_path), manifests_dir, prompts_dir, url), retry_failed="street.http_429")
    assert again.manifest["retried"]["points"] == 1
    assert again.manifest["counts"]["failed_by_reason"].get("street.over_query_limit") == 1 and again.transient == 1
    rows = {r["point_index"]: r for n in open_build(str(again.out_dir)).shard_names() for r in open_build(str(again.out_dir)).read_table(n).to_pylist()}
    assert rows[other]["status"] == "kept" and rows[keeper]["failure_reason"] == "street.over_query_limit"


def test_retry_failed_on_gcs(gate, clean, gated, gcs_emulator, manifests_dir, prompts_dir):
    g, url = gate
    clean_result = clean[0]
    out = f"gs://{gcs_emulator['bucket']}/retry-{uuid.uuid4().hex[:8]}"
    _copy(gated, out)
    again = _run(_cfg(out, manifests_dir, prompts_dir, url), retry_failed="transient")
    assert again.manifest["consistent"] and again.transient == 0
    assert rows_of(f"{out}/crowded") == rows_of(str(clean_result.out_dir))


_CHILD = """
import sys
from apache_beam.testing import test_pipeline
from corebuild.running.build import run_build
from tests.pipelines.test_retry_failed import _cfg
out, manifests, prompts, url = sys.argv[1:5]
print(run_build(_cfg(out, manifests, prompts, url), pipeline_factory=test_pipeline.TestPipeline, progress=False, retry_failed="transient").summary)
"""


def test_sigkill_during_a_retry_pass_then_the_same_command_finishes(gate, clean, gated, manifests_dir, prompts_dir, tmp_path):
    """The retry pass (a real process) is SIGKILLed as soon as it has stored the first shard of a
    unit's new generation, before or after its marker switched; the same command then finishes
    with the clean rows, and no shard of either generation is left over."""
    from tests.pipelines.test_resume import _markers_and_shards_agree

    g, url = gate
    clean_result = clean[0]
    _copy(gated, str(tmp_path))
    shards = tmp_path / "crowded" / "shards"
    cmd = [sys.executable, "-c", _CHILD, str(tmp_path), str(manifests_dir), str(prompts_dir), url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sigkill_when(proc, lambda: any("-g1-" in p.name for p in shards.iterdir()), poll_s=0.01)
    _markers_and_shards_agree(tmp_path / "crowded")  # every marker names whole shards
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    m = json.loads((tmp_path / "crowded" / "manifest.json").read_text())
    assert m["consistent"] and m["counts"]["failed_by_class"].get("transient", 0) == 0
    assert rows_of(str(tmp_path / "crowded")) == rows_of(str(clean_result.out_dir))
    assert sorted(p.name for p in shards.iterdir()) == sorted(s["path"] for s in m["shards"]), "stray shard files"
