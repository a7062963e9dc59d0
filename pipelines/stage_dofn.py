"""The one Beam wrapper for every stage: a work unit, (key, records), in; the same unit out.
Batching, the failure guard, timings and counters are corebuild.stages.stage.run_stage's; this
only opens the stage once per worker and reports counters as Beam metrics. A stage whose
instance is shared by a machine's worker processes (an in-process GPU engine) runs behind
RunInference with a keyed ModelHandler (pipelines.shared_stage): the graph has the same shape
either way."""

from __future__ import annotations

from typing import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.plan import StagePlan
from corebuild.stages.stage import Stage, run_stage

NS = "corebuild"


def count(name: str, n: int) -> None:
    if n:
        Metrics.counter(NS, name).inc(n)


class StageDoFn(beam.DoFn):
    def __init__(self, make: Callable[[], Stage]):
        self.make = make

    def setup(self):
        self.stage = self.make()
        self.stage.setup()

    def process(self, unit):
        key, records = unit
        yield key, run_stage(self.stage, records, count)

    def teardown(self):
        if getattr(self, "stage", None):
            self.stage.teardown()


def apply_stage(units, plan: StagePlan, accelerator: str):
    """units | the stage: a ParDo of StageDoFn, or RunInference for a shared stage."""
    if plan.shared:
        from pipelines.shared_stage import shared_step  # Beam's ML module imports torch when installed: ~2 s and ~0.3 GB a process

        step = shared_step(plan.make)
    else:
        step = beam.ParDo(StageDoFn(plan.make))
    if plan.gpu and accelerator:
        step = step.with_resource_hints(accelerator=accelerator)
    return units | plan.label >> step
