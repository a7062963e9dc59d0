"""The one stage interface. A stage is set up once per worker, processes batches of records and
is torn down; `run_stage` is the one place that batches a work unit, turns an exception into
failure rows (redacted: an exception may quote a URL or a body), times each record and counts.
Beam's generic DoFn (pipelines/stage_dofn.py) only calls it, so a stage is tested without Beam."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable, Protocol, Sequence

from corebuild.record import Record
from corebuild.redact import redact_text

log = logging.getLogger("corebuild.stages")
Count = Callable[[str, int], None]


class Stage(Protocol):
    name: str  # in timings (stage_seconds) and counters
    failure_stage: str  # an unexpected exception fails the batch as "<failure_stage>.internal_error"
    batch_size: int  # records per process() call; 1 where one record's fault must fail it alone

    def setup(self) -> None: ...

    def process(self, batch: list[Record]) -> list[Record]: ...

    def teardown(self) -> None: ...


class StageBase:
    """Defaults for a stage without resources to open or close."""

    name = failure_stage = "stage"
    batch_size = 1  # a stage batched by the runner's batch_size takes it from its config slice

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass


def fail_batch(batch: Sequence[Record], stage: str, exc: BaseException) -> list[Record]:
    """A bug in one batch must not take the build down: its records become failure rows."""
    why = redact_text(traceback.format_exception_only(type(exc), exc)[-1].strip())
    log.error("%s failed on a batch of %d: %s", stage, len(batch), why)
    return [r.fail(f"{stage}.internal_error", why[:500]) for r in batch]


def _no_count(name: str, n: int) -> None:
    pass


def run_stage(stage: Stage, records: Sequence[Record], count: Count = _no_count) -> list[Record]:
    """A unit's records through one stage, batch by batch: records that were failed before it
    pass through untouched; the others get the batch's seconds (shared) in `timings`."""
    out: list[Record] = []
    size = max(1, stage.batch_size)
    for i in range(0, len(records), size):
        batch = list(records[i : i + size])
        t0 = time.perf_counter()
        try:
            done = stage.process(batch)
        except Exception as exc:
            done = fail_batch(batch, stage.failure_stage, exc)
        share = (time.perf_counter() - t0) / len(batch)
        out += [r if before.failed else r.timed(stage.name, share) for before, r in zip(batch, done)]
    failed = sum(r.failed for r in out)
    count(f"{stage.name}.ok", len(out) - failed)
    count(f"{stage.name}.failed", failed)
    return out
