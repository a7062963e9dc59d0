"""The Dataflow pipeline, constructed offline with fake project/bucket options (nothing runs):
its stages, resource hints on the GPU stages only, options round-trip, no secrets serialised."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions

from corebuild.config import BuildConfig, RunnerConfig
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.regions import load_region
from corebuild.shards.units import BuildState
from corebuild.stages.segment import SegmentConfig
from corebuild.shards.storage import open_storage
from corebuild.shards.schema import RunStamp
from pipelines.build_region import build_pipeline
from tests.conftest import ROOT

PLANTED = "AIzaPLANTED-dataflow-graph-key-77"
SECRET_NAME = "projects/fake-proj/secrets/streetview-key"
BUCKET = "corebuild-test"  # the gcs_emulator fixture's bucket, in case anything looks at it
# --dry_run=True: with apache-beam[gcp] installed, validating Dataflow options otherwise asks GCS
# about the temp bucket's soft-delete policy, and first spends ~30 s looking for Google credentials.
DATAFLOW_ARGS = (
    "--project=fake-proj", "--region=us-central1", f"--temp_location=gs://{BUCKET}/tmp", f"--staging_location=gs://{BUCKET}/staging",
    "--service_account_email=workers@fake-proj.iam.gserviceaccount.com", "--machine_type=n1-standard-4", "--max_num_workers=40",
    "--sdk_container_image=us-docker.pkg.dev/fake-proj/corebuild/cpu:0.1.0", "--experiments=use_runner_v2", "--sdk_location=container",
    "--dry_run=True",
)
ACCELERATOR = b"beam:resources:accelerator:v1"


@pytest.fixture(autouse=True)
def _emulated_gcs(gcs_emulator):
    assert gcs_emulator["bucket"] == BUCKET  # nothing here may reach Google


def _graph(monkeypatch, gpu: bool):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", PLANTED)  # as if the launcher had the key in its env
    cfg = BuildConfig(
        region_id="demo",
        manifests_dir=str(ROOT / "region_manifests"),
        fetch=FetchConfig(secret_names=(("GOOGLE_MAPS_API_KEY", SECRET_NAME),)),
        segment=SegmentConfig(backend="sam", checkpoint="/opt/corebuild/weights/sam_vit_b.pth") if gpu else SegmentConfig(),
        describe=DescribeConfig(backend="vllm", model="/opt/corebuild/weights/llm/qwen", prompt_id="cvg-progressive-v1") if gpu else DescribeConfig(),
        runner=RunnerConfig(runner="DataflowRunner", extra_args=DATAFLOW_ARGS),
    )
    options = PipelineOptions(cfg.runner.pipeline_args())
    p = beam.Pipeline(options=options)
    region = load_region("demo", ROOT / "region_manifests")
    build_pipeline(p, cfg, region, RunStamp("demo-b", "h", "v"), open_storage(f"gs://{BUCKET}/out"), BuildState("demo-b", "h", 100, 1, frozenset(), False))
    return p, options, p.to_runner_api()


def _hinted(proto) -> dict[str, bytes]:
    envs = proto.components.environments
    return {
        t.unique_name: envs[t.environment_id].resource_hints[ACCELERATOR]
        for t in proto.components.transforms.values()
        if t.environment_id and ACCELERATOR in envs[t.environment_id].resource_hints
    }


def test_gpu_stages_carry_the_accelerator_hint_and_cpu_stages_none(monkeypatch):
    p, _, proto = _graph(monkeypatch, gpu=True)
    assert type(p.runner).__name__ == "DataflowRunner"
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ("Chunks", "SpreadChunks", "SampleChunk", "Select", "Pending", "Spread", "Locate", "SameImagery", "Dedupe", "Units", "Capture", "OCR", "Segment", "Describe", "Write"):
        assert stage in names, stage
    hinted = _hinted(proto)
    assert set(hinted.values()) == {b"type:nvidia-l4;count:1;install-nvidia-driver"}
    assert {n.split("/")[0] for n in hinted} == {"Segment", "Describe"}  # and the transforms inside Describe
    for cpu in ("Locate", "Capture", "OCR", "Write", "SampleChunk"):
        assert cpu not in hinted


def test_a_cpu_only_build_has_no_hints(monkeypatch):
    _, _, proto = _graph(monkeypatch, gpu=False)
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert "Segment" not in names and "Describe" in names and _hinted(proto) == {}


def test_the_graph_has_one_shape_for_every_describer(monkeypatch):
    """vllm (a shared engine, behind RunInference) and template (a ParDo) sit at the same place,
    (unit key, records) in and out: no unbatching, re-keying or regrouping around the describer."""

    def top_level(proto) -> list[str]:
        root = proto.components.transforms[proto.root_transform_ids[0]]
        return [proto.components.transforms[t].unique_name for t in root.subtransforms]

    gpu, cpu = top_level(_graph(monkeypatch, gpu=True)[2]), top_level(_graph(monkeypatch, gpu=False)[2])
    assert [n for n in gpu if n != "Segment"] == cpu
    assert cpu[cpu.index("OCR") :] == ["OCR", "Describe", "QC", "Write"]
    inside = {t.unique_name for t in _graph(monkeypatch, gpu=True)[2].components.transforms.values() if t.unique_name.startswith("Describe/")}
    assert "Describe/BeamML_RunInference" in inside  # the shared engine: Beam's RunInference, one model per machine
    assert not any(t.unique_name.startswith("Describe/") for t in _graph(monkeypatch, gpu=False)[2].components.transforms.values())  # a plain ParDo


def test_fan_out_is_broken_by_reshuffles_and_grouping(monkeypatch):
    _, _, proto = _graph(monkeypatch, gpu=False)
    urns = {t.unique_name: t.spec.urn for t in proto.components.transforms.values()}
    assert urns["SameImagery"] == urns["Units"] == "beam:transform:group_by_key:v1"
    assert any(n.startswith("SpreadChunks/") for n in urns) and any(n.startswith("Spread/") for n in urns)  # Reshuffle composites


def test_dataflow_options_round_trip(monkeypatch):
    _, options, _ = _graph(monkeypatch, gpu=False)
    g, w = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    assert (g.project, g.region, g.temp_location, g.staging_location) == ("fake-proj", "us-central1", f"gs://{BUCKET}/tmp", f"gs://{BUCKET}/staging")
    assert g.service_account_email == "workers@fake-proj.iam.gserviceaccount.com"
    assert (w.machine_type, w.max_num_workers, w.sdk_container_image) == ("n1-standard-4", 40, "us-docker.pkg.dev/fake-proj/corebuild/cpu:0.1.0")
    again = PipelineOptions.from_dictionary(options.get_all_options(drop_default=True))
    assert again.get_all_options(drop_default=True) == options.get_all_options(drop_default=True)


def _pickled_fns(proto) -> list[bytes]:
    """Every ParDo's DoFn as pickled bytes: Beam ships them base64(bz2|zlib(pickle))."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability.api import beam_runner_api_pb2

    out = []
    for t in proto.components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            raw = base64.b64decode(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload)
            out.append(bz2.decompress(raw) if raw[:3] == b"BZh" else zlib.decompress(raw))
    return out


@pytest.mark.parametrize("gpu", [False, True])
def test_no_secret_in_what_gets_serialised(monkeypatch, gpu):
    _, options, proto = _graph(monkeypatch, gpu)
    fns = _pickled_fns(proto)
    assert len(fns) > 10 and any(b"FetchConfig" in f for f in fns)  # the configs do travel in the DoFns
    assert not any(PLANTED.encode() in f for f in fns) and PLANTED.encode() not in proto.SerializeToString()
    assert PLANTED not in repr(options.get_all_options())
    assert any(SECRET_NAME.encode() in f for f in fns)  # the secret's name travels; workers read its value


def test_beam_options_after_dashes_stay_out_of_the_dofns(monkeypatch):
    """Options after `--` are the runner's (Beam sends them as job options); a credential among
    them must not also travel pickled inside every DoFn's config."""
    planted = "s3-secret-PLANTED-in-beam-options-81"
    monkeypatch.setattr("tests.pipelines.test_dataflow_graph.DATAFLOW_ARGS", DATAFLOW_ARGS + (f"--s3_secret_access_key={planted}",))
    _, _, proto = _graph(monkeypatch, gpu=False)
    fns = _pickled_fns(proto)
    assert any(b"FetchConfig" in f for f in fns) and not any(planted.encode() in f for f in fns)
