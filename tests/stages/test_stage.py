"""The one stage interface: run_stage (batching, the redacting failure guard, timings, counters),
and the lazy registries."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

from corebuild.errors import ConfigError, ModelUnavailableError
from corebuild.record import Record
from corebuild.stages.describe import DESCRIBERS
from corebuild.stages.fetch import AERIAL_PROVIDERS, STREET_PROVIDERS
from corebuild.stages.ocr import OCR_BACKENDS
from corebuild.stages.registry import Backend, Registry
from corebuild.stages.segment import LABELERS, SEGMENTERS
from corebuild.stages.stage import StageBase, run_stage


def _records(n: int) -> list[Record]:
    return [Record(f"r-s0-{i:07d}", "r", 0, i, 0.0, 0.0) for i in range(n)]


class Upper(StageBase):
    name, failure_stage, batch_size = "upper", "evidence", 3

    def __init__(self):
        self.batches: list[int] = []

    def process(self, batch):
        self.batches.append(len(batch))
        if any(r.point_index == 4 for r in batch):
            raise RuntimeError("boom at https://tiles.example/x?key=SECRET123")
        return [r.with_(ocr_backend="seen") for r in batch]


def test_run_stage_batches_guards_times_and_counts():
    stage, counts = Upper(), {}
    records = _records(8)
    records[1] = records[1].fail("street.zero_results", "none")
    out = run_stage(stage, records, lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    assert stage.batches == [3, 3, 2]  # batch_size
    assert [r.sample_id for r in out] == [r.sample_id for r in records]  # order kept
    bad = out[3:6]  # the batch with point 4 fails as a whole, redacted
    assert all(r.failure_reason == "evidence.internal_error" and "SECRET123" not in r.error and "boom" in r.error for r in bad)
    assert out[1] is records[1] or out[1].failure_reason == "street.zero_results"  # failed before: passes through
    assert "upper" not in dict(out[1].timings) and all(dict(r.timings)["upper"] >= 0 for i, r in enumerate(out) if i != 1)
    assert counts == {"upper.ok": 4, "upper.failed": 4}


def test_a_registry_names_without_importing_and_says_what_is_missing():
    reg = Registry("widget", {"a": Backend("corebuild_no_such_module:Thing", "widgets"), "b": "corebuild.stages.stage:StageBase"})
    assert reg.names() == ["a", "b"] and "corebuild_no_such_module" not in sys.modules
    assert reg.load("b") is StageBase
    with pytest.raises(ModelUnavailableError, match=r"widget 'a' cannot load: No module named 'corebuild_no_such_module' \(pip install 'corebuild\[widgets\]'\)"):
        reg.load("a")
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; known: \['a', 'b'\]"):
        reg.load("c")
    reg["c"] = lambda cfg: "stand-in"  # a test's backend, registered in-process
    assert reg.load("c")(None) == "stand-in"


REGISTRIES = {"ocr": [OCR_BACKENDS], "segment": [SEGMENTERS, LABELERS], "describe": [DESCRIBERS], "fetch": [STREET_PROVIDERS, AERIAL_PROVIDERS]}
NOT_BACKENDS = {"ocr": {"coverage", "parallel"}, "segment": {"masks"}, "describe": {"prompts", "scene", "llm"}, "fetch": {"fetcher", "http", "blank"}}


@pytest.mark.parametrize("stage", sorted(REGISTRIES))
def test_every_backend_module_of_a_stage_is_one_registry_line(stage):
    """Adding a backend = one module beside its stage + one registry line: every module of the
    stage's package is a registered backend (or a named helper), and every entry points into it."""
    package = importlib.import_module(f"corebuild.stages.{stage}")
    modules = {m.name for m in pkgutil.iter_modules([str(Path(package.__file__).parent)])}
    targets = {b.target.partition(":")[0].rsplit(".", 1)[-1]: b.target for reg in REGISTRIES[stage] for b in (reg[n] for n in reg.names())}
    inside = {m for m, t in targets.items() if t.startswith(f"corebuild.stages.{stage}.")}
    assert modules - NOT_BACKENDS[stage] <= inside | {"llm"}, modules - inside
    for target in targets.values():
        assert target.startswith(f"corebuild.stages.{stage}"), target
    if stage == "describe":
        assert "llm" in inside  # the openai backend lives with the shared LVLM prompt code
