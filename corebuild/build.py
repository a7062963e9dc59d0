"""Launch a region build: preflight checks, the synthetic server if the region needs it, the Beam
pipeline, then manifest.json and a one-line summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .config import BuildConfig
from .describe import load_describer
from .errors import BuildError, ConfigError
from .manifest import count_shards, write_manifest
from .ocr import load_ocr
from .provenance import code_version, library_versions
from .regions import Region, load_region
from .secrets import resolve_secret
from .write import RunStamp

log = logging.getLogger("corebuild.build")
SYNTHETIC_KEY_ENV = "COREBUILD_SYNTHETIC_API_KEY"


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    manifest: dict[str, Any]

    @property
    def summary(self) -> str:
        m = self.manifest
        c = m["counts"]
        reasons = ", ".join(f"{k} {v}" for k, v in c["failed_by_reason"].items())
        return (
            f"{m['region_id']}: sampled {c['sampled']} / kept {c['kept']} / failed {c['failed']}"
            + (f" ({reasons})" if reasons else "")
            + f" in {m['timings']['total_s']:.1f} s -> {self.out_dir / 'shards'}"
        )


def with_synthetic_endpoints(cfg: BuildConfig, base_url: str) -> BuildConfig:
    """Point the real Street View and XYZ clients at the synthetic world's server."""
    fetch = dataclasses.replace(
        cfg.fetch,
        street_provider="google_streetview",
        streetview=dataclasses.replace(cfg.fetch.streetview, base_url=base_url, api_key_env=SYNTHETIC_KEY_ENV),
        aerial_provider="xyz",
        aerial=dataclasses.replace(
            cfg.fetch.aerial, url_template=f"{base_url}/tiles/{{z}}/{{x}}/{{y}}.png", attribution="corebuild synthetic world"
        ),
    )
    return dataclasses.replace(cfg, fetch=fetch, imagery="synthetic")


def preflight(cfg: BuildConfig, region: Region) -> dict[str, Any]:
    """Fail before any work starts, with one clear message, on what would fail every record.
    Returns the model ids the build will record."""
    describer = load_describer(cfg.describe)
    ocr = load_ocr(cfg.ocr)
    if cfg.imagery != "synthetic":
        resolve_secret(cfg.fetch.streetview.api_key_env, "Google Street View")
        if not cfg.fetch.aerial.url_template:
            raise ConfigError("no aerial tile URL template: pass --aerial-url (an XYZ template with {z}/{x}/{y})")
    return {
        "ocr": f"{ocr.name}:{ocr.model_id}",
        "segmentation": None,  # off until the segmentation backend lands; recorded, not implied
        "describer": f"{describer.name}:{describer.model_id}",
        "prompt": {"id": describer.prompt.id, "hash": describer.prompt.hash},
    }


def prepare_output(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = [out_dir / "shards", out_dir / "_sampling", out_dir / "manifest.json"]
    if any(p.exists() for p in stale):
        log.warning("replacing the previous build in %s", out_dir)
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (out_dir / "shards").mkdir()
    (out_dir / "_sampling").mkdir()


def run_build(cfg: BuildConfig, pipeline_factory: Optional[Callable] = None) -> BuildResult:
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    region = load_region(cfg.region_id, cfg.manifests_dir)
    server_proc = None
    try:
        if region.imagery == "synthetic" and cfg.imagery != "synthetic":
            from .synthetic.server import serve_in_subprocess

            server_proc, url = serve_in_subprocess(region.id, cfg.manifests_dir)
            log.info("synthetic imagery for %s served at %s", region.id, url)
            os.environ.setdefault(SYNTHETIC_KEY_ENV, "synthetic-not-a-secret")
            cfg = with_synthetic_endpoints(cfg, url)
        models = preflight(cfg, region)
        out_dir = Path(cfg.output_dir) / region.id
        prepare_output(out_dir)
        stamp = RunStamp(
            build_id=f"{region.id}-{started.strftime('%Y%m%dT%H%M%SZ')}",
            config_hash=cfg.content_hash(),
            code_version=code_version(),
        )
        from pipelines.build_region import run

        t_pipe = time.perf_counter()
        run(
            cfg,
            region,
            stamp,
            str(out_dir / "shards" / "part"),
            str(out_dir / "_sampling" / "sampling"),
            test_pipeline=pipeline_factory() if pipeline_factory else None,
        )
        pipeline_s = time.perf_counter() - t_pipe
    finally:
        if server_proc is not None:
            server_proc.terminate()
            server_proc.wait(10)

    sampling = [json.loads(line) for p in sorted((out_dir / "_sampling").glob("*.jsonl")) for line in p.read_text().splitlines() if line.strip()]
    counts = count_shards(sorted((out_dir / "shards").glob("*.parquet")))
    sampled = sum(s["sampled"] for s in sampling)
    manifest = {
        "build_id": stamp.build_id,
        "region_id": region.id,
        "region": {"name": region.name, "country": region.country, "continent": region.continent, "manifest": region.source_path},
        "started_utc": started.isoformat(),
        "code_version": stamp.code_version,
        "config_hash": stamp.config_hash,
        "config": cfg.to_dict(),
        "models": models,
        "libraries": library_versions(),
        "sampling": sampling,
        "counts": {"sampled": sampled, **{k: v for k, v in counts.items() if k != "shards"}},
        "consistent": sampled == counts["rows"] == counts["kept"] + counts["failed"] and counts["duplicate_sample_ids"] == 0,
        "shards": counts["shards"],
        "timings": {"pipeline_s": round(pipeline_s, 2), "total_s": round(time.perf_counter() - t0, 2)},
    }
    write_manifest(out_dir / "manifest.json", manifest)
    result = BuildResult(out_dir, manifest)
    if not manifest["consistent"]:
        raise BuildError(
            f"build {stamp.build_id} is inconsistent: sampled {sampled}, rows {counts['rows']}, kept {counts['kept']}, "
            f"failed {counts['failed']}, duplicate ids {counts['duplicate_sample_ids']} (see {out_dir / 'manifest.json'})"
        )
    return result
