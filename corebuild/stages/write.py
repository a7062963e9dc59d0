"""The write stage: a work unit's records, finished (kept unless failed) and counted, become rows
of the shard schema, stored as the unit's shards (stable names) and then its completion marker.
A unit finished before this attempt gets only the rows that changed (retried points, dedupe
outcomes) and is rewritten as a whole, as its next generation (resume.merge_unit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from corebuild.options import option
from corebuild.record import Record
from corebuild.shards.units import merge_unit, write_unit
from corebuild.stages.dedupe import claims_of
from corebuild.shards.schema import RunStamp, record_to_row
from corebuild.shards.writer import ShardWriter
from corebuild.stages.stage import Count, _no_count


@dataclass(frozen=True)
class WriteConfig:
    codec: str = "zstd"
    row_group_rows: int = 32  # rows carry ~0.3 MB of images: ~10 MB row groups
    shard_bytes: int = option(256 * 1024 * 1024, flag="--shard-mb", scale=1024 * 1024, help="roll over to a new shard past this size")
    # Points per work unit: the grain of resume and of parallelism, and the most rows one shard
    # holds (~0.1-0.3 MB a row: 10-30 MB shards; raise it for fewer, bigger files).
    unit_points: int = option(100, flag="--unit-points", help="points per work unit: the grain of resume and the most rows per shard")


class UnitWriter:
    def __init__(self, storage, cfg: WriteConfig, stamp: RunStamp, attempt: int, done: frozenset[int]):
        self.storage, self.cfg, self.stamp, self.attempt, self.done = storage, cfg, stamp, attempt, done

    def shard_writer(self, storage, prefix: str) -> ShardWriter:
        w = self.cfg
        return ShardWriter(storage, prefix, w.shard_bytes, w.row_group_rows, w.codec, stable_names=True)

    def _row(self, rec: Record) -> dict[str, Any]:
        return record_to_row(rec, self.stamp)

    def write(self, region_id: str, unit: int, records: Sequence[Record], count: Count = _no_count) -> tuple[bool, dict[str, Any]]:
        """(whether the unit was rewritten, its marker)."""
        records = sorted((r.finish() for r in records), key=lambda r: r.point_index)  # same bytes whichever attempt writes it
        for rec in records:
            count(rec.status, 1)
            if rec.failed:
                count(f"failed.{rec.failure_reason}", 1)
        if unit in self.done:
            return True, merge_unit(self.storage, region_id, unit, records, self._row, self.shard_writer, self.attempt, claims_of(records))
        return False, write_unit(self.storage, region_id, unit, [self._row(r) for r in records], self.shard_writer, self.attempt, claims_of(records))
