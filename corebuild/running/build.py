"""Launch a region build: preflight checks, the synthetic server if the region needs it, the Beam
pipeline, then manifest.json and a one-line summary."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from corebuild.config import BuildConfig
from corebuild.running.dataflow import DryRunResult, check_dry_run, check_packages, complete_job, dry_run_requested
from corebuild.stages.describe import DESCRIBERS, load_describer
from corebuild.errors import BuildError, ConfigError, CorebuildError
from corebuild.shards.manifest import count_shards, write_manifest
from corebuild.stages.fetch.fetcher import Fetcher
from corebuild.stages.ocr import load_plan
from corebuild.stages.ocr.coverage import region_plan
from corebuild.stages.describe.prompts import load_prompt
from corebuild.stages.segment import load_labeler, load_segmenter
from corebuild.stages.fetch import choose_providers
from corebuild.stages.fetch.aerial import AerialConfig
from corebuild.licenses import SYNTHETIC, SYNTHETIC_ATTRIBUTION
from corebuild.running.provenance import code_version, library_versions
from corebuild.running.memory import limit_malloc_arenas
from corebuild.running.progress import UnitProgress
from corebuild.regions import Region, load_region
from corebuild.failures import TRANSIENT, parse_retry_selection
from corebuild.running.resume import note_attempt, read_build, start_build
from corebuild.running.rounds import quota_summary, run_rounds
from corebuild.shards.units import SAMPLING_DIR, BuildState, check_units, read_markers, remove_orphans, retry_selection, units_for
from corebuild.stages.roads import load_roads
from corebuild.stages.sample import SamplingPlan
from corebuild.stages.write import UnitWriter
from corebuild.shards.storage import open_storage
from corebuild.shards.schema import RunStamp

log = logging.getLogger("corebuild.running.build")
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
        q = m.get("quota") or {}
        quota = ""
        if q:
            y = "-" if q["yield"] is None else f"{100 * q['yield']:.1f}%"
            held = "met" if not q["missing"] else f"{q['missing']} short: {q['shortfall']}"
            quota = f"; quota {q['target']} {q['of']} {held}; yield {y} in {q['rounds']} round{'s' * (q['rounds'] != 1)}"
        return (
            f"{m['region_id']}: sampled {c['sampled']} / kept {c['kept']} / failed {c['failed']}"
            + (f" ({reasons})" if reasons else "")
            + quota
            + (f"; retried {retried['points']} failure row(s)" if retried else "")
            + f" in {m['timings']['total_s']:.1f} s -> {self.out_url}/shards"
            + (f"\n{self.transient} transient failure(s) remain (quota, 429/5xx, timeouts): rerun the same command with --retry-failed" if self.transient else "")
        )


def resolve_providers(cfg: BuildConfig, region: Region) -> BuildConfig:
    """Command line > region manifest `providers` > defaults, for street, aerial and map
    (`choose_providers` owns the rule; `corebuild estimate` uses it too)."""
    choice = choose_providers(cfg.street_provider, cfg.aerial_preset, cfg.map_preset, region.providers, cfg.fetch.street_provider)
    fetch = dataclasses.replace(cfg.fetch, street_provider=choice.street)
    if choice.aerial is not None and not cfg.fetch.aerial.url_template:  # the user's own --aerial-url wins over a preset
        fetch = dataclasses.replace(fetch, aerial=choice.aerial)
    if choice.map is not None:
        fetch = dataclasses.replace(fetch, map=choice.map)
    return dataclasses.replace(cfg, fetch=fetch)


def resolve_roads(cfg: BuildConfig, region: Region) -> BuildConfig:
    """`--roads` > the region manifest's `roads` > none (sampling over the whole area)."""
    if cfg.sample.roads is not None or region.roads is None:
        return cfg
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, roads=region.roads))


def with_synthetic_endpoints(cfg: BuildConfig, base_url: str) -> BuildConfig:
    """Point the real clients (whichever street provider was chosen, the XYZ aerial client and
    the optional map client) at the synthetic world's server, which speaks their wire formats."""
    f = cfg.fetch
    fetch = dataclasses.replace(
        f,
        # Its imagery is generated: the synthetic world's licence, whichever client fetches it.
        streetview=dataclasses.replace(f.streetview, base_url=base_url, api_key_env=SYNTHETIC_KEY_ENV, license=SYNTHETIC.id),
        mapillary=dataclasses.replace(
            f.mapillary, base_url=f"{base_url}/mapillary", token_env=SYNTHETIC_KEY_ENV, license=SYNTHETIC.id, attribution=SYNTHETIC_ATTRIBUTION
        ),
        aerial_provider="xyz",
        aerial=AerialConfig(
            url_template=f"{base_url}/tiles/{{z}}/{{x}}/{{y}}.png",
            zoom=f.aerial.zoom,
            size=f.aerial.size,
            attribution="corebuild synthetic world",  # hashed: as written before licences were recorded
            license=SYNTHETIC.id,
            provider_name="synthetic_aerial",
        ),
        map=AerialConfig(
            url_template=f"{base_url}/osm/{{z}}/{{x}}/{{y}}.png",
            zoom=f.map.zoom,
            size=f.map.size,
            image_format="png",
            attribution="corebuild synthetic world (map style)",
            license=SYNTHETIC.id,
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
    if cfg.sample.roads is not None:  # a missing or unreadable road file: here, not on every worker
        load_roads(cfg.sample.roads, cfg.sample.road_tags)
    plan = region_plan(cfg.ocr, region)
    coverage = {"by_script": dict(plan.by_script), "read": list(plan.read), "unread": list(plan.unread)}
    if plan.unread:
        log.warning("OCR for %s: no reader here reads %s (%s); sign text in them is recorded as unverifiable, not checked "
                    "(`corebuild models check --regions %s` says what would)", region.id, ", ".join(plan.unread), plan.summary(), region.id)
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
            "ocr_coverage": coverage,
            "segmentation": f"{s.backend}:{s.model_type}" if s.backend != "off" else None,
            "mask_labels": f"{s.labeler}" if s.backend != "off" and s.labeler != "off" else None,
            "describer": f"{cfg.describe.backend}:{cfg.describe.model or cfg.describe.backend}",
            "prompt": {"id": prompt.id, "hash": prompt.hash},
            "checked_on": "workers",
        }
    if DESCRIBERS.backend(cfg.describe.backend).shared:
        describer_id = f"{cfg.describe.backend}:{cfg.describe.model}"  # the engine loads on the GPU workers, not here
    else:
        describer = load_describer(cfg.describe)
        describer_id = f"{describer.name}:{describer.model_id}"
        getattr(describer, "close", lambda: None)()
    ocr = load_plan(cfg.ocr, plan)
    segmenter = load_segmenter(cfg.segment)  # missing weights fail here, once, not per element
    labeler = load_labeler(cfg.segment) if segmenter else None
    Fetcher(cfg.fetch).close()  # resolves every provider's secrets and settings, then lets go
    return {
        "ocr": f"{ocr.name}:{ocr.model_id}",
        "ocr_coverage": coverage,
        "segmentation": f"{segmenter.name}:{segmenter.model_id}" if segmenter else None,  # None: off, and said so
        "mask_labels": f"{labeler.name}:{labeler.model_id}" if labeler else None,
        "describer": describer_id,
        "prompt": {"id": prompt.id, "hash": prompt.hash},
    }


@dataclass
class Prepared:
    """A build ready to run: its config resolved (providers, the synthetic world's endpoints), its
    checks passed, its state (fresh, resumed, retrying) read from the output."""

    cfg: BuildConfig
    region: Region
    storage: Any
    state: BuildState
    stamp: RunStamp
    models: dict[str, Any]
    dry_run: bool
    started: datetime
    retried: Optional[dict[str, Any]] = None
    server: Any = None  # the synthetic world's server process, if this build started one

    def close(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None


def _serve_synthetic(cfg: BuildConfig, region: Region):
    """A synthetic region's world, served on loopback in the providers' wire formats: its server
    started (ServerStart: `.wait()` once the build has prepared) and the config pointing at it."""
    from corebuild.synthetic.server import ServerStart

    start = ServerStart(region.id, cfg.manifests_dir)
    os.environ.setdefault(SYNTHETIC_KEY_ENV, "synthetic-not-a-secret")
    return start, with_synthetic_endpoints(cfg, start.url)


def _retry(storage, region: Region, state: BuildState, retry_failed: str) -> tuple[BuildState, dict[str, Any]]:
    chosen = retry_selection(storage, region.id, read_markers(storage, region.id), parse_retry_selection(retry_failed))
    by_reason: dict[str, int] = {}
    for why in chosen.values():
        by_reason[why] = by_reason.get(why, 0) + 1
    retried = {"selection": retry_failed or TRANSIENT, "points": len(chosen), "by_reason": dict(sorted(by_reason.items()))}
    note_attempt(storage, region.id, retried=retried)
    log.info("retrying %d failure row(s): %s", len(chosen), ", ".join(f"{k} {v}" for k, v in retried["by_reason"].items()) or "none match")
    return dataclasses.replace(state, retry=frozenset(chosen)), retried


def _state(cfg: BuildConfig, region: Region, storage, build_id: str, version: str, dry_run: bool, overwrite: bool) -> BuildState:
    if dry_run:  # the job of a fresh build: _build.json and the markers are neither read nor written
        return BuildState(build_id, cfg.content_hash(), cfg.write.unit_points, 1, frozenset(), False)
    state = start_build(storage, region.id, build_id, cfg.content_hash(), cfg.content_dict(), cfg.write.unit_points, version, overwrite)
    if state.resumed:
        remove_orphans(storage, region.id, read_markers(storage, region.id))
        log.info("resuming build %s (attempt %d): %d unit(s) already done", state.build_id, state.attempt, len(state.done))
    return state


def prepare(cfg: BuildConfig, overwrite: bool = False, retry_failed: Optional[str] = None) -> Prepared:
    """Everything before the pipeline: region, providers, packages, preflight, output state."""
    started = datetime.now(timezone.utc)
    region = load_region(cfg.region_id, cfg.manifests_dir)
    cfg = resolve_roads(resolve_providers(cfg, region), region)
    check_packages(cfg.runner.runner, cfg.output_dir, cfg.fetch.cache_url)  # the gcp extra: one line, not Beam's traceback
    dry_run = dry_run_requested(cfg.runner.extra_args)
    if dry_run:
        check_dry_run(cfg.runner.runner, cfg.runner.extra_args)
    start = server = None
    if region.imagery == "synthetic" and cfg.imagery != "synthetic":
        start, cfg = _serve_synthetic(cfg, region)
    try:
        # While the world's server (if any) starts in its own process, this one checks and prepares.
        models = preflight(cfg, region)
        storage = open_storage(cfg.output_dir)
        version = code_version()
        state = _state(cfg, region, storage, f"{region.id}-{started.strftime('%Y%m%dT%H%M%SZ')}", version, dry_run, overwrite)
        retried = None
        if state.resumed and retry_failed is not None:
            state, retried = _retry(storage, region, state, retry_failed)
        elif retry_failed is not None and not dry_run:
            log.warning("--retry-failed: %s held no build; this is a fresh one", storage.join(region.id))
        if start is not None:
            importlib.import_module("pipelines.build_region")  # Beam's import (~1 s), while the server still starts

            server = start.wait()
            log.info("synthetic imagery for %s served at %s", region.id, start.url)
    except BaseException:  # a failed check stops the world's server too
        if start is not None:
            start.proc.terminate()
            start.proc.wait(10)
        raise
    stamp = RunStamp(build_id=state.build_id, config_hash=state.config_hash, code_version=version)
    return Prepared(cfg, region, storage, state, stamp, models, dry_run, started, retried, server)


def run_pipeline(*args, **kwargs):
    """pipelines.build_region.run, imported once check_packages has passed: importing Beam without
    the gcp extra logs its own warnings, which would bury the one-line error that names the extra."""
    from pipelines.build_region import run

    return run(*args, **kwargs)


def round_config(cfg: BuildConfig, state: BuildState, take: int) -> BuildConfig:
    """The config a round runs with. A local round of fewer work units than workers (a top-up
    round) leaves workers idle, and its workers read `ocr.parallel` views at once on their cores;
    a round that keeps every worker busy reads one at a time: there, parallel reading only
    oversubscribed the cores (demo, README: Evidence). Changes no row."""
    if cfg.ocr.parallel > 1 and not (cfg.runner.local and len(state.units_to_run(take)) < cfg.runner.direct_num_workers):
        return dataclasses.replace(cfg, ocr=dataclasses.replace(cfg.ocr, parallel=1))
    return cfg


def execute(prep: Prepared, state: BuildState, round_no: int = 1, pipeline_factory: Optional[Callable] = None, progress: bool = True) -> float:
    """One round's Beam pipeline, watched by the progress bar; returns its wall seconds."""
    region = prep.region
    wanted = SamplingPlan(region, prep.cfg.sample).wanted
    take = wanted if state.take is None else state.take
    cfg = round_config(prep.cfg, state, take)
    if cfg.ocr.parallel > 1:
        log.info("%s round %d: fewer work units than workers, so each reads %d views at once", region.id, round_no, cfg.ocr.parallel)
    if cfg.runner.local:
        limit_malloc_arenas(cfg.runner.malloc_arenas)
    t0 = time.perf_counter()
    beam_log, quiet = logging.getLogger("apache_beam.runners.common"), _NoTracebackForOurErrors()
    beam_log.addFilter(quiet)
    try:
        with UnitProgress(
            prep.storage, region.id, units_for(take, state.unit_points), state.unit_points, enabled=progress,
            retry_units=state.retry_units, round_no=round_no, target=wanted if cfg.sample.quota_of == "kept" else None,
        ):
            run_pipeline(cfg, region, prep.stamp, prep.storage, state, test_pipeline=pipeline_factory() if pipeline_factory else None)
    finally:
        beam_log.removeFilter(quiet)
    return time.perf_counter() - t0


def execute_rounds(prep: Prepared, pipeline_factory: Optional[Callable] = None, progress: bool = True) -> float:
    """The build's sampling rounds (one under --quota-of sampled; corebuild.running.rounds)."""
    writer = UnitWriter(prep.storage, prep.cfg.write, prep.stamp, prep.state.attempt, frozenset())
    return run_rounds(prep, lambda state, r: execute(prep, state, r, pipeline_factory, progress), writer.shard_writer)


def _manifest(prep: Prepared, sampling: list[dict], markers: list[dict], counts: dict[str, Any], unit_problem: Optional[str], timings: dict) -> dict[str, Any]:
    region, stamp, state = prep.region, prep.stamp, prep.state
    sampled = sum(s["sampled"] for s in sampling)
    build_doc = read_build(prep.storage, region.id)
    shortfall = "; ".join(s["shortfall"] for s in sampling if s.get("shortfall")) or None
    quota = quota_summary(prep.cfg.sample, region.quota, SamplingPlan(region, prep.cfg.sample).wanted, {**counts, "sampled": sampled, "sampling_shortfall": shortfall}, build_doc)
    return {
        "build_id": stamp.build_id,
        "region_id": region.id,
        "region": {"name": region.name, "country": region.country, "continent": region.continent, "manifest": region.source_path},
        "started_utc": build_doc.get("attempts", [{}])[0].get("started_utc", prep.started.isoformat()),
        "attempts": build_doc.get("attempts", []),
        "code_version": stamp.code_version,
        "config_hash": stamp.config_hash,
        "config": prep.cfg.to_dict(),
        "models": prep.models,
        "libraries": library_versions(),
        "sampling": sampling,
        "quota": quota,
        "units": {"unit_points": state.unit_points, "done": len(markers), "done_before_this_attempt": len(state.done), "problem": unit_problem},
        "counts": {"sampled": sampled, **{k: v for k, v in counts.items() if k != "shards"}},
        "retried": prep.retried,
        "consistent": unit_problem is None and sampled == counts["rows"] == counts["kept"] + counts["failed"] and counts["duplicate_sample_ids"] == 0,
        "shards": counts["shards"],
        "timings": timings,
    }


def finalize(prep: Prepared, pipeline_s: float, t0: float) -> BuildResult:
    """manifest.json, counted from the stored shards; an inconsistent build is an error."""
    storage, region = prep.storage, prep.region
    sampling = [json.loads(storage.read(n) or b"{}") for n in storage.list(f"{region.id}/{SAMPLING_DIR}/")]
    sampled = sum(s["sampled"] for s in sampling)
    markers = read_markers(storage, region.id)
    remove_orphans(storage, region.id, markers)
    unit_problem = check_units(markers, sampled, prep.state.unit_points)
    written = {s["path"]: s for m in markers for s in m["shards"]}
    counts = count_shards(storage, [f"{region.id}/shards/{p}" for p in written], written)
    manifest = _manifest(prep, sampling, markers, counts, unit_problem, {"pipeline_s": round(pipeline_s, 2), "total_s": round(time.perf_counter() - t0, 2)})
    write_manifest(storage, f"{region.id}/manifest.json", manifest)
    if not manifest["consistent"]:
        raise BuildError(
            f"build {prep.stamp.build_id} is inconsistent: sampled {sampled}, rows {counts['rows']}, kept {counts['kept']}, "
            f"failed {counts['failed']}, duplicate ids {counts['duplicate_sample_ids']}"
            + (f", {unit_problem}" if unit_problem else "")
            + f" (see {storage.join(region.id + '/manifest.json')})"
        )
    return BuildResult(storage.join(region.id), manifest)


def run_build(
    cfg: BuildConfig, pipeline_factory: Optional[Callable] = None, overwrite: bool = False, progress: bool = True, retry_failed: Optional[str] = None
) -> BuildResult | DryRunResult:
    """Build (or resume) one region: prepare, execute, finalize. A rerun with the same config into
    the same output skips the finished work units; `overwrite` starts afresh instead.
    `retry_failed` ("transient", or a comma list of reasons/kinds) also re-attempts those failure
    rows of finished units, in place. With DataflowRunner and Beam's `--dry_run=True`: the job Beam
    would submit, built and described (a DryRunResult), as a fresh build's; nothing in the output
    is read or written."""
    t0 = time.perf_counter()
    prep = prepare(cfg, overwrite, retry_failed)
    try:
        if prep.dry_run:  # DataflowRunner returns the job it would submit; no shards to wait for, no manifest
            result = run_pipeline(prep.cfg, prep.region, prep.stamp, prep.storage, prep.state, test_pipeline=pipeline_factory() if pipeline_factory else None)
            return DryRunResult(prep.region.id, prep.storage.join(prep.region.id), complete_job(result.job))
        pipeline_s = execute_rounds(prep, pipeline_factory, progress)
    finally:
        prep.close()
    return finalize(prep, pipeline_s, t0)
