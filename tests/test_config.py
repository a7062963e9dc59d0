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
