"""The build-region pipeline: sample -> locate -> dedupe -> the unit stages the config selects
(capture, OCR, segment, describe, QC) -> write. Every stage is corebuild code over records;
this file only wires it: grouping, reshuffles, the claims of finished units."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections import defaultdict

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from corebuild.config import BuildConfig
from corebuild.record import Record, make_sample_id
from corebuild.regions import Region
from corebuild.shards.schema import RunStamp
from corebuild.shards.units import SAMPLING_DIR, BuildState, marker_name, unit_of
from corebuild.stages.dedupe import Claim, Duplicate, apply_verdicts, dedupe_bucket, dedupe_key, joins_dedupe, settle_bucket
from pipelines.plan import locate_stage, unit_stages
from pipelines.record_coder import grouping_packer
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
                yield marker["region_id"], claim


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


class PackUnitsDoFn(beam.DoFn):
    """(unit key, item) -> (unit key, packed tuple of items): what crosses a grouping is one
    element per unit (or per part of one), not one per point -- the DirectRunner's groupings
    cost per element. A bundle keeps at most `hold` items before sending what it has, so a
    unit may leave in several parts; the Units grouping joins them again."""

    def __init__(self, pack, hold: int = 10_000):
        self.pack, self.hold = pack, hold

    def start_bundle(self):
        self._parts, self._held = defaultdict(list), 0

    def _flush(self):
        parts, self._parts, self._held = self._parts, defaultdict(list), 0
        return [(key, self.pack(tuple(items))) for key, items in parts.items()]

    def process(self, kv):
        key, item = kv
        self._parts[key].append(item)
        self._held += 1
        if self._held >= self.hold:
            yield from self._flush()

    def finish_bundle(self):
        for part in self._flush():
            yield GlobalWindows.windowed_value(part)


def unit_with_verdicts(key, items, unpack) -> tuple[tuple[str, int], list[Record]]:
    """A unit's packed parts -- its located records, dedupe's verdicts on them, the finished
    points dedupe brought back -> its records, in point order."""
    records, verdicts = [], []
    for item in itertools.chain.from_iterable(map(unpack, items)):
        (verdicts if isinstance(item, Duplicate) else records).append(item)
    return key, sorted(apply_verdicts(records, verdicts), key=lambda r: r.point_index)


def locate_units(p: beam.Pipeline, points, cfg: BuildConfig, storage, state: BuildState):
    """Pending points located, deduplicated (against finished units' claims too), grouped into
    work units: (region, unit index) -> records. Records travel by unit, packed with the
    registered coder and deflated (pipelines.record_coder: why): one element a unit at the Spread and the
    Units groupings. Dedupe groups only keys -- (panorama, point index), packed too, by bucket of
    panoramas (RunnerConfig.dedupe_buckets), not one element a point -- and sends its verdicts (a
    Duplicate; a finished point's row to rewrite) to the units they concern."""
    n = state.unit_points
    pack, unpack = grouping_packer()
    seed = cfg.sample.seed
    pending = (
        points
        # Finished units are skipped, except their points being retried or added (a longer sample).
        | "Pending" >> beam.Filter(lambda r, done, redo: unit_of(r.point_index, n) not in done or r.point_index in redo, state.done, state.retry | state.grow)
        | "UnitKey" >> beam.Map(lambda r: ((r.region_id, unit_of(r.point_index, n)), r))
        | "PackPoints" >> beam.ParDo(PackUnitsDoFn(pack))
        | "Spread" >> beam.Reshuffle(num_buckets=cfg.runner.spread_keys)
        | "Unpack" >> beam.MapTuple(lambda key, packed: (key, list(unpack(packed))))
    )
    located = apply_stage(pending, locate_stage(cfg), "")
    buckets = cfg.runner.dedupe_buckets

    def bucket(region_id: str, key: str) -> tuple[str, int]:
        return region_id, dedupe_bucket(key, buckets)

    def keys_of(unit):
        for r in unit[1]:
            if joins_dedupe(r):
                region_id, key = dedupe_key(r)
                yield bucket(region_id, key), (key, r.point_index)

    keys = located | "DedupeKeys" >> beam.FlatMap(keys_of) | "PackKeys" >> beam.ParDo(PackUnitsDoFn(pack))
    markers = sorted(marker_name(cfg.region_id, u) for u in state.done)
    claims = (
        p | "DoneUnits" >> beam.Create(markers) | "Claims" >> beam.ParDo(ReadClaimsDoFn(storage, state.retry))
        | "ClaimBucket" >> beam.MapTuple(lambda region_id, claim: (bucket(region_id, claim.key), claim))
        | "PackClaims" >> beam.ParDo(PackUnitsDoFn(pack))
    )

    def verdicts(group):
        (region_id, _), parts = group
        changes = settle_bucket(itertools.chain.from_iterable(map(unpack, parts)), lambda i: make_sample_id(region_id, seed, i))
        return [((region_id, unit_of(v.point_index, n)), v) for v in changes]

    settled = (
        (keys, claims)
        | "WithClaims" >> beam.Flatten()
        | "SameImagery" >> beam.GroupByKey()
        | "Dedupe" >> beam.FlatMap(verdicts)
        | "PackVerdicts" >> beam.ParDo(PackUnitsDoFn(pack))
    )
    return (
        (located | "PackUnits" >> beam.MapTuple(lambda key, recs: (key, pack(tuple(recs)))), settled)
        | "WithVerdicts" >> beam.Flatten()
        | "Units" >> beam.GroupByKey()
        | "UnitList" >> beam.MapTuple(lambda key, items: unit_with_verdicts(key, items, unpack))
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
