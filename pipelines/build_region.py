"""The build-region pipeline: sample -> locate -> dedupe -> the unit stages the config selects
(capture, OCR, segment, describe, QC) -> write. Every stage is corebuild code over records;
this file only wires it: grouping, reshuffles, the claims of finished units."""

from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from corebuild.config import BuildConfig
from corebuild.regions import Region
from corebuild.shards.schema import RunStamp
from corebuild.shards.units import SAMPLING_DIR, BuildState, marker_name, unit_of
from corebuild.stages.dedupe import Claim, dedupe_key, resolve_duplicates
from pipelines.plan import locate_stage, unit_stages
from pipelines.record_coder import grouping_coder
from corebuild.stages.sample import SamplingPlan, SampleConfig, iter_records
from corebuild.stages.write import UnitWriter
from pipelines.stage_dofn import NS, apply_stage, count

log = logging.getLogger("corebuild.pipeline")
SAMPLING_TAG = "sampling"


class _RegionDoFn(beam.DoFn):
    """Sampling steps: one SamplingPlan per region per worker (its projection and polygon are reused)."""

    def __init__(self, cfg: SampleConfig, regions: dict[str, Region]):
        self.cfg, self.regions = cfg, regions

    def setup(self):
        self._plans: dict[str, SamplingPlan] = {}

    def plan(self, region_id: str) -> SamplingPlan:
        if region_id not in self._plans:
            self._plans[region_id] = SamplingPlan(self.regions[region_id], self.cfg)
        return self._plans[region_id]


class ChunkDoFn(_RegionDoFn):
    """Region -> its sampling chunks: the unit Dataflow spreads over workers."""

    def process(self, region_id: str):
        for chunk in self.plan(region_id).chunks():
            yield region_id, chunk


def lowest(rank: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n least (rank, x, y), in that order (as sorting the triples would give them)."""
    keep = np.lexsort((y, x, rank))[:n]
    return rank[keep], x[keep], y[keep]


class _TakesDoFn(_RegionDoFn):
    def __init__(self, cfg: SampleConfig, regions: dict[str, Region], takes: dict[str, int]):
        super().__init__(cfg, regions)
        self.takes = takes


class SampleChunkDoFn(_TakesDoFn):
    """A chunk's lowest-rank survivors (only those can be among its region's) as (region, (rank,
    x, y)) arrays: one element a chunk, not a Python tuple a candidate (~2.6 candidates a point
    crossed the grouping as such before); independent of other chunks."""

    def process(self, item):
        region_id, chunk = item
        x, y, rank = self.plan(region_id).chunk_survivors(chunk)
        yield region_id, lowest(rank, x, y, self.takes[region_id])


class SelectDoFn(_TakesDoFn):
    """A region's lowest-rank survivors -> numbered records, plus its sampling summary."""

    def process(self, item):
        region_id, groups = item
        chunks = [g for g in groups if len(g)]
        cols = (np.concatenate(col) for col in zip(*chunks)) if chunks else (np.empty(0),) * 3
        rank, x, y = lowest(*cols, self.takes[region_id])
        result = self.plan(region_id).select(x, y, rank, self.takes[region_id])
        summary = {"region_id": region_id, "requested": result.requested, "sampled": len(result.points), "shortfall": result.shortfall_reason}
        yield beam.pvalue.TaggedOutput(SAMPLING_TAG, json.dumps(summary))
        Metrics.counter(NS, "sampled").inc(len(result.points))
        yield from iter_records(result, self.cfg)


def sample_points(p: beam.Pipeline, cfg: SampleConfig, regions: dict[str, Region], takes: dict[str, int]):
    """Sampling split by chunk; the set is the same however chunks land on workers. `takes`:
    how many points of each region's rank order this round samples (a prefix)."""
    ids = p | "Regions" >> beam.Create(sorted(regions))
    survivors = (
        ids
        | "Chunks" >> beam.ParDo(ChunkDoFn(cfg, regions))
        | "SpreadChunks" >> beam.Reshuffle()
        | "SampleChunk" >> beam.ParDo(SampleChunkDoFn(cfg, regions, takes))
    )
    # Every region reaches SelectDoFn, also one with no survivors (its shortfall is reported).
    present = ids | "EveryRegion" >> beam.Map(lambda rid: (rid, []))
    return (
        (survivors, present)
        | "Merge" >> beam.Flatten()
        | "ByRegion" >> beam.GroupByKey()
        | "Select" >> beam.ParDo(SelectDoFn(cfg, regions, takes)).with_outputs(SAMPLING_TAG, main="points")
    )


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


class WriteUnitDoFn(beam.DoFn):
    """The write stage over one unit: its shards, then its completion marker."""

    def __init__(self, writer: UnitWriter):
        self.writer = writer

    def process(self, unit):
        (region_id, index), records = unit
        rewritten, marker = self.writer.write(region_id, index, records, count)
        if rewritten:
            count("units_rewritten", 1)
            log.info("unit u%05d of %s rewritten: %d of its %d rows replaced", index, region_id, len(records), marker["rows"])
        else:
            count("units_done", 1)
            count("shards", len(marker["shards"]))
            log.info("unit u%05d of %s done: %d rows in %d shard(s)", index, region_id, len(records), len(marker["shards"]))


class WriteSamplingDoFn(beam.DoFn):
    """One small JSON per region: requested vs sampled and any shortfall (idempotent on retry)."""

    def __init__(self, storage, prefix: str):
        self.storage, self.prefix = storage, prefix

    def process(self, summary: str):
        region_id = json.loads(summary)["region_id"]
        self.storage.write(f"{self.prefix}/{region_id}.json", summary.encode())


def locate_units(p: beam.Pipeline, points, cfg: BuildConfig, storage, state: BuildState):
    """Pending points located, deduplicated (against finished units' claims too), grouped into
    work units: (region, unit index) -> records. Every grouping carries records (and claims) as
    the registered coder's bytes (pipelines.record_coder: why)."""
    n = state.unit_points
    coder = grouping_coder()
    pack, unpack = coder.encode, coder.decode
    located = (
        points
        # Finished units are skipped, except their points being retried or added (a longer sample).
        | "Pending" >> beam.Filter(lambda r, done, redo: unit_of(r.point_index, n) not in done or r.point_index in redo, state.done, state.retry | state.grow)
        | "PackPoints" >> beam.Map(pack)
        | "Spread" >> beam.Reshuffle(num_buckets=cfg.runner.spread_keys)
        | "UnpackPoints" >> beam.Map(unpack)
        | "BatchLocate" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.runner.batch_size)
        | "AsUnit" >> beam.Map(lambda batch: (None, batch))
    )
    located = apply_stage(located, locate_stage(cfg), "") | "DedupeKey" >> beam.FlatMap(lambda kv: [(dedupe_key(r), pack(r)) for r in kv[1]])
    markers = sorted(marker_name(cfg.region_id, u) for u in state.done)
    claims = (
        p | "DoneUnits" >> beam.Create(markers) | "Claims" >> beam.ParDo(ReadClaimsDoFn(storage, state.retry))
        | "PackClaims" >> beam.MapTuple(lambda key, claim: (key, pack(claim)))
    )
    return (
        (located, claims)
        | "WithClaims" >> beam.Flatten()
        | "SameImagery" >> beam.GroupByKey()
        | "Dedupe" >> beam.FlatMap(lambda kv: resolve_duplicates([unpack(v) for v in kv[1]]))
        | "UnitKey" >> beam.Map(lambda r: ((r.region_id, unit_of(r.point_index, n)), pack(r)))
        | "Units" >> beam.GroupByKey()
        | "UnitList" >> beam.MapTuple(lambda key, recs: (key, [unpack(v) for v in recs]))
    )


def build_pipeline(p: beam.Pipeline, cfg: BuildConfig, region: Region, stamp: RunStamp, storage, state: BuildState) -> None:
    # The Beam options after `--` are the runner's (credentials may be among them), not the
    # workers': keep them out of every pickled DoFn.
    cfg = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, extra_args=()))
    take = SamplingPlan(region, cfg.sample).wanted if state.take is None else state.take
    sampled = sample_points(p, cfg.sample, {region.id: region}, {region.id: take})
    sampled[SAMPLING_TAG] | "WriteSampling" >> beam.ParDo(WriteSamplingDoFn(storage, f"{region.id}/{SAMPLING_DIR}"))
    units = locate_units(p, sampled.points, cfg, storage, state)
    if cfg.runner.stop_after == "grouping":  # bench only: what the groupings hold, no unit stages
        units | "Grouped" >> beam.Map(lambda unit: count("units_grouped", 1))
        return
    for plan in unit_stages(cfg, region):
        units = apply_stage(units, plan, cfg.runner.gpu_accelerator)
    units | "Write" >> beam.ParDo(WriteUnitDoFn(UnitWriter(storage, cfg.write, stamp, state.attempt, state.done)))


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
