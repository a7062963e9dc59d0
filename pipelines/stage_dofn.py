"""The one Beam wrapper for every stage: a work unit, (key, records), in; the same unit out.
Batching, the failure guard, timings and counters are corebuild.stages.stage.run_stage's; this
only opens the stage once per worker and reports counters as Beam metrics. A stage whose
instance is shared by a machine's worker processes (an in-process GPU engine) runs behind
RunInference with a keyed ModelHandler: the graph has the same shape either way."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from corebuild.record import Record
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


class _Remote:
    """The stage's name and batch size from a local (not set up) instance; process() on the
    shared one, wherever Beam keeps it (a proxy exposes methods, not attributes)."""

    def __init__(self, local: Stage, shared: Any):
        self.name, self.failure_stage, self.batch_size = local.name, local.failure_stage, local.batch_size
        self.process = shared.process


class StageModelHandler(ModelHandler):
    """A stage as Beam's model: loaded (set up) once per machine; each unit is one example."""

    def __init__(self, make: Callable[[], Stage]):
        super().__init__(min_batch_size=1, max_batch_size=1)  # one unit a call: the stage batches inside it
        self.make = make

    def load_model(self) -> Stage:
        stage = self.make()
        stage.setup()
        return stage

    def share_model_across_processes(self) -> bool:
        return True  # one GPU engine per VM, not one per SDK process

    def run_inference(self, batch: Sequence[list[Record]], model: Any, inference_args: Optional[dict] = None) -> Iterable[list[Record]]:
        stage = _Remote(self.make(), model)
        return [run_stage(stage, records, count) for records in batch]


def apply_stage(units, plan: StagePlan, accelerator: str):
    """units | the stage: a ParDo of StageDoFn, or RunInference for a shared stage."""
    step = RunInference(KeyedModelHandler(StageModelHandler(plan.make))) if plan.shared else beam.ParDo(StageDoFn(plan.make))
    if plan.gpu and accelerator:
        step = step.with_resource_hints(accelerator=accelerator)
    return units | plan.label >> step
