"""Build configuration: explicit, typed, hashed and recorded with every build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .describe import DescribeConfig
from .fetch import FetchConfig
from .ocr import OcrConfig
from .sample import SampleConfig


@dataclass(frozen=True)
class WriteConfig:
    codec: str = "zstd"
    # Rows are turned into Arrow arrays this many at a time; rows carry ~0.3 MB of images.
    record_batch_size: int = 32
    row_group_buffer_bytes: int = 32 * 1024 * 1024
    num_shards: int = 0  # 0: the runner decides


@dataclass(frozen=True)
class RunnerConfig:
    runner: str = "DirectRunner"
    direct_num_workers: int = 1
    direct_running_mode: str = "in_memory"  # or multi_processing (one process per worker)
    batch_size: int = 8  # records per fetch/OCR/describe batch
    extra_args: tuple[str, ...] = ()  # passed through to Beam's PipelineOptions

    def pipeline_args(self) -> list[str]:
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [f"--direct_num_workers={self.direct_num_workers}", f"--direct_running_mode={self.direct_running_mode}"]
        # Worker processes log Beam's INFO chatter; keep warnings, and our own progress lines.
        args += ["--default_sdk_harness_log_level=WARNING", '--sdk_harness_log_level_overrides={"corebuild":"INFO"}']
        return args + list(self.extra_args)


@dataclass(frozen=True)
class BuildConfig:
    region_id: str
    output_dir: str = "build"
    manifests_dir: str = "region_manifests"
    imagery: str = "providers"  # "synthetic" when the region's world is served on loopback
    sample: SampleConfig = field(default_factory=SampleConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def content_hash(self) -> str:
        """Hash of what determines the rows: not where they go, how they run, or (for the
        synthetic world) which loopback port served them."""
        d = self.to_dict()
        for k in ("output_dir", "runner", "manifests_dir"):
            d.pop(k)
        if self.imagery == "synthetic":
            d["fetch"]["streetview"]["base_url"] = "synthetic"
            d["fetch"]["aerial"]["url_template"] = "synthetic"
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
