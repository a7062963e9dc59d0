"""Launch a region build: preflight checks, the synthetic server if the region needs it, the Beam
pipeline, then manifest.json and a one-line summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .config import BuildConfig
from .dataflow import DryRunResult, check_dry_run, check_packages, complete_job, dry_run_requested
from .describe import load_describer
from .errors import BuildError, ConfigError, CorebuildError
from .manifest import count_shards, write_manifest
from .fetch import Fetcher
from .ocr import load_ocr
from .prompts import load_prompt
from .segment import load_labeler, load_segmenter
from .providers.aerial import AerialConfig
from .providers import AERIAL_PRESETS, STREET_PROVIDERS
from .provenance import code_version, library_versions
from .progress import UnitProgress
from .regions import Region, load_region
from .failures import TRANSIENT, parse_retry_selection
from .resume import BUILD_FILE, BuildState, check_units, note_attempt, read_markers, remove_orphans, retry_selection, start_build, units_for
from .sample import SamplingPlan
from .storage import open_storage
from .write import RunStamp

log = logging.getLogger("corebuild.build")
SYNTHETIC_KEY_ENV = "COREBUILD_SYNTHETIC_API_KEY"


class _NoTracebackForOurErrors(logging.Filter):
    """Beam logs every DoFn exception with its traceback before re-raising it; a CorebuildError
    (disk full, permission denied) reaches run_build's caller, which says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], CorebuildError))


@dataclass(frozen=True)
class BuildResult:
    out_url: str  # <output>/<region>, a local path or gs:// URL
    manifest: dict[str, Any]

    @property
    def out_dir(self) -> Path:
        """The build as a local path (local outputs only)."""
        if "://" in self.out_url:
            raise ValueError(f"{self.out_url} is not local")
        return Path(self.out_url)

    @property
    def transient(self) -> int:
        """Failure rows that `--retry-failed` would re-attempt."""
        return int(self.manifest["counts"].get("failed_by_class", {}).get(TRANSIENT, 0))

    @property
    def summary(self) -> str:
        m = self.manifest
        c = m["counts"]
        reasons = ", ".join(f"{k} {v}" for k, v in c["failed_by_reason"].items())
        retried = m.get("retried")
        return (
            f"{m['region_id']}: sampled {c['sampled']} / kept {c['kept']} / failed {c['failed']}"
            + (f" ({reasons})" if reasons else "")
            + (f"; retried {retried['points']} failure row(s)" if retried else "")
            + f" in {m['timings']['total_s']:.1f} s -> {self.out_url}/shards"
            + (f"\n{self.transient} transient failure(s) remain (quota, 429/5xx, timeouts): rerun the same command with --retry-failed" if self.transient else "")
        )


def resolve_providers(cfg: BuildConfig, region: Region) -> BuildConfig:
    """Command line > region manifest `providers` > defaults, for street, aerial and map."""
    street = cfg.street_provider or region.providers.get("street") or cfg.fetch.street_provider
    if street not in STREET_PROVIDERS:
        raise ConfigError(f"unknown street provider {street!r}; known: {', '.join(sorted(STREET_PROVIDERS))}")
    fetch = dataclasses.replace(cfg.fetch, street_provider=street)
    for key, chosen in (("aerial", cfg.aerial_preset), ("map", cfg.map_preset)):
        name = chosen or region.providers.get(key)
        if name is None:
            continue
        if name not in AERIAL_PRESETS:
            raise ConfigError(f"unknown {key} preset {name!r}; known: {', '.join(sorted(AERIAL_PRESETS))}")
        preset = AERIAL_PRESETS[name]
        if key == "aerial" and cfg.fetch.aerial.url_template:
            continue  # the user's own --aerial-url wins over a manifest preset
        fetch = dataclasses.replace(fetch, **{key: preset})
    return dataclasses.replace(cfg, fetch=fetch)


def with_synthetic_endpoints(cfg: BuildConfig, base_url: str) -> BuildConfig:
    """Point the real clients (whichever street provider was chosen, the XYZ aerial client and
    the optional map client) at the synthetic world's server, which speaks their wire formats."""
    f = cfg.fetch
    fetch = dataclasses.replace(
        f,
        streetview=dataclasses.replace(f.streetview, base_url=base_url, api_key_env=SYNTHETIC_KEY_ENV),
        mapillary=dataclasses.replace(f.mapillary, base_url=f"{base_url}/mapillary", token_env=SYNTHETIC_KEY_ENV),
        aerial_provider="xyz",
        aerial=AerialConfig(
            url_template=f"{base_url}/tiles/{{z}}/{{x}}/{{y}}.png",
            zoom=f.aerial.zoom,
            size=f.aerial.size,
            attribution="corebuild synthetic world",
            provider_name="synthetic_aerial",
        ),
        map=AerialConfig(
            url_template=f"{base_url}/osm/{{z}}/{{x}}/{{y}}.png",
            zoom=f.map.zoom,
            size=f.map.size,
            image_format="png",
            attribution="corebuild synthetic world (map style)",
            max_blank_share=2.0,
            provider_name="synthetic_map",
        )
        if f.map
        else None,
    )
    return dataclasses.replace(cfg, fetch=fetch, imagery="synthetic")


def preflight(cfg: BuildConfig, region: Region) -> dict[str, Any]:
    """Fail before any work starts, with one clear message, on what would fail every record.
    Returns the model ids the build will record."""
    prompt = load_prompt(cfg.describe.prompts_dir, cfg.describe.prompt_id)
    if not cfg.runner.local:
        # Workers on another runner hold the weights (worker image) and read keys (Secret
        # Manager) there; this machine checks the prompt and config, then records the ids asked for.
        inline = cfg.inline_credentials()
        if inline:  # the config is pickled into the job: a credential in a URL would travel with it
            raise ConfigError(
                f"{', '.join(inline)}: a credential inline in a URL would be pickled into the {cfg.runner.runner} job; put {{key}} in the URL "
                "with --aerial-key-env VAR (the describer: --llm-key-env VAR) and --secret VAR=projects/<p>/secrets/<name> (Secret Manager) instead"
            )
        s = cfg.segment
        return {
            "ocr": f"{cfg.ocr.backend}:(loaded on workers)",
            "segmentation": f"{s.backend}:{s.model_type}" if s.backend != "off" else None,
            "mask_labels": f"{s.labeler}" if s.backend != "off" and s.labeler != "off" else None,
            "describer": f"{cfg.describe.backend}:{cfg.describe.model or cfg.describe.backend}",
            "prompt": {"id": prompt.id, "hash": prompt.hash},
            "checked_on": "workers",
        }
    if cfg.describe.backend == "vllm":
        describer_id = f"vllm:{cfg.describe.model}"  # the engine loads on the GPU workers, not here
    else:
        describer = load_describer(cfg.describe)
        describer_id = f"{describer.name}:{describer.model_id}"
        getattr(describer, "close", lambda: None)()
    ocr = load_ocr(cfg.ocr, [list(g) for g in region.ocr_languages])
    segmenter = load_segmenter(cfg.segment)  # missing weights fail here, once, not per element
    labeler = load_labeler(cfg.segment) if segmenter else None
    Fetcher(cfg.fetch).close()  # resolves every provider's secrets and settings, then lets go
    return {
        "ocr": f"{ocr.name}:{ocr.model_id}",
        "segmentation": f"{segmenter.name}:{segmenter.model_id}" if segmenter else None,  # None: off, and said so
        "mask_labels": f"{labeler.name}:{labeler.model_id}" if labeler else None,
        "describer": describer_id,
        "prompt": {"id": prompt.id, "hash": prompt.hash},
    }


def run_build(
    cfg: BuildConfig, pipeline_factory: Optional[Callable] = None, overwrite: bool = False, progress: bool = True, retry_failed: Optional[str] = None
) -> BuildResult | DryRunResult:
    """Build (or resume) one region. A rerun with the same config into the same output skips
    the finished work units; `overwrite` starts afresh instead. `retry_failed` ("transient", or a
    comma list of reasons/kinds) also re-attempts those failure rows of finished units, in place.
    With DataflowRunner and Beam's `--dry_run=True`: the job Beam would submit, built and described
    (a DryRunResult), as a fresh build's; nothing in the output is read or written."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    region = load_region(cfg.region_id, cfg.manifests_dir)
    server_proc = None
    cfg = resolve_providers(cfg, region)
    check_packages(cfg.runner.runner, cfg.output_dir, cfg.fetch.cache_url)  # the gcp extra: one line, not Beam's traceback
    dry_run = dry_run_requested(cfg.runner.extra_args)
    if dry_run:
        check_dry_run(cfg.runner.runner, cfg.runner.extra_args)
    try:
        if region.imagery == "synthetic" and cfg.imagery != "synthetic":
            from .synthetic.server import serve_in_subprocess

            server_proc, url = serve_in_subprocess(region.id, cfg.manifests_dir)
            log.info("synthetic imagery for %s served at %s", region.id, url)
            os.environ.setdefault(SYNTHETIC_KEY_ENV, "synthetic-not-a-secret")
            cfg = with_synthetic_endpoints(cfg, url)
        models = preflight(cfg, region)
        storage = open_storage(cfg.output_dir)
        version = code_version()
        if dry_run:  # the job of a fresh build: _build.json and the markers are neither read nor written
            state = BuildState(f"{region.id}-{started.strftime('%Y%m%dT%H%M%SZ')}", cfg.content_hash(), cfg.write.unit_points, 1, frozenset(), False)
        else:
            state = start_build(
                storage, region.id, f"{region.id}-{started.strftime('%Y%m%dT%H%M%SZ')}", cfg.content_hash(), cfg.content_dict(),
                cfg.write.unit_points, version, overwrite,
            )
        retried = None
        if state.resumed:
            markers = read_markers(storage, region.id)
            remove_orphans(storage, region.id, markers)
            log.info("resuming build %s (attempt %d): %d unit(s) already done", state.build_id, state.attempt, len(state.done))
            if retry_failed is not None:
                chosen = retry_selection(storage, region.id, markers, parse_retry_selection(retry_failed))
                state = dataclasses.replace(state, retry=frozenset(chosen))
                by_reason: dict[str, int] = {}
                for why in chosen.values():
                    by_reason[why] = by_reason.get(why, 0) + 1
                retried = {"selection": retry_failed or TRANSIENT, "points": len(chosen), "by_reason": dict(sorted(by_reason.items()))}
                note_attempt(storage, region.id, retried=retried)
                log.info("retrying %d failure row(s): %s", len(chosen), ", ".join(f"{k} {v}" for k, v in retried["by_reason"].items()) or "none match")
        elif retry_failed is not None and not dry_run:
            log.warning("--retry-failed: %s held no build; this is a fresh one", storage.join(region.id))
        stamp = RunStamp(build_id=state.build_id, config_hash=state.config_hash, code_version=version)
        from pipelines.build_region import run

        if dry_run:  # DataflowRunner returns the job it would submit; no shards to wait for, no manifest
            result = run(cfg, region, stamp, storage, state, test_pipeline=pipeline_factory() if pipeline_factory else None)
            return DryRunResult(region.id, storage.join(region.id), complete_job(result.job))
        wanted = SamplingPlan(region, cfg.sample).wanted
        t_pipe = time.perf_counter()
        beam_log, quiet = logging.getLogger("apache_beam.runners.common"), _NoTracebackForOurErrors()
        beam_log.addFilter(quiet)
        try:
            with UnitProgress(storage, region.id, units_for(wanted, state.unit_points), state.unit_points, enabled=progress, attempt=state.attempt, retry_units=state.retry_units):
                run(cfg, region, stamp, storage, state, test_pipeline=pipeline_factory() if pipeline_factory else None)
        finally:
            beam_log.removeFilter(quiet)
        pipeline_s = time.perf_counter() - t_pipe
    finally:
        if server_proc is not None:
            server_proc.terminate()
            server_proc.wait(10)

    sampling = [json.loads(storage.read(n) or b"{}") for n in storage.list(f"{region.id}/_sampling/")]
    sampled = sum(s["sampled"] for s in sampling)
    markers = read_markers(storage, region.id)
    remove_orphans(storage, region.id, markers)
    unit_problem = check_units(markers, sampled, state.unit_points)
    written = {s["path"]: s for m in markers for s in m["shards"]}
    counts = count_shards(storage, [f"{region.id}/shards/{p}" for p in written], written)
    build_doc = json.loads(storage.read(f"{region.id}/{BUILD_FILE}") or b"{}")
    manifest = {
        "build_id": stamp.build_id,
        "region_id": region.id,
        "region": {"name": region.name, "country": region.country, "continent": region.continent, "manifest": region.source_path},
        "started_utc": build_doc.get("attempts", [{}])[0].get("started_utc", started.isoformat()),
        "attempts": build_doc.get("attempts", []),
        "code_version": stamp.code_version,
        "config_hash": stamp.config_hash,
        "config": cfg.to_dict(),
        "models": models,
        "libraries": library_versions(),
        "sampling": sampling,
        "units": {"unit_points": state.unit_points, "done": len(markers), "done_before_this_attempt": len(state.done), "problem": unit_problem},
        "counts": {"sampled": sampled, **{k: v for k, v in counts.items() if k != "shards"}},
        "retried": retried,
        "consistent": unit_problem is None
        and sampled == counts["rows"] == counts["kept"] + counts["failed"]
        and counts["duplicate_sample_ids"] == 0,
        "shards": counts["shards"],
        "timings": {"pipeline_s": round(pipeline_s, 2), "total_s": round(time.perf_counter() - t0, 2)},
    }
    write_manifest(storage, f"{region.id}/manifest.json", manifest)
    result = BuildResult(storage.join(region.id), manifest)
    if not manifest["consistent"]:
        raise BuildError(
            f"build {stamp.build_id} is inconsistent: sampled {sampled}, rows {counts['rows']}, kept {counts['kept']}, "
            f"failed {counts['failed']}, duplicate ids {counts['duplicate_sample_ids']}"
            + (f", {unit_problem}" if unit_problem else "")
            + f" (see {storage.join(region.id + '/manifest.json')})"
        )
    return result
