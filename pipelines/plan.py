"""Which stages a build runs, in order, as its config selects them. Each stage is built from its
own slice of the config (never the whole BuildConfig), by a picklable factory that the pipeline
sends to the workers: a stage opens its resources there, once (Stage.setup)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from corebuild.config import BuildConfig
from corebuild.regions import Region
from corebuild.stages.capture import CaptureStage
from corebuild.stages.describe import DESCRIBERS, DescribeStage
from corebuild.stages.locate import LocateStage
from corebuild.stages.ocr import OcrStage
from corebuild.stages.ocr.coverage import region_plan
from corebuild.stages.qc import QcStage
from corebuild.stages.segment import SegmentStage
from corebuild.stages.stage import Stage


@dataclass(frozen=True)
class StagePlan:
    label: str  # the pipeline step's name
    make: Callable[[], Stage]
    gpu: bool = False  # carries the runner's accelerator hint (Dataflow right-fits GPU workers)
    shared: bool = False  # one instance per machine, shared by its worker processes (RunInference)


def locate_stage(cfg: BuildConfig) -> StagePlan:
    """Before dedupe: over batches of points, not work units."""
    return StagePlan("Locate", partial(LocateStage, cfg.fetch, cfg.runner.batch_size))


def unit_stages(cfg: BuildConfig, region: Region) -> list[StagePlan]:
    """After dedupe, each over a whole work unit: capture, OCR, segment (unless off), describe, QC."""
    batch = cfg.runner.batch_size
    d = cfg.describe
    context = {region.id: {"name": region.name, "country": region.country}}
    engine = DESCRIBERS.backend(d.backend).shared  # an in-process GPU engine (vllm)
    plans = [
        StagePlan("Capture", partial(CaptureStage, cfg.fetch, batch)),
        StagePlan("OCR", partial(OcrStage, cfg.ocr, region_plan(cfg.ocr, region))),
    ]
    if cfg.segment.backend != "off":
        plans.append(StagePlan("Segment", partial(SegmentStage, cfg.segment), gpu=True))
    plans.append(StagePlan("Describe", partial(DescribeStage, d, context, batch), gpu=engine, shared=engine))
    plans.append(StagePlan("QC", partial(QcStage, d.grounding, d.prompts_dir, d.prompt_id, batch)))
    return plans
