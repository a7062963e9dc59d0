import pytest

from corebuild.errors import ConfigError
from corebuild.running.build import with_synthetic_endpoints
from corebuild.config import BuildConfig, RunnerConfig
from corebuild.stages.sample import SampleConfig


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

    from corebuild.stages.fetch.fetcher import FetchConfig
    from corebuild.stages.fetch.http import HttpConfig

    def build(**fetch):
        return BuildConfig("demo", fetch=FetchConfig(**fetch))

    base = build()
    paced = HttpConfig(rate_per_s=0.2, attempts=9, max_retry_wait_s=600, timeout_s=5, concurrency=2)
    assert build(http=paced, http_by_stage=(("street", dataclasses.replace(paced, attempts=1)),)).content_hash() == base.content_hash()
    # Image limits decide which rows are kept for good: they stay in the hash, per stage too.
    assert build(http=HttpConfig(max_image_pixels=1000)).content_hash() != base.content_hash()
    assert build(http_by_stage=(("map", HttpConfig(max_image_bytes=1000)),)).content_hash() != base.content_hash()


# -- credentials: recorded redacted, used real, never a reason to refuse a resume ------------------


def _with_credentials(token: str, password: str, beam: str) -> BuildConfig:
    from corebuild.stages.describe import DescribeConfig
    from corebuild.stages.fetch.fetcher import FetchConfig
    from corebuild.stages.fetch import AerialConfig, StreetViewConfig

    return BuildConfig(
        "demo",
        fetch=FetchConfig(
            streetview=StreetViewConfig(base_url=f"https://sv:{password}@maps.example"),
            aerial=AerialConfig(url_template=f"https://tiles.example/{{z}}/{{x}}/{{y}}.jpg?key={{key}}&access_token={token}", api_key_env="TILE_KEY"),
        ),
        describe=DescribeConfig(backend="openai", base_url=f"https://llm:{password}@llm.example", model="m"),
        runner=RunnerConfig(extra_args=(f"--s3_session_token={beam}", "--project=p")),
    )


def test_recorded_config_is_redacted_and_the_object_keeps_the_real_values():
    import json

    cfg = _with_credentials("T0KEN-1", "PASS-1", "BEAM-1")
    recorded = json.dumps([cfg.to_dict(), cfg.content_dict()])
    assert not any(v in recorded for v in ("T0KEN-1", "PASS-1", "BEAM-1")), recorded
    d = cfg.to_dict()
    assert d["fetch"]["aerial"]["url_template"] == "https://tiles.example/{z}/{x}/{y}.jpg?key={key}&access_token=REDACTED"
    assert d["fetch"]["streetview"]["base_url"] == "https://REDACTED@maps.example" and d["describe"]["base_url"] == "https://REDACTED@llm.example"
    assert d["runner"]["extra_args"] == ("--s3_session_token=REDACTED", "--project=p")
    # what the workers get: the object itself
    assert "T0KEN-1" in cfg.fetch.aerial.url_template and "PASS-1" in cfg.describe.base_url and cfg.runner.pipeline_args()[-2] == "--s3_session_token=BEAM-1"


def test_a_rotated_credential_changes_neither_the_hash_nor_a_resume(tmp_path):
    from corebuild.running.resume import start_build
    from corebuild.shards.storage import open_storage

    old, new = _with_credentials("T0KEN-1", "PASS-1", "BEAM-1"), _with_credentials("T0KEN-2", "PASS-2", "BEAM-2")
    assert old.content_hash() == new.content_hash() and old.content_dict() == new.content_dict()
    storage = open_storage(str(tmp_path))
    first = start_build(storage, "demo", "demo-1", old.content_hash(), old.content_dict(), 100, "v", overwrite=False)
    again = start_build(storage, "demo", "demo-2", new.content_hash(), new.content_dict(), 100, "v", overwrite=False)
    assert not first.resumed and again.resumed and again.build_id == "demo-1"
    assert "T0KEN" not in (tmp_path / "demo" / "_build.json").read_text()


def test_a_remote_runner_refuses_credentials_inline_in_a_url():
    import dataclasses

    import pytest

    from corebuild.running.build import preflight
    from corebuild.errors import ConfigError
    from corebuild.stages.fetch.fetcher import FetchConfig
    from corebuild.stages.fetch import AerialConfig
    from corebuild.regions import load_region

    region = load_region("demo", BuildConfig("demo").manifests_dir)
    dataflow = RunnerConfig(runner="DataflowRunner")
    cfg = dataclasses.replace(_with_credentials("T0KEN-1", "PASS-1", "BEAM-1"), runner=dataflow)
    assert cfg.inline_credentials() == ["fetch.streetview.base_url (--streetview-url)", "fetch.aerial.url_template (--aerial-url)", "describe.base_url (--llm-url)"]
    with pytest.raises(ConfigError) as err:
        preflight(cfg, region)
    msg = str(err.value)
    assert "\n" not in msg and "--aerial-url" in msg and "{key}" in msg and "--secret" in msg and "Secret Manager" in msg
    assert "T0KEN-1" not in msg and "PASS-1" not in msg
    # {key} filled on the workers from Secret Manager: fine, as is the same config on the DirectRunner.
    ok = BuildConfig("demo", fetch=FetchConfig(aerial=AerialConfig(url_template="https://t.example/{z}/{x}/{y}?key={key}", api_key_env="TILE_KEY")), runner=dataflow)
    assert ok.inline_credentials() == [] and preflight(ok, region)["checked_on"] == "workers"


# -- what enters the config hash is the fields' own metadata (corebuild.options, hashed=False) -----


def _leaves(cls, prefix=""):
    from corebuild.options import walk

    return [x for x in walk(cls, prefix) if x.type in (int, float, str)]


def test_the_hash_leaves_out_exactly_the_fields_marked_not_hashed():
    """Changing a field marked hashed=False keeps the hash (a resume stays a resume); changing any
    other plain field changes it. The marks sit on the fields, so each stage config says it."""
    import dataclasses

    def changed(cfg, path: str, value):
        head, _, rest = path.partition(".")
        return dataclasses.replace(cfg, **{head: changed(getattr(cfg, head), rest, value) if rest else value})

    base = BuildConfig("demo")
    skip = {"region_id", "describe.prompt_id", "segment.vocabulary", "describe.prompts_dir", "segment.prompts_dir", "manifests_dir", "sample.roads"}  # must name real files
    for x in _leaves(BuildConfig):
        if x.path in skip or x.field.default is dataclasses.MISSING:
            continue
        value = {int: 7, float: 0.25, str: "x"}[x.type]
        try:
            other = changed(base, x.path, value)
        except Exception:  # a value the field refuses (__post_init__): nothing to hash
            continue
        assert (other.content_hash() == base.content_hash()) == (not x.hashed), x.path
    unhashed = {x.path for x in _leaves(BuildConfig) if not x.hashed}
    assert {"output_dir", "fetch.cache_url", "fetch.http.rate_per_s", "runner.runner", "describe.api_key_secret"} <= unhashed
    assert not unhashed & {"sample.seed", "fetch.http.max_image_pixels", "describe.grounding", "write.unit_points"}


def test_unhashed_prompt_directories_are_replaced_by_what_the_prompts_say(tmp_path):
    import shutil

    from corebuild.assets import locate
    from corebuild.stages.describe import DescribeConfig

    copy = tmp_path / "prompts"
    shutil.copytree(locate(DescribeConfig().prompts_dir), copy)
    moved = BuildConfig("demo", describe=DescribeConfig(prompts_dir=str(copy)))
    assert moved.content_hash() == BuildConfig("demo").content_hash() and "prompts_dir" not in moved.content_dict()["describe"]
    (copy / "template-v1.json").write_text((copy / "template-v1.json").read_text().replace("}", " }", 1))
    assert moved.content_hash() != BuildConfig("demo").content_hash()


@pytest.mark.parametrize("name, value", [("dedupe_buckets", 0), ("dedupe_buckets", 2.5), ("spread_keys", -1)])
def test_key_counts_of_the_groupings_must_be_positive_integers(name, value):
    """A bucket is a hash modulo the count: 0 would fail inside a worker, mid-build."""
    with pytest.raises(ConfigError, match=f"runner.{name} must be an integer >= 1, got {value!r}"):
        RunnerConfig(**{name: value})
