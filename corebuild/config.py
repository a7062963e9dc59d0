"""Build configuration: explicit, typed, hashed and recorded with every build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .assets import MANIFESTS
from .describe import DescribeConfig
from .fetch import FetchConfig
from .ocr import OcrConfig
from .redact import inline_credential_fields, redact_beam_args, redact_urls_in
from .prompts import load_prompt
from .segment import SegmentConfig
from .sample import SampleConfig


@dataclass(frozen=True)
class WriteConfig:
    codec: str = "zstd"
    row_group_rows: int = 32  # rows carry ~0.3 MB of images: ~10 MB row groups
    shard_bytes: int = 256 * 1024 * 1024  # roll over to a new shard past this size
    # Points per work unit: the grain of resume and of parallelism, and the most rows one shard
    # holds (~0.1-0.3 MB a row: 10-30 MB shards; raise it for fewer, bigger files).
    unit_points: int = 100


@dataclass(frozen=True)
class RunnerConfig:
    runner: str = "DirectRunner"
    direct_num_workers: int = 1
    direct_running_mode: str = "in_memory"  # or multi_processing (one process per worker)
    batch_size: int = 8  # records per fetch/OCR/describe batch
    extra_args: tuple[str, ...] = ()  # passed through to Beam's PipelineOptions
    # Beam resource hint on the GPU stages (SAM segmentation, the in-process vLLM describer) so
    # Dataflow right-fits them onto GPU workers; CPU stages carry none.
    gpu_accelerator: str = "type:nvidia-l4;count:1;install-nvidia-driver"

    @property
    def local(self) -> bool:
        """Workers run on this machine (models, weights and keys are checked here first)."""
        return self.runner in ("DirectRunner", "direct", "PrismRunner", "prism")

    def pipeline_args(self) -> list[str]:
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [f"--direct_num_workers={self.direct_num_workers}", f"--direct_running_mode={self.direct_running_mode}"]
        # Worker processes log Beam's INFO chatter; keep warnings, and our own progress lines.
        args += ["--default_sdk_harness_log_level=WARNING", '--sdk_harness_log_level_overrides={"corebuild":"INFO"}']
        return args + list(self.extra_args)


# How fast and how hard providers are asked changes no row that a rerun with
# --retry-failed cannot fix (it turns transient failures into kept rows), so a rerun may change
# it and still resume: lower --rate after quota trouble, raise --max-retry-wait. Image limits stay.
_HTTP_PACING = ("concurrency", "rate_per_s", "timeout_s", "attempts", "backoff_initial_s", "backoff_max_s", "max_retry_wait_s")


def _drop_http_pacing(fetch: dict[str, Any]) -> None:
    for http in (fetch["http"], *(h for _, h in fetch["http_by_stage"])):
        for key in _HTTP_PACING:
            http.pop(key)
    fetch["http_by_stage"] = [[stage, h] for stage, h in fetch["http_by_stage"] if h != fetch["http"]]


_URL_FLAGS = {
    "fetch.streetview.base_url": "--streetview-url",
    "fetch.aerial.url_template": "--aerial-url",
    "fetch.mapillary.base_url": "--mapillary-url",
    "fetch.cache_url": "--cache",
    "describe.base_url": "--llm-url",
}


@dataclass(frozen=True)
class BuildConfig:
    region_id: str
    output_dir: str = "build"
    manifests_dir: str = MANIFESTS  # a directory, or the packaged manifests (corebuild.assets)
    imagery: str = "providers"  # "synthetic" when the region's world is served on loopback
    # Choices made on the command line; None lets the region manifest's `providers` (or the
    # default) decide. Resolved into `fetch` when the build starts (corebuild.build).
    street_provider: Optional[str] = None
    aerial_preset: Optional[str] = None
    map_preset: Optional[str] = None
    sample: SampleConfig = field(default_factory=SampleConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as recorded (manifest.json; via content_dict, _build.json and the hash):
        every URL without its userinfo or secret query values, and Beam options that carry
        credentials redacted (corebuild.redact). The real values stay in this object, which is
        what the workers get; a rotated token therefore changes neither record nor hash."""
        d = redact_urls_in(dataclasses.asdict(self))
        d["runner"]["extra_args"] = redact_beam_args(self.runner.extra_args)
        return d

    def inline_credentials(self) -> list[str]:
        """Fields (and their flags) whose URL carries a credential itself (userinfo, a secret
        query value other than a `{key}` slot): on a remote runner it would be pickled into the
        job with the DoFns. Beam's own options (runner.extra_args) are Beam's channel: not here."""
        d = dataclasses.asdict(self)
        d.pop("runner")
        return [f"{path} ({_URL_FLAGS[path]})" if path in _URL_FLAGS else path for path in inline_credential_fields(d)]

    def content_hash(self) -> str:
        blob = json.dumps(self.content_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def content_dict(self) -> dict[str, Any]:
        """What determines the rows: not where they go, how they run, or (for the synthetic
        world) which loopback port served them. JSON-safe."""
        d = self.to_dict()
        for k in ("output_dir", "runner", "manifests_dir"):
            d.pop(k)
        d["fetch"].pop("cache_url")  # a cache changes speed, not rows
        _drop_http_pacing(d["fetch"])
        d["fetch"].pop("secret_names")  # where keys come from changes no row
        d["describe"].pop("api_key_secret")
        # Where the prompt set (and the segment vocabulary) is read from changes no row; what it
        # says does, so the hash of its bytes (the one every row records) replaces the directory:
        # a checkout and an installed wheel agree, and a prompt edited between two runs stops a
        # resume, which the directory never did.
        d["describe"]["prompt_hash"] = load_prompt(d["describe"].pop("prompts_dir"), self.describe.prompt_id).hash
        vocabulary_dir = d["segment"].pop("prompts_dir")
        if self.segment.backend != "off":
            d["segment"]["vocabulary_hash"] = load_prompt(vocabulary_dir, self.segment.vocabulary).hash
        if self.imagery == "synthetic":
            f = d["fetch"]
            f["streetview"]["base_url"] = f["mapillary"]["base_url"] = "synthetic"
            f["aerial"]["url_template"] = "synthetic"
            if f["map"]:
                f["map"]["url_template"] = "synthetic"
        return json.loads(json.dumps(d, default=str))
