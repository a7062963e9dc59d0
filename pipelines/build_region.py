"""The build-region pipeline: sample -> fetch -> evidence -> describe -> write."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import traceback
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from corebuild.config import BuildConfig
from corebuild.describe import load_describer
from corebuild.evidence import ocr_record
from corebuild.fetch import Fetcher, dedupe_key
from corebuild.ocr import load_ocr
from corebuild.prompts import load_prompt
from corebuild.qc import check_grounding, check_injection
from corebuild.segment import load_labeler, load_segmenter, segment_record
from corebuild.record import Record
from corebuild.redact import redact_text
from corebuild.regions import Region
from corebuild.resume import BuildState, Claim, marker_name, merge_unit, resolve_duplicates, unit_of, write_unit
from corebuild.sample import SamplingPlan, records_of
from corebuild.write import RunStamp, ShardWriter, record_to_row

log = logging.getLogger("corebuild.pipeline")
NS = "corebuild"
SAMPLING_TAG = "sampling"


def _fail_batch(batch: Sequence[Record], stage: str, exc: BaseException) -> list[Record]:
    """A bug in one batch must not take the build down: its records become failure rows."""
    tb = redact_text(traceback.format_exception_only(type(exc), exc)[-1].strip())  # the exception may quote a URL or a body
    log.error("%s failed on a batch of %d: %s", stage, len(batch), tb)
    return [r.fail(f"{stage}.internal_error", tb[:500]) for r in batch]


class _Plans:
    """One SamplingPlan per region per worker (its projection and polygon are reused)."""

    def __init__(self, cfg: BuildConfig, regions: dict[str, Region]):
        self.cfg, self.regions, self.plans = cfg, regions, {}

    def __getitem__(self, region_id: str) -> SamplingPlan:
        if region_id not in self.plans:
            self.plans[region_id] = SamplingPlan(self.regions[region_id], self.cfg.sample)
        return self.plans[region_id]


class ChunkDoFn(beam.DoFn):
    """Region -> its sampling chunks: the unit Dataflow spreads over workers."""

    def __init__(self, cfg: BuildConfig, regions: dict[str, Region]):
        self.cfg, self.regions = cfg, regions

    def setup(self):
        self.plans = _Plans(self.cfg, self.regions)

    def process(self, region_id: str):
        for chunk in self.plans[region_id].chunks():
            yield region_id, chunk


class SampleChunkDoFn(beam.DoFn):
    """A chunk's surviving candidates as (region, (rank, x, y)); independent of other chunks."""

    def __init__(self, cfg: BuildConfig, regions: dict[str, Region]):
        self.cfg, self.regions = cfg, regions

    def setup(self):
        self.plans = _Plans(self.cfg, self.regions)

    def process(self, item):
        region_id, chunk = item
        x, y, rank = self.plans[region_id].chunk_survivors(chunk)
        for r, a, b in zip(rank.tolist(), x.tolist(), y.tolist()):
            yield region_id, (r, a, b)


class SelectDoFn(beam.DoFn):
    """A region's lowest-rank survivors -> numbered records, plus its sampling summary."""

    def __init__(self, cfg: BuildConfig, regions: dict[str, Region]):
        self.cfg, self.regions = cfg, regions

    def setup(self):
        self.plans = _Plans(self.cfg, self.regions)

    def process(self, item):
        region_id, groups = item
        best = sorted(v for group in groups for v in group)
        rank, x, y = (np.array(col, dtype=float) for col in zip(*best)) if best else (np.empty(0),) * 3
        result = self.plans[region_id].select(x, y, rank)
        summary = {"region_id": region_id, "requested": result.requested, "sampled": len(result.points), "shortfall": result.shortfall_reason}
        yield beam.pvalue.TaggedOutput(SAMPLING_TAG, json.dumps(summary))
        Metrics.counter(NS, "sampled").inc(len(result.points))
        yield from records_of(result, self.cfg.sample)


def sample_points(p: beam.Pipeline, cfg: BuildConfig, regions: dict[str, Region]):
    """Sampling split by chunk; the set is the same however chunks land on workers."""
    n = max(SamplingPlan(r, cfg.sample).wanted for r in regions.values())
    ids = p | "Regions" >> beam.Create(sorted(regions))
    survivors = (
        ids
        | "Chunks" >> beam.ParDo(ChunkDoFn(cfg, regions))
        | "SpreadChunks" >> beam.Reshuffle()
        | "SampleChunk" >> beam.ParDo(SampleChunkDoFn(cfg, regions))
        | "LowestRanks" >> beam.combiners.Top.SmallestPerKey(n)
    )
    # Every region reaches SelectDoFn, also one with no survivors (its shortfall is reported).
    present = ids | "EveryRegion" >> beam.Map(lambda rid: (rid, []))
    return (
        (survivors, present)
        | "Merge" >> beam.Flatten()
        | "ByRegion" >> beam.GroupByKey()
        | "Select" >> beam.ParDo(SelectDoFn(cfg, regions)).with_outputs(SAMPLING_TAG, main="points")
    )


def _pieces(records: Sequence[Record], size: int):
    for i in range(0, len(records), size):
        yield list(records[i : i + size])


class _FetchDoFn(beam.DoFn):
    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self):
        self.fetcher = Fetcher(self.cfg.fetch)  # session, clients, rate limits: once per worker

    def teardown(self):
        if getattr(self, "fetcher", None):
            self.fetcher.close()


class LocateDoFn(_FetchDoFn):
    """Cheap first call per point (Street View metadata, a Mapillary search)."""

    def process(self, batch: list[Record]):
        try:
            out = self.fetcher.locate(batch)
        except Exception as exc:
            out = _fail_batch(batch, "street", exc)
        for rec in out:
            yield dedupe_key(rec), rec


class ReadClaimsDoFn(beam.DoFn):
    """Finished units' claims on panoramas, so pending points dedupe against them (points being
    retried claim nothing: they are located again)."""

    def __init__(self, storage, retry: frozenset[int]):
        self.storage, self.retry = storage, retry

    def process(self, name: str):
        marker = json.loads(self.storage.read(name) or b"{}")
        for item in marker.get("claims", []):
            claim = Claim.from_marker(marker["region_id"], item)
            if claim.point_index not in self.retry:
                yield (marker["region_id"], claim.key), claim


# Stages after dedupe take a whole work unit, (unit key, records), and hand it on: a unit stays
# together to its shards and completion marker. They work through it in batches of batch_size.


class CaptureDoFn(_FetchDoFn):
    """Street views and the aerial crop for each located, unique point."""

    def process(self, unit):
        key, records = unit
        out = []
        for batch in _pieces(records, self.cfg.runner.batch_size):
            try:
                out += self.fetcher.capture(batch)
            except Exception as exc:
                out += _fail_batch(batch, "fetch", exc)
        Metrics.counter(NS, "fetched").inc(sum(not r.failed for r in out))
        yield key, out


class OcrDoFn(beam.DoFn):
    def __init__(self, cfg: BuildConfig, ocr_groups: list[list[str]]):
        self.cfg, self.ocr_groups = cfg, ocr_groups

    def setup(self):
        self.engine = load_ocr(self.cfg.ocr, self.ocr_groups)  # once per worker: the ONNX/torch sessions are the cost

    def process(self, unit):
        key, records = unit
        out = []
        for rec in records:
            try:
                out.append(ocr_record(rec, self.engine, self.cfg.ocr))
            except Exception as exc:
                out.extend(_fail_batch([rec], "evidence", exc))
        yield key, out


class SegmentDoFn(beam.DoFn):
    """Open-world masks and their labels: a GPU stage of its own, so Dataflow can right-fit it."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self):
        self.segmenter = load_segmenter(self.cfg.segment)
        self.labeler = load_labeler(self.cfg.segment) if self.segmenter else None

    def process(self, unit):
        key, records = unit
        out = []
        for rec in records:
            try:
                out.append(segment_record(rec, self.segmenter, self.labeler, self.cfg.segment))
            except Exception as exc:
                out.extend(_fail_batch([rec], "evidence", exc))
        yield key, out


@functools.lru_cache(maxsize=8)
def _min_words(prompts_dir: str, prompt_id: str) -> int:
    return int(load_prompt(prompts_dir, prompt_id).body.get("min_words", 1))


def finish_record(rec: Record, cfg: BuildConfig) -> Record:
    """After describing: the prompt-injection and grounding checks, then kept or failed, counted."""
    rec = check_injection(rec)  # always on: obeying a sign's instructions is never a valid description
    if cfg.describe.grounding != "off" and rec.description is not None and not rec.failed:
        # `remove` must leave a description the prompt's own minimum would have accepted.
        rec = check_grounding(rec, cfg.describe.grounding, min_words=_min_words(cfg.describe.prompts_dir, cfg.describe.prompt_id))
    rec = rec.finish()
    Metrics.counter(NS, rec.status).inc()
    if rec.failed:
        Metrics.counter(NS, f"failed.{rec.failure_reason}").inc()
    return rec


class DescribeDoFn(beam.DoFn):
    def __init__(self, cfg: BuildConfig, context: dict):
        self.cfg, self.context = cfg, context

    def setup(self):
        self.describer = load_describer(self.cfg.describe)

    def process(self, unit):
        key, records = unit
        out = []
        for batch in _pieces(records, self.cfg.runner.batch_size):
            try:
                described = self.describer.describe(batch, self.context)
            except Exception as exc:
                described = _fail_batch(batch, "describe", exc)
            out += [finish_record(r, self.cfg) for r in described]
        yield key, out

    def teardown(self):
        close = getattr(getattr(self, "describer", None), "close", None)
        if close:
            close()


class WriteUnitDoFn(beam.DoFn):
    """A unit's rows -> its shards (stable names), then its completion marker. A unit finished
    before this attempt gets only the rows that changed (retried points, dedupe outcomes) and is
    rewritten as a whole (merge_unit)."""

    def __init__(self, storage, cfg: BuildConfig, stamp: RunStamp, attempt: int, done: frozenset[int]):
        self.storage, self.cfg, self.stamp, self.attempt, self.done = storage, cfg, stamp, attempt, done

    def _writer(self, storage, prefix: str) -> ShardWriter:
        w = self.cfg.write
        return ShardWriter(storage, prefix, w.shard_bytes, w.row_group_rows, w.codec, stable_names=True)

    def process(self, unit):
        (region_id, index), records = unit
        records = sorted(records, key=lambda r: r.point_index)  # same bytes whichever attempt writes it
        if index in self.done:
            marker = merge_unit(self.storage, region_id, index, records, lambda r: record_to_row(r, self.stamp), self._writer, self.attempt)
            Metrics.counter(NS, "units_rewritten").inc()
            log.info("unit u%05d of %s rewritten: %d of its %d rows replaced", index, region_id, len(records), marker["rows"])
            return
        rows = [record_to_row(r, self.stamp) for r in records]
        marker = write_unit(self.storage, region_id, index, records, rows, self._writer, self.attempt)
        Metrics.counter(NS, "units_done").inc()
        Metrics.counter(NS, "shards").inc(len(marker["shards"]))
        log.info("unit u%05d of %s done: %d rows in %d shard(s)", index, region_id, len(rows), len(marker["shards"]))


class WriteSamplingDoFn(beam.DoFn):
    """One small JSON per region: requested vs sampled and any shortfall (idempotent on retry)."""

    def __init__(self, storage, prefix: str):
        self.storage, self.prefix = storage, prefix

    def process(self, summary: str):
        region_id = json.loads(summary)["region_id"]
        self.storage.write(f"{self.prefix}/{region_id}.json", summary.encode())


def build_pipeline(p: beam.Pipeline, cfg: BuildConfig, region: Region, stamp: RunStamp, storage, state: BuildState) -> None:
    # The Beam options after `--` are the runner's (credentials may be among them), not the
    # workers': keep them out of every pickled DoFn.
    cfg = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, extra_args=()))
    n = state.unit_points
    sampled = sample_points(p, cfg, {region.id: region})
    sampled[SAMPLING_TAG] | "WriteSampling" >> beam.ParDo(WriteSamplingDoFn(storage, f"{region.id}/_sampling"))
    context = {region.id: {"name": region.name, "country": region.country}}
    located = (
        sampled.points
        # Finished units are skipped, except their points being retried.
        | "Pending" >> beam.Filter(lambda r, done, retry: unit_of(r.point_index, n) not in done or r.point_index in retry, state.done, state.retry)
        | "Spread" >> beam.Reshuffle()
        | "BatchLocate" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.runner.batch_size)
        | "Locate" >> beam.ParDo(LocateDoFn(cfg))
    )
    markers = sorted(marker_name(region.id, u) for u in state.done)
    claims = p | "DoneUnits" >> beam.Create(markers) | "Claims" >> beam.ParDo(ReadClaimsDoFn(storage, state.retry))
    units = (
        (located, claims)
        | "WithClaims" >> beam.Flatten()
        | "SameImagery" >> beam.GroupByKey()
        | "Dedupe" >> beam.FlatMap(lambda kv: resolve_duplicates(list(kv[1])))
        | "UnitKey" >> beam.Map(lambda r: ((r.region_id, unit_of(r.point_index, n)), r))
        | "Units" >> beam.GroupByKey()
        | "UnitList" >> beam.MapTuple(lambda key, recs: (key, list(recs)))
    )
    gpu = {"accelerator": cfg.runner.gpu_accelerator} if cfg.runner.gpu_accelerator else {}
    records = (
        units
        | "Capture" >> beam.ParDo(CaptureDoFn(cfg))
        | "OCR" >> beam.ParDo(OcrDoFn(cfg, [list(g) for g in region.ocr_languages]))
    )
    if cfg.segment.backend != "off":
        records = records | "Segment" >> beam.ParDo(SegmentDoFn(cfg)).with_resource_hints(**gpu)
    if cfg.describe.backend == "vllm":  # in-process GPU engine: Beam's RunInference batches it
        from apache_beam.ml.inference.base import RunInference

        from corebuild.vllm_describe import VllmDescribeHandler

        records = (
            records
            | "Unbatch" >> beam.FlatMap(lambda unit: unit[1])
            | "Describe" >> RunInference(VllmDescribeHandler(cfg.describe, context)).with_resource_hints(**gpu)
            | "Described" >> beam.Map(lambda result: finish_record(result.inference, cfg))
            | "UnitKeyAgain" >> beam.Map(lambda r: ((r.region_id, unit_of(r.point_index, n)), r))
            | "UnitsAgain" >> beam.GroupByKey()
        )
    else:
        records = records | "Describe" >> beam.ParDo(DescribeDoFn(cfg, context))
    records | "Write" >> beam.ParDo(WriteUnitDoFn(storage, cfg, stamp, state.attempt, state.done))


def run(cfg: BuildConfig, region: Region, stamp: RunStamp, storage, state: BuildState, test_pipeline: beam.Pipeline | None = None):
    """Build the pipeline, run it and wait; returns Beam's PipelineResult (with DataflowRunner's
    `--dry_run=True`, `result.job` is the job it built and did not submit, and there is no wait)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from corebuild.errors import ConfigError, one_line

    try:
        p = test_pipeline or beam.Pipeline(options=PipelineOptions(cfg.runner.pipeline_args()))
    except ValueError as exc:  # Beam's option validation (a bad bucket name, a missing --project): one line
        if "validations errors" not in str(exc):
            raise
        raise ConfigError(one_line("Beam options after --: " + " ".join(str(exc).split()))) from None
    build_pipeline(p, cfg, region, stamp, storage, state)
    result = p.run()
    result.wait_until_finish()
    return result
