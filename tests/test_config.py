from corebuild.build import with_synthetic_endpoints
from corebuild.config import BuildConfig, RunnerConfig
from corebuild.sample import SampleConfig


def test_content_hash_ignores_paths_runner_and_synthetic_port():
    a = with_synthetic_endpoints(BuildConfig("demo", output_dir="a"), "http://127.0.0.1:1111")
    b = with_synthetic_endpoints(BuildConfig("demo", output_dir="b", runner=RunnerConfig(direct_num_workers=2)), "http://127.0.0.1:2222")
    assert a.content_hash() == b.content_hash()
    c = with_synthetic_endpoints(BuildConfig("demo", sample=SampleConfig(seed=1)), "http://127.0.0.1:1111")
    assert c.content_hash() != a.content_hash()


def test_pipeline_args():
    args = RunnerConfig(direct_num_workers=2, direct_running_mode="multi_processing", extra_args=("--x=1",)).pipeline_args()
    assert args[:3] == ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert args[-1] == "--x=1"  # the user's own options come last and win


def test_content_hash_ignores_how_fast_and_hard_providers_are_asked():
    import dataclasses

    from corebuild.fetch import FetchConfig
    from corebuild.providers.http import HttpConfig

    def build(**fetch):
        return BuildConfig("demo", fetch=FetchConfig(**fetch))

    base = build()
    paced = HttpConfig(rate_per_s=0.2, attempts=9, max_retry_wait_s=600, timeout_s=5, concurrency=2)
    assert build(http=paced, http_by_stage=(("street", dataclasses.replace(paced, attempts=1)),)).content_hash() == base.content_hash()
    # Image limits decide which rows are kept for good: they stay in the hash, per stage too.
    assert build(http=HttpConfig(max_image_pixels=1000)).content_hash() != base.content_hash()
    assert build(http_by_stage=(("map", HttpConfig(max_image_bytes=1000)),)).content_hash() != base.content_hash()
