"""The plan: which stages a config selects, in order, each built from its own slice of the config."""

from __future__ import annotations

import dataclasses

import pytest

from corebuild.assets import MANIFESTS
from corebuild.config import BuildConfig
from corebuild.regions import load_region
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.segment import SegmentConfig
from pipelines.plan import locate_stage, unit_stages


@pytest.fixture(scope="module")
def demo():
    return load_region("demo", MANIFESTS)


def test_the_plan_is_the_selected_stages_each_with_its_own_slice(demo):
    from corebuild.stages.ocr.coverage import region_plan

    cfg = BuildConfig(region_id="demo")
    plans = unit_stages(cfg, demo)
    assert [p.label for p in plans] == ["Capture", "OCR", "Describe", "QC"]
    with_sam = unit_stages(dataclasses.replace(cfg, segment=SegmentConfig(backend="sam")), demo)
    assert [p.label for p in with_sam] == ["Capture", "OCR", "Segment", "Describe", "QC"] and with_sam[2].gpu
    for plan in [locate_stage(cfg), *with_sam]:
        for arg in plan.make.args:  # never the whole config, never every region
            assert not isinstance(arg, BuildConfig) and not (isinstance(arg, dict) and "demo" in arg and hasattr(arg["demo"], "polygon"))
    stage = plans[1].make()
    assert stage.cfg is cfg.ocr and stage.plan == region_plan(cfg.ocr, demo)  # the region's readers, not every region's


def test_a_shared_engine_runs_behind_run_inference_in_the_same_place(demo):
    cfg = BuildConfig(region_id="demo", describe=DescribeConfig(backend="vllm", model="m", prompt_id="cvg-progressive-v1"))
    plans = unit_stages(cfg, demo)
    describe = next(p for p in plans if p.label == "Describe")
    assert describe.shared and describe.gpu and [p.label for p in plans] == ["Capture", "OCR", "Describe", "QC"]
    assert not any(p.shared for p in unit_stages(BuildConfig(region_id="demo"), demo))


def test_the_architecture_page_names_every_stage_and_module():
    from tests.conftest import ROOT

    page = (ROOT / "docs" / "architecture.md").read_text()
    stages = ROOT / "corebuild" / "stages"
    for path in sorted(stages.rglob("*.py")):
        if path.name != "__init__.py":
            assert path.name in page, f"docs/architecture.md does not name {path.relative_to(ROOT)}"
    for name in ("sample", "locate", "dedupe", "capture", "ocr", "segment", "describe", "qc", "write"):
        assert f"| {name} | `stages/" in page, name


def test_a_build_without_a_shared_stage_never_imports_beams_ml_package(demo, tmp_path):
    """Beam's ML package (RunInference) imports torch when it is installed: seconds and ~0.3 GB in
    the launcher and every worker. Only a shared stage (vllm) brings it in."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys, apache_beam as beam\n"
        "from corebuild.config import BuildConfig\n"
        "from corebuild.assets import MANIFESTS\n"
        "from corebuild.regions import load_region\n"
        "from pipelines.plan import unit_stages\n"
        "from pipelines.stage_dofn import apply_stage\n"
        "region = load_region('demo', MANIFESTS)\n"
        "with beam.Pipeline() as p:\n"
        "    units = p | beam.Create([])\n"
        "    for plan in unit_stages(BuildConfig(region_id='demo'), region):\n"
        "        units = apply_stage(units, plan, '')\n"
        "    print('ml' if 'apache_beam.ml.inference.base' in sys.modules else 'no ml')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "no ml", out.stderr[-2000:]
