"""A stage shared by a machine's worker processes (an in-process GPU engine, e.g. vllm) as
Beam's RunInference over a keyed ModelHandler. Its own module: Beam's ML package imports torch
when it is installed, which a build without a shared stage should not pay for in every process."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from corebuild.record import Record
from corebuild.stages.stage import Stage, run_stage
from pipelines.stage_dofn import count


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


def shared_step(make: Callable[[], Stage]):
    return RunInference(KeyedModelHandler(StageModelHandler(make)))
