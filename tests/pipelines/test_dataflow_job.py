"""The real Dataflow job, built offline: the CLI with DataflowRunner and Beam's `--dry_run=True`
(DataflowRunner.run_pipeline builds `result.job` and does not submit it; corebuild completes its
environment the way Beam's client would before submitting and writes it with --dry-run-job).
Each run is a subprocess whose sockets refuse anything but loopback and log what was tried:
nothing may be. Checked: the steps, the GPU resource hint on exactly the GPU steps, the worker
image, the options (also when launched the Flex Template's way, docker/flex/launch.py with every
parameter metadata.json declares), that nothing is written to the output, and that no planted
credential is anywhere in what would be submitted or staged."""

from __future__ import annotations

import base64
import bz2
import json
import os
import re
import shlex
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from corebuild.config import RunnerConfig
from corebuild.running.dataflow import gpu_steps, pipeline_proto, steps
from tests.conftest import ROOT

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp] (extras gcp and test)")

# The README's Dataflow example ("Running on Dataflow"), exactly: the test runs these words.
README_COMMAND = r"""
.venv/bin/python -m corebuild build --region jp-tokyo --output gs://my-bucket/builds \
    --runner DataflowRunner --segment sam --describer vllm \
    --llm-model /opt/corebuild/weights/llm/Qwen2-VL-7B-Instruct --aerial-preset esri_world_imagery \
    --secret GOOGLE_MAPS_API_KEY=projects/my-proj/secrets/streetview-key \
    --dry-run-job build/dataflow-job.json \
    -- --project=my-proj --region=us-central1 --temp_location=gs://my-bucket/tmp \
    --service_account_email=corebuild-workers@my-proj.iam.gserviceaccount.com \
    --machine_type=n1-standard-4 --max_num_workers=50 \
    --sdk_container_image=us-docker.pkg.dev/my-proj/corebuild/gpu:0.1.0 --sdk_location=container \
    --experiments=use_runner_v2 --dry_run=True
"""
IMAGE = "us-docker.pkg.dev/my-proj/corebuild/gpu:0.1.0"
SECRET_NAME = "projects/my-proj/secrets/streetview-key"
STAGES = ("Chunks", "SpreadChunks", "SampleChunk", "Select", "Pending", "Spread", "Locate", "SameImagery", "Dedupe",
          "Units", "Capture", "OCR", "Segment", "Describe", "Write")
# Credentials a launcher machine may hold: none may reach the job.
PLANTED_ENV = {
    "GOOGLE_MAPS_API_KEY": "AIzaPLANTED-dataflow-job-key-16",
    "MAPILLARY_ACCESS_TOKEN": "MLYPLANTED-dataflow-job-token-16",
    "BING_MAPS_KEY": "bingPLANTED-dataflow-job-16",
    "MAPBOX_ACCESS_TOKEN": "pk.PLANTED-dataflow-job-16",
}
ADC = {"client_secret": "adcPLANTED-client-secret-16", "refresh_token": "adcPLANTED-refresh-token-16"}

# Runs `corebuild` with every non-loopback connect and name lookup refused and written down.
GUARD = r'''
import os, runpy, socket, sys
LOCAL = ("127.0.0.1", "::1", "localhost")
def note(what):
    with open(os.environ["NET_ATTEMPTS"], "a") as f:
        f.write(repr(what) + "\n")
def host(addr):
    return addr[0] if isinstance(addr, tuple) else addr
real_connect, real_connect_ex, real_gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and host(addr) not in LOCAL:
        note(addr)
        raise OSError(101, f"network unreachable (test guard): {addr!r}")
    return real_connect(self, addr)
def connect_ex(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and host(addr) not in LOCAL:
        note(addr)
        return 101
    return real_connect_ex(self, addr)
def getaddrinfo(name, *args, **kwargs):
    if name is not None and (name.decode() if isinstance(name, bytes) else name) not in LOCAL:
        note(("getaddrinfo", name))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test guard)")
    return real_gai(name, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
sys.argv = ["corebuild", *sys.argv[1:]]
runpy.run_module("corebuild", run_name="__main__", alter_sys=True)
'''


def readme_argv() -> list[str]:
    words = shlex.split(README_COMMAND.replace("\\\n", " "))
    assert words[:3] == [".venv/bin/python", "-m", "corebuild"]
    return words[3:]


def run_offline(argv: list[str], tmp_path: Path, blocked: str = "") -> subprocess.CompletedProcess:
    """`corebuild <argv>` in tmp_path (a checkout's prompts/ and region_manifests/ linked in, where
    it has them), planted credentials and a fake ADC file in its environment, the network guard on."""
    for name in ("prompts", "region_manifests"):
        if (ROOT / name).is_dir() and not os.path.lexists(tmp_path / name):
            (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "guard.py").write_text(GUARD)
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "fake.apps.googleusercontent.com", **ADC}))
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "STORAGE_EMULATOR"))}
    env.update(PLANTED_ENV, GOOGLE_APPLICATION_CREDENTIALS=str(adc), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               NET_ATTEMPTS=str(tmp_path / "net.log"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(tmp_path / "guard.py"), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def net_attempts(tmp_path: Path) -> str:
    log = tmp_path / "net.log"
    return log.read_text() if log.exists() else ""


def test_the_readme_shows_this_command():
    readme = (ROOT / "README.md").read_text()
    assert README_COMMAND.strip() in readme, "README's Dataflow dry-run example and README_COMMAND differ: make them the same"


def test_control_the_guard_stops_and_records_a_connection(tmp_path):
    """The runs here pass through GUARD: it does refuse a name lookup and a connection, and says so."""
    probe = GUARD.split("sys.argv = ")[0] + (
        "s = socket.socket()\n"
        "for attempt in (lambda: socket.create_connection(('dataflow.googleapis.com', 443), timeout=2), lambda: s.connect(('8.8.8.8', 53))):\n"
        "    try:\n        attempt()\n    except OSError as exc:\n        print(type(exc).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "NET_ATTEMPTS": str(tmp_path / "net.log")},
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["gaierror", "OSError"], run.stderr
    assert "dataflow.googleapis.com" in net_attempts(tmp_path) and "('8.8.8.8', 53)" in net_attempts(tmp_path)


def _unwrap(data: bytes) -> bytes:
    """Beam ships functions as base64(bz2|zlib(pickle)); also try each layer alone."""
    try:
        data = base64.b64decode(data, validate=True)
    except ValueError:
        pass
    for decompress in (bz2.decompress, zlib.decompress):
        try:
            return decompress(data)
        except Exception:
            continue
    return data


def job_blobs(described: dict) -> list[bytes]:
    """Every byte string a credential could hide in: the job's JSON (request and pipeline), each
    DoFn and CombineFn unpickled-ready, and each file Beam would stage beside the pipeline."""
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    out = [json.dumps(described).encode()]
    for t in pipeline_proto(described).components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            out.append(_unwrap(rapi.ParDoPayload.FromString(t.spec.payload).do_fn.payload))
        elif t.spec.urn.startswith("beam:transform:combine_"):
            out.append(_unwrap(rapi.CombinePayload.FromString(t.spec.payload).combine_fn.payload))
    out += [_unwrap(base64.b64decode(data)) for data in described["staged"].values()]
    return out


def options(described: dict) -> dict:
    return described["job"]["environment"]["sdkPipelineOptions"]["options"]


@pytest.fixture(scope="module")
def readme_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme_job")
    run = run_offline(readme_argv(), tmp)
    return tmp, run


def test_the_readme_command_builds_the_job_offline_and_says_so_in_one_line(readme_job):
    tmp, run = readme_job
    assert run.returncode == 0, run.stderr[-3000:]
    assert net_attempts(tmp) == ""  # no project, bucket, metadata server or Secret Manager was asked
    assert "Traceback" not in run.stderr
    (line,) = run.stdout.strip().splitlines()
    assert re.fullmatch(
        rf"jp-tokyo: dry run, Dataflow job beamapp-\S+ built and not submitted: \d+ stages, \d+ steps, GPU steps 3 in Describe, Segment "
        rf"\({re.escape(RunnerConfig().gpu_accelerator)}\), image {re.escape(IMAGE)} -> gs://my-bucket/builds/jp-tokyo \(nothing written\); "
        rf"job written to build/dataflow-job.json", line), line
    # nothing but the job file appeared here (the output is gs://: the guard shows it was not asked)
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if "gcloud" not in p.parts and p.is_file() and not p.is_symlink()) == [
        "adc.json", "build/dataflow-job.json", "guard.py"]


def test_gpu_hint_on_exactly_the_gpu_steps(readme_job):
    tmp, _ = readme_job
    described = json.loads((tmp / "build" / "dataflow-job.json").read_text())
    proto = pipeline_proto(described)
    every = steps(proto)
    assert set(STAGES) <= {n.split("/")[0] for n in every}
    hinted = gpu_steps(proto)
    assert set(hinted.values()) == {RunnerConfig().gpu_accelerator}
    gpu = {n for n in every if n.split("/")[0] in ("Segment", "Describe")}
    assert set(hinted) == gpu and "Describe/BeamML_RunInference" in gpu and "Segment" in gpu
    envs = proto.components.environments
    assert all(b"beam:resources:accelerator:v1" not in envs[e].resource_hints for n, e in every.items() if e and n not in gpu)


def test_image_and_options_are_the_ones_given(readme_job):
    tmp, _ = readme_job
    described = json.loads((tmp / "build" / "dataflow-job.json").read_text())
    job = described["job"]
    assert job["type"] == "JOB_TYPE_BATCH" and job["name"].startswith("beamapp-")
    (pool,) = job["environment"]["workerPools"]
    assert {i["containerImage"] for i in pool["sdkHarnessContainerImages"]} == {IMAGE}
    assert len(pool["sdkHarnessContainerImages"]) == 2  # the CPU environment and the GPU-hinted one
    assert (pool["machineType"], pool["autoscalingSettings"]["maxNumWorkers"]) == ("n1-standard-4", 50)
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    for env in pipeline_proto(described).components.environments.values():
        assert rapi.DockerPayload.FromString(env.payload).container_image == IMAGE
    o = options(described)
    assert (o["project"], o["region"], o["sdk_container_image"], o["sdk_location"]) == ("my-proj", "us-central1", IMAGE, "container")
    assert o["service_account_email"] == job["environment"]["serviceAccountEmail"] == "corebuild-workers@my-proj.iam.gserviceaccount.com"
    assert o["temp_location"].startswith("gs://my-bucket/tmp/") and "use_runner_v2" in o["experiments"]
    assert o["pipelineUrl"].startswith("gs://my-bucket/tmp/") and o["pipelineUrl"].endswith("/pipeline.pb")
    # the staged files are named in the worker pool, and nothing else is (Beam is in the image)
    assert sorted(p["name"] for p in pool["packages"]) == sorted(described["staged"]) == ["pickled_main_session", "submission_environment_dependencies.txt"]


def test_no_credential_anywhere_in_what_would_be_submitted(readme_job):
    tmp, run = readme_job
    described = json.loads((tmp / "build" / "dataflow-job.json").read_text())
    blobs = job_blobs(described)
    assert len(blobs) > 20 and any(b"FetchConfig" in b for b in blobs)  # the configs travel in the unpickled DoFns...
    assert any(SECRET_NAME.encode() in b for b in blobs)  # ...with the secret's name (workers read its value)
    assert any(b"Qwen2-VL-7B-Instruct" in b for b in blobs)
    for value in [*PLANTED_ENV.values(), *ADC.values()]:
        assert not any(value.encode() in b for b in blobs), value
        assert value not in run.stdout + run.stderr


def test_a_cpu_build_to_a_local_output_writes_nothing_and_has_no_gpu_step(tmp_path):
    out = tmp_path / "out"
    run = run_offline(["build", "--region", "jp-tokyo", "--output", str(out), "--runner", "DataflowRunner", "--dry-run-job", "job.json", "--",
                       "--project=fake-proj", "--region=us-central1", "--temp_location=gs://fake-bucket/tmp",
                       "--sdk_container_image=us-docker.pkg.dev/fake-proj/corebuild/cpu:0.1.0", "--sdk_location=container", "--dry_run=True"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert net_attempts(tmp_path) == "" and not out.exists()  # no _build.json, no _sampling, no manifest
    assert ", no GPU steps, image us-docker.pkg.dev/fake-proj/corebuild/cpu:0.1.0 ->" in run.stdout
    proto = pipeline_proto(json.loads((tmp_path / "job.json").read_text()))
    stages = {n.split("/")[0] for n in steps(proto)}
    assert gpu_steps(proto) == {} and "Describe" in stages and "Segment" not in stages


# Sample values for every parameter docker/flex/metadata.json declares (a new one must be added here).
FLEX_VALUES = {
    "region_id": "jp-tokyo", "output": "gs://my-bucket/builds", "cache": "gs://my-bucket/corebuild-cache", "street_provider": "mapillary",
    "aerial_preset": "esri_world_imagery", "map_preset": "osm", "ocr_backend": "easyocr", "segment": "sam", "sam_model": "vit_b",
    "labeler": "clip", "describer": "vllm", "llm_model": "/opt/corebuild/weights/llm/qwen2.5-vl-7b", "llm_url": "https://llm.example/v1",
    "llm_key_env": "LLM_TOKEN", "prompt": "cvg-progressive-v1", "grounding": "remove", "self_review": "true", "unit_points": "50",
    "shard_mb": "128", "limit": "1000", "seed": "3", "min_spacing": "30", "rate": "5", "concurrency": "8", "overwrite": "true",
}
# What Dataflow's template launcher adds: Beam options (and a canary, to show an unknown option would show).
FLEX_BEAM = {
    "project": "my-proj", "region": "us-central1", "temp_location": "gs://my-bucket/tmp", "staging_location": "gs://my-bucket/staging",
    "sdk_container_image": "us-docker.pkg.dev/my-proj/corebuild/flex-gpu:0.1.0", "service_account_email": "w@my-proj.iam.gserviceaccount.com",
    "canary_unknown_option": "reaches-beam",
}


def test_the_flex_template_parameters_reach_corebuild_and_the_launcher_options_reach_the_job(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("flex_launch", ROOT / "docker" / "flex" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    params = {p["name"]: p for p in json.loads((ROOT / "docker" / "flex" / "metadata.json").read_text())["parameters"]}
    assert set(FLEX_VALUES) == set(params)
    for name, value in FLEX_VALUES.items():
        assert all(re.match(rx, value) for rx in params[name].get("regexes", [])), (name, value)
    argv = [f"--{k}={v}" for k, v in {**FLEX_VALUES, **FLEX_BEAM}.items()] + ["--dry_run=True", "--dry_run_job=job.json"]
    cmd = launch.command(argv)
    assert cmd[:4] == [sys.executable, "-m", "corebuild", "build"]
    run = run_offline(cmd[3:], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert net_attempts(tmp_path) == ""
    described = json.loads((tmp_path / "job.json").read_text())
    o = options(described)
    for name, value in FLEX_BEAM.items():  # the launcher's options are the job's
        assert o[name] == value or (name.endswith("_location") and o[name].startswith(value + "/")), (name, o.get(name))
    leaked = sorted(set(params) & set(o))
    assert not leaked, f"template parameters that reached Beam instead of corebuild: {leaked}"
    hinted = {n.split("/")[0] for n in gpu_steps(pipeline_proto(described))}
    assert hinted == {"Segment", "Describe"}  # segment=sam, describer=vllm took effect
    blobs = job_blobs(described)
    for value in ("gs://my-bucket/corebuild-cache", "/opt/corebuild/weights/llm/qwen2.5-vl-7b", "https://llm.example/v1", "mapillary"):
        assert any(value.encode() in b for b in blobs), value
    assert "jp-tokyo: dry run, Dataflow job " in run.stdout and "-> gs://my-bucket/builds/jp-tokyo (nothing written)" in run.stdout
