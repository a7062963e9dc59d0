import dataclasses

from corebuild.build import with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.fetch import Fetcher
from corebuild.providers.http import HttpConfig
from corebuild.sample import SampleConfig, sample_records


def test_fetch_stage_runs_without_beam(tiny_region, tiny_server, synthetic_key):
    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), tiny_server.base_url)
    records = sample_records(tiny_region, SampleConfig(limit=6))
    with Fetcher(cfg.fetch) as f:
        out = f.fetch(records)
    assert [r.sample_id for r in out] == [r.sample_id for r in records]
    for r in out:
        if r.failed:
            assert r.failure_reason == "street.zero_results"
        else:
            assert len(r.street.views) == 4 and r.aerial.width == 512
            assert abs(r.aerial.center_lat - r.street.lat) < 1e-5  # centred on the camera
            assert dict(r.timings)["fetch"] > 0
    assert sum(not r.failed for r in out) >= 4


def test_unreachable_provider_gives_failure_rows_not_a_crash(tiny_region, synthetic_key):
    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), "http://127.0.0.1:9")  # discard port: nothing listens
    cfg = dataclasses.replace(cfg, fetch=dataclasses.replace(cfg.fetch, http=HttpConfig(attempts=2, backoff_initial_s=0.01)))
    records = sample_records(tiny_region, SampleConfig(limit=3))
    with Fetcher(cfg.fetch) as f:
        out = f.fetch(records)
    assert all(r.failed and r.failure_reason == "street.unreachable" for r in out)
    assert all(synthetic_key not in r.error for r in out)
