"""Extras that match the commands: the gcp extra brings Beam's Dataflow runner and the gs:// client,
the Makefile installs it when a command needs it (and reinstalls when pyproject.toml changes), and
without it corebuild says so in one line (exit 2), never with a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _reqs(extra: str) -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}


def test_the_gcp_extra_brings_the_dataflow_runner_at_the_core_pin():
    (core,) = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "apache-beam"]
    for extra in ("gcp", "test"):  # `make test` runs the offline Dataflow job tests
        beam = _reqs(extra)["apache-beam"]
        assert "gcp" in beam.extras and str(beam.specifier) == str(core.specifier) == "==2.77.0", (extra, beam)
    assert {"google-cloud-storage", "google-cloud-secret-manager"} <= set(_reqs("gcp"))


# --- the Makefile (make -n: what it would run; stamps in a scratch venv directory) ---

def _make(venv: Path, *args: str) -> list[str]:
    make = shutil.which("make")
    assert make, "make is not installed"
    run = subprocess.run([make, "-n", "-s", "-C", str(ROOT), f"VENV={venv}", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def _installs(lines: list[str]) -> list[str]:
    return [ln.split("-e ", 1)[1] for ln in lines if "pip install" in ln and "-e " in ln]


def _corebuild_command(lines: list[str]) -> list[str]:
    """The `... -m corebuild build ...` line of a recipe, its continuation lines joined, as words."""
    start = next(i for i, ln in enumerate(lines) if " -m corebuild build " in ln)
    words, i = [], start
    while True:
        words += lines[i].rstrip("\\").split()
        if not lines[i].endswith("\\"):
            return words
        i += 1


@pytest.mark.parametrize("args, gcp", [
    ((), False),
    (("ARGS=--limit 60",), False),
    (("RUNNER=DataflowRunner",), True),
    (("OUT=gs://my-bucket/builds",), True),
    (("ARGS=--cache gs://my-bucket/cache --limit 5",), True),
])
def test_build_region_installs_the_gcp_extra_only_when_the_command_needs_it(tmp_path, args, gcp):
    for target in ("build-region", "build-region-jp-tokyo"):
        assert _installs(_make(tmp_path / "venv", target, *args)) == ["'.[ocr]'"] + (["'.[ocr,gcp]'"] if gcp else [])


def test_the_stamps_reinstall_when_pyproject_changes(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stamps = [venv / ".run-deps", venv / ".gcp-deps", venv / ".test-deps"]
    newer = (ROOT / "pyproject.toml").stat().st_mtime + 100
    for i, stamp in enumerate(stamps):  # made in order, after the last pyproject edit
        stamp.touch()
        os.utime(stamp, (newer + i, newer + i))
    assert _installs(_make(venv, "build-region", "RUNNER=DataflowRunner")) == []
    assert _installs(_make(venv, "test")) == []
    older = newer - 200
    os.utime(stamps[0], (older, older))  # pyproject.toml changed since the venv was made
    assert _installs(_make(venv, "build-region", "RUNNER=DataflowRunner")) == ["'.[ocr]'", "'.[ocr,gcp]'"]
    assert _installs(_make(venv, "test")) == ["'.[ocr]'", "'.[ocr,test]'"]


def test_make_dataflow_dry_run_is_the_cli_dry_run_with_placeholders(tmp_path):
    from corebuild.cli import parser

    lines = _make(tmp_path / "venv", "dataflow-dry-run", "REGION=demo")
    assert _installs(lines) == ["'.[ocr]'", "'.[ocr,gcp]'"]
    cmd = _corebuild_command(lines)
    assert cmd[:3] == [f"{tmp_path / 'venv'}/bin/python", "-m", "corebuild"]
    args = parser().parse_args(cmd[3:])
    assert (args.region, args.runner, args.dry_run_job) == ("demo", "DataflowRunner", "build/dataflow-job-demo.json")
    assert args.beam_args[-1] == "--dry_run=True"
    assert {"--project=my-proj", "--region=us-central1", "--temp_location=gs://my-bucket/tmp", "--sdk_location=container"} <= set(args.beam_args)
    # the user's own values win over the placeholders
    args = parser().parse_args(_corebuild_command(_make(tmp_path / "venv", "dataflow-dry-run", "PROJECT=real-proj", "SDK_IMAGE=eu.gcr.io/p/img:1"))[3:])
    assert {"--project=real-proj", "--sdk_container_image=eu.gcr.io/p/img:1"} <= set(args.beam_args)


# --- without the packages: one line, exit 2 ---

# Makes the named modules fail to import (as if their package were not installed), then runs corebuild.
BLOCKER = r'''
import importlib.abc, runpy, sys
BLOCKED = [m for m in sys.argv.pop(1).split(",") if m]
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Missing())
for m in [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]:
    del sys.modules[m]
sys.argv = ["corebuild", *sys.argv[1:]]
runpy.run_module("corebuild", run_name="__main__", alter_sys=True)
'''
DATAFLOW = ("--project=fake-proj", "--region=us-central1", "--temp_location=gs://fake-bucket/tmp",
            "--sdk_container_image=us-docker.pkg.dev/fake-proj/corebuild/cpu:0.1.0", "--sdk_location=container", "--dry_run=True")


def _cli_without(tmp_path: Path, missing: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "missing.py"
    script.write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    return subprocess.run([sys.executable, str(script), missing, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("missing, args, says", [
    ("google.cloud.dataflow", ("--region", "jp-tokyo", "--output", "{tmp}/out", "--runner", "DataflowRunner", "--", *DATAFLOW),
     "error: --runner DataflowRunner needs Beam's Dataflow runner (apache-beam[gcp]), which is not installed here "
     "(cannot import name 'dataflow' from 'google.cloud' (unknown location)): "
     "pip install 'corebuild[gcp]'; `make build-region` installs it when RUNNER is not DirectRunner"),
    ("google.cloud.storage", ("--region", "demo", "--output", "gs://my-bucket/builds", "--limit", "5"),
     "error: --output gs://my-bucket/builds needs google-cloud-storage, which is not installed here (No module named 'google.cloud.storage'): "
     "pip install 'corebuild[gcp]'; `make build-region` installs it when OUT or --cache is a gs:// URL"),
    ("google.cloud.storage", ("--region", "demo", "--output", "{tmp}/out", "--cache", "gs://my-bucket/cache", "--limit", "5"),
     "error: --cache gs://my-bucket/cache needs google-cloud-storage, which is not installed here (No module named 'google.cloud.storage'): "
     "pip install 'corebuild[gcp]'; `make build-region` installs it when OUT or --cache is a gs:// URL"),
], ids=["dataflow", "gs-output", "gs-cache"])
def test_without_the_gcp_extra_one_line_and_exit_2(tmp_path, missing, args, says):
    run = _cli_without(tmp_path, missing, "build", *(a.format(tmp=tmp_path) for a in args))
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.strip() == says, run.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # said before any work


def test_the_blocker_really_removes_the_module(tmp_path):
    """Control: with nothing blocked the same Dataflow command gets past the check (and builds the job)."""
    run = _cli_without(tmp_path, "", "build", "--region", "jp-tokyo", "--output", str(tmp_path / "out"), "--runner", "DataflowRunner", "--", *DATAFLOW)
    assert run.returncode == 0 and "dry run, Dataflow job" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize("args, says", [
    (("--runner", "DirectRunner", "--", "--dry_run=True"),
     "error: --dry_run=True builds a Dataflow job without submitting it: it needs --runner DataflowRunner, not DirectRunner (which would run the build)"),
    (("--runner", "DataflowRunner", "--dry-run-job", "job.json", "--", *DATAFLOW[:-1]),
     "error: --dry-run-job writes the job of a dry run: add the Beam option --dry_run=True after -- (with --runner DataflowRunner)"),
    (("--runner", "DataflowRunner", "--", *(a for a in DATAFLOW if not a.startswith("--project"))),
     "error: Beam options after --: Pipeline has validations errors: Missing required option: project."),
    (("--runner", "DataflowRunner", "--", *(a for a in DATAFLOW if not a.startswith("--temp_location"))),
     "error: a dry run needs --temp_location=gs://<bucket>/<path> after -- (any name: it is not contacted); "
     "without one Beam would look for Google credentials to create a default bucket"),
], ids=["dry-run-on-direct", "job-file-without-dry-run", "beam-validation", "no-temp-location"])
def test_dry_run_mistakes_are_one_line_errors(tmp_path, capsys, args, says):
    from corebuild import cli

    assert cli.main(["build", "--region", "jp-tokyo", "--output", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == says and not any("Traceback" in ln for ln in err), err
    assert not (tmp_path / "out").exists()


def test_the_roads_extra_brings_osmium_and_the_tests_use_it():
    for extra in ("roads", "test"):
        assert str(_reqs(extra)["osmium"].specifier) == str(_reqs("roads")["osmium"].specifier), extra
