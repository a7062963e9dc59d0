import dataclasses

from corebuild.running.build import with_synthetic_endpoints
from corebuild.config import BuildConfig
from corebuild.stages.capture import CaptureStage
from corebuild.stages.dedupe import dedupe
from corebuild.stages.fetch.fetcher import Fetcher
from corebuild.stages.locate import LocateStage
from corebuild.stages.stage import run_stage
from corebuild.stages.fetch.http import HttpConfig
from corebuild.stages.sample import SampleConfig, sample_records


def test_fetch_stages_run_without_beam(tiny_region, tiny_server, synthetic_key):
    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), tiny_server.base_url)
    records = sample_records(tiny_region, SampleConfig(limit=6))
    locate, capture = LocateStage(cfg.fetch, 4), CaptureStage(cfg.fetch, 4)
    for stage in (locate, capture):
        stage.setup()
    try:
        out = run_stage(capture, dedupe(run_stage(locate, records)))
    finally:
        locate.teardown(), capture.teardown()
    assert [r.sample_id for r in out] == [r.sample_id for r in records]
    for r in out:
        if r.failed:
            assert r.failure_reason == "street.zero_results"
        else:
            assert len(r.street.views) == 4 and r.aerial.width == 512
            assert abs(r.aerial.center_lat - r.street.lat) < 1e-5  # centred on the camera
            assert dict(r.timings)["capture"] > 0 and dict(r.timings)["locate"] > 0
    assert sum(not r.failed for r in out) >= 4


def test_unreachable_provider_gives_failure_rows_not_a_crash(tiny_region, synthetic_key):
    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), "http://127.0.0.1:9")  # discard port: nothing listens
    cfg = dataclasses.replace(cfg, fetch=dataclasses.replace(cfg.fetch, http=HttpConfig(attempts=2, backoff_initial_s=0.01)))
    records = sample_records(tiny_region, SampleConfig(limit=3))
    with Fetcher(cfg.fetch) as f:
        out = f.fetch(records)
    assert all(r.failed and r.failure_reason == "street.unreachable" for r in out)
    assert all(synthetic_key not in r.error for r in out)


def test_points_on_one_panorama_keep_the_lowest_index(tiny_world, tiny_server, synthetic_key):
    from corebuild.stages.dedupe import dedupe
    from corebuild.record import Record

    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), tiny_server.base_url)
    road = tiny_world.roads[1]
    p = road.line.interpolate(road.line.length / 2)
    lat, lon = tiny_world.to_latlon(p.x + 3, p.y + 3)
    far_lat, far_lon = tiny_world.to_latlon(p.x + 60, p.y + 3)
    recs = [Record(f"tiny-s0-{i:07d}", "tiny", 0, i, la, lo) for i, (la, lo) in enumerate([(lat, lon), (far_lat, far_lon), (lat, lon)])]
    with Fetcher(cfg.fetch) as f:
        out = f.capture(dedupe(f.locate(recs[::-1])))[::-1]
    assert not out[0].failed and out[0].street is not None
    assert out[2].failure_reason == "street.duplicate" and "tiny-s0-0000000" in out[2].error and out[2].street is None
    assert out[1].failure_reason != "street.duplicate"


def test_dedupe_is_order_independent():
    from corebuild.stages.dedupe import dedupe
    from corebuild.record import Record, StreetLocation

    loc = StreetLocation("p", "IMG", 0, 0, None, 1.0, "PANO1")
    recs = [Record(f"r-s0-{i:07d}", "r", 0, i, 0, 0, location=loc) for i in (5, 2, 9)]
    for order in (recs, recs[::-1]):
        out = {r.point_index: r for r in dedupe(order)}
        assert not out[2].failed and out[5].failure_reason == out[9].failure_reason == "street.duplicate"


def test_a_rerun_with_a_cache_fetches_no_image_twice(tiny_region, tiny_server, synthetic_key, tmp_path):
    from corebuild.shards.cache import open_cache

    cfg = with_synthetic_endpoints(BuildConfig(region_id="tiny"), tiny_server.base_url)
    fetch = dataclasses.replace(cfg.fetch, cache_url=str(tmp_path / "cache"))
    records = sample_records(tiny_region, SampleConfig(limit=4))
    with Fetcher(fetch) as f:
        first = f.fetch(records)
        sent_first = f.street.http.requests + f.aerial.http.requests
    with Fetcher(fetch) as f:
        second = f.fetch(records)
        images_sent = f.street.http.requests - len(records)  # one free metadata call per point, never cached
        assert f.aerial.http.requests == 0 and images_sent == 0  # only the free metadata calls go out
        assert f.street.http.cache_hits + f.aerial.http.cache_hits > 0 and sent_first > 0
    assert [r.street.views[0].image if r.street else None for r in first] == [r.street.views[0].image if r.street else None for r in second]
    assert open_cache(str(tmp_path / "cache")).storage.list("blobs")


def test_attempts_are_per_stage(monkeypatch):
    """street=1 and aerial=3 against a server answering 503 to everything: counted requests."""
    import pytest

    from corebuild.errors import StageError
    from tests.stages.fetch.apis import KEY_ENV, fetch_config, points, serving

    monkeypatch.setenv(KEY_ENV, "k-test")
    quick = HttpConfig(backoff_initial_s=0.01, backoff_max_s=0.05)
    by_stage = (("street", dataclasses.replace(quick, attempts=1)), ("aerial", dataclasses.replace(quick, attempts=3)))
    rec = points(1)[0]
    with serving(status=503) as api:
        with Fetcher(fetch_config(api.url, http=quick, http_by_stage=by_stage)) as f:
            out = f.locate([rec])
            with pytest.raises(StageError) as err:
                f._loop.run(f.aerial.crop(rec.lat, rec.lon))
            assert (f.street.http.cfg.attempts, f.aerial.http.cfg.attempts, f.map.http.cfg.attempts) == (1, 3, quick.attempts)
    assert out[0].failure_reason == "street.http_503" and len(api.times("sv_metadata")) == 1
    assert err.value.reason == "aerial.http_503" and len(api.times("aerial")) == 3  # one tile, three attempts


def test_http_by_stage_names_known_stages_only():
    import pytest

    from corebuild.errors import ConfigError
    from corebuild.stages.fetch.fetcher import FetchConfig

    assert FetchConfig(http_by_stage=(("map", HttpConfig(max_retry_wait_s=300)),)).http_for("map").max_retry_wait_s == 300
    assert FetchConfig().http_for("street") == HttpConfig()
    with pytest.raises(ConfigError, match="'describe'"):
        FetchConfig(http_by_stage=(("describe", HttpConfig()),))
