"""Build configuration: explicit, typed, hashed and recorded with every build."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import corebuild.stages.fetch as fetch_stage
from corebuild.assets import MANIFESTS
from corebuild.errors import ConfigError, CorebuildError
from corebuild.options import add_flags, flag_paths, hashed_dict, option, registry_names
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.stages.fetch.localfolder import LocalFolderConfig
from corebuild.stages.ocr import OcrConfig
from corebuild.redact import inline_credential_fields, redact_beam_args, redact_urls_in
from corebuild.stages.describe.prompts import load_prompt
from corebuild.stages.segment import SegmentConfig
from corebuild.stages.roads import roads_hash
from corebuild.stages.sample import SampleConfig
from corebuild.stages.write import WriteConfig


@dataclass(frozen=True)
class RunnerConfig:
    runner: str = option("DirectRunner", flag="--runner", help="Beam runner")
    direct_num_workers: int = option(1, flag="--workers", help="DirectRunner worker processes")
    direct_running_mode: str = "in_memory"  # or multi_processing (one process per worker)
    batch_size: int = 8  # records per fetch/OCR/describe batch
    extra_args: tuple[str, ...] = ()  # passed through to Beam's PipelineOptions
    # Beam resource hint on the GPU stages (SAM segmentation, the in-process vLLM describer) so
    # Dataflow right-fits them onto GPU workers; CPU stages carry none.
    gpu_accelerator: str = "type:nvidia-l4;count:1;install-nvidia-driver"
    # Random keys of the reshuffle that spreads work units before locate (Beam's default, 2**32, is
    # one key per element: the DirectRunner then keeps a key and a list for each while it groups).
    spread_keys: int = 4096
    # Dedupe groups its (panorama, point) keys by bucket of panoramas, packed: one element a bucket
    # per bundle crosses its grouping, not one a point (~0.6 kB a point at 100k in the launcher and
    # workers). Also how many Dedupe calls a run can spread over Dataflow workers.
    dedupe_buckets: int = 256
    # glibc malloc arenas per local process, launcher and workers (corebuild.running.memory: why);
    # 0 leaves glibc's default. $MALLOC_ARENA_MAX, when set, wins.
    malloc_arenas: int = 2
    # Bench only (bench/bench_load.py --grouping; no CLI flag): "grouping" ends the pipeline once
    # the work units are grouped (sample, locate, dedupe, group; nothing captured or written), to
    # measure what the groupings hold per point. None: the whole build.
    stop_after: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("spread_keys", "dedupe_buckets"):  # key counts: a hash modulo each
            value = getattr(self, name)
            if not (type(value) is int and value >= 1):
                raise ConfigError(f"runner.{name} must be an integer >= 1, got {value!r}")

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


@dataclass(frozen=True)
class BuildConfig:
    # hashed=False: what changes no row (where the rows go, how they run). See content_dict.
    region_id: str = option(flag="--region", help="region id (a file in --manifests)")
    output_dir: str = option("build", flag="--output", hashed=False, help="output root; the build goes to <output>/<region>/")
    # A directory, or the packaged manifests (corebuild.assets).
    manifests_dir: str = option(MANIFESTS, flag="--manifests", hashed=False, metavar="DIR", help="region manifests directory, or the packaged ones")
    imagery: str = "providers"  # "synthetic" when the region's world is served on loopback
    # Choices made on the command line; None lets the region manifest's `providers` (or the
    # default) decide. Resolved into `fetch` when the build starts (corebuild.running.build).
    street_provider: Optional[str] = option(
        None, flag="--street-provider", choices=lambda: registry_names(fetch_stage.STREET_PROVIDERS),
        unset=lambda: f"the manifest's, else {FetchConfig.street_provider}", help="street-level imagery provider; overrides the manifest",
    )
    aerial_preset: Optional[str] = option(
        None, flag="--aerial-preset", choices=lambda: registry_names(fetch_stage.AERIAL_PRESETS), help="a named aerial source (see README); overrides the manifest"
    )
    map_preset: Optional[str] = option(None, flag="--map-preset", choices=lambda: registry_names(fetch_stage.AERIAL_PRESETS), help="add a map-tile modality, e.g. osm")
    sample: SampleConfig = field(default_factory=SampleConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    runner: RunnerConfig = option(default_factory=RunnerConfig, hashed=False)

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
        flags = flag_paths(BuildConfig)
        return [f"{path} ({flags[path]})" if path in flags else path for path in inline_credential_fields(d)]

    def ocr_plan_backends(self) -> str:
        """The readers `--ocr-backend auto` runs for this region here, joined by "+" (one name
        for a one-reader region: the demo's "rapidocr")."""
        from corebuild.regions import load_region
        from corebuild.stages.ocr.coverage import region_plan

        try:
            region = load_region(self.region_id, self.manifests_dir)
        except CorebuildError:  # no such region: the build fails on it before any hash matters
            return "auto"
        return "+".join(r.backend for r in region_plan(self.ocr, region).readers) or "off"

    def content_hash(self) -> str:
        blob = json.dumps(self.content_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def content_dict(self) -> dict[str, Any]:
        """What determines the rows: not where they go, how they run, or (for the synthetic
        world) which loopback port served them. JSON-safe."""
        d = redact_urls_in(hashed_dict(self))  # the fields marked hashed=False left out
        # A stage's HTTP settings differ from the shared ones only in pacing (not hashed): one.
        d["fetch"]["http_by_stage"] = [[stage, h] for stage, h in d["fetch"]["http_by_stage"] if h != d["fetch"]["http"]]
        # Where the prompt set (and the segment vocabulary) is read from changes no row (the
        # prompts_dir fields are not hashed); what it says does, so the hash of its bytes (the one
        # every row records) stands in: a checkout and an installed wheel agree, and a prompt
        # edited between two runs stops a resume, which the directory never did.
        d["describe"]["prompt_hash"] = load_prompt(self.describe.prompts_dir, self.describe.prompt_id).hash
        if self.sample.roads is not None:  # likewise: the road file's bytes, not its path
            d["sample"]["roads_hash"] = roads_hash(self.sample.roads)
        else:  # without roads the tags change no row: builds from before them still resume
            del d["sample"]["road_tags"]
        if self.sample.quota_of == "sampled":  # likewise: today's quota of sampled points, as before rounds
            del d["sample"]["quota_of"], d["sample"]["expected_yield"]
        local = d["fetch"]["local"]
        for name in ("license", "attribution"):  # likewise: unstated, they keep the hash of builds before them
            if getattr(self.fetch.local, name) == getattr(LocalFolderConfig, name):
                del local[name]
        if self.ocr.det_side == 0:  # likewise: detection at full size, as every build before the setting
            del d["ocr"]["det_side"]
        if self.ocr.runtime == "onnxruntime":  # likewise: ONNX Runtime (at f32), as every build before the setting
            del d["ocr"]["runtime"], d["ocr"]["precision"]
        if self.ocr.backend == "auto":  # what auto resolves to runs: builds from before auto (rapidocr) still resume
            d["ocr"]["backend"] = self.ocr_plan_backends()
        if self.segment.backend != "off":
            d["segment"]["vocabulary_hash"] = load_prompt(self.segment.prompts_dir, self.segment.vocabulary).hash
        if self.imagery == "synthetic":
            f = d["fetch"]
            f["streetview"]["base_url"] = f["mapillary"]["base_url"] = "synthetic"
            f["aerial"]["url_template"] = "synthetic"
            if f["map"]:
                f["map"]["url_template"] = "synthetic"
        return json.loads(json.dumps(d, default=str))


def add_data_flags(p: argparse.ArgumentParser, prompts: bool = False) -> None:
    """--manifests (and --prompts): a directory, by default the data packaged with corebuild,
    whatever the working directory (configs record it by the name given here). The build's own
    flags, so the other commands share their default and help (corebuild.options)."""
    add_flags(p, BuildConfig, only=("--manifests", "--prompts") if prompts else ("--manifests",))
