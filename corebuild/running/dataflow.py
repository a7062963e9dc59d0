"""Beam's DataflowRunner from corebuild: the packages it needs (extra `gcp`) and the dry run.

`corebuild build ... --runner DataflowRunner -- ... --dry_run=True` builds the job Beam would
submit (Beam's TestOptions.dry_run: `DataflowRunner.run_pipeline` returns `result.job` without
calling the service), completes it offline the way Beam's DataflowApplicationClient would before
submitting (the environment: worker pools, container images, pipeline options), and describes
it. Nothing is read from or written to the output, nothing is staged, no credentials are used.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corebuild.errors import ConfigError, one_line

GCP_EXTRA_HINT = "pip install 'corebuild[gcp]'"
ACCELERATOR_URN = "beam:resources:accelerator:v1"


def is_dataflow(runner: str) -> bool:
    """Beam's own rule (runners.runner.create_runner): a runner named like Dataflow needs apache-beam[gcp]."""
    return "dataflow" in runner.lower()


def check_packages(runner: str, output: str, cache: str | None) -> None:
    """One line, before any work starts, when Dataflow or a gs:// location is asked for without
    the gcp extra (which Beam and google-cloud-storage would otherwise report as a traceback)."""
    if is_dataflow(runner):
        _require_module("apache_beam.runners.dataflow.internal.apiclient", f"--runner {runner}", "Beam's Dataflow runner (apache-beam[gcp])", "when RUNNER is not DirectRunner")
    for flag, url in (("--output", output), ("--cache", cache)):
        if url and url.startswith("gs://"):
            _require_module("google.cloud.storage", f"{flag} {url}", "google-cloud-storage", "when OUT or --cache is a gs:// URL")


def _require_module(module: str, asker: str, package: str, when: str) -> None:
    """A one-line ConfigError when `module` (from the gcp extra) does not import: `asker` needs
    `package`, which `make build-region` installs `when`."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(one_line(
            f"{asker} needs {package}, which is not installed here ({exc}): {GCP_EXTRA_HINT}; `make build-region` installs it {when}"
        )) from None


def dry_run_requested(beam_args: tuple[str, ...] | list[str]) -> bool:
    """Beam's `--dry_run=True` among the pipeline options."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    return bool(PipelineOptions(list(beam_args)).view_as(TestOptions).dry_run)


def check_dry_run(runner: str, beam_args: tuple[str, ...] | list[str]) -> None:
    """A dry run builds a Dataflow job offline: another runner would run the build instead, and
    without a temp location Beam would look for credentials to create a default bucket (minutes)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    if not is_dataflow(runner):
        raise ConfigError(f"--dry_run=True builds a Dataflow job without submitting it: it needs --runner DataflowRunner, not {runner} (which would run the build)")
    g = PipelineOptions(list(beam_args)).view_as(GoogleCloudOptions)
    if not (g.temp_location or g.staging_location):
        raise ConfigError("a dry run needs --temp_location=gs://<bucket>/<path> after -- (any name: it is not contacted); "
                          "without one Beam would look for Google credentials to create a default bucket")


def _stage(proto_pipeline, staging_location: str) -> dict[str, bytes]:
    """The files Beam would upload beside the pipeline for the workers (with --sdk_location=container:
    the pickled main session and the submission's pip freeze), read from their local paths; each
    dependency is pointed at its staged copy, as DataflowApplicationClient._stage_resources does."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    files: dict[str, bytes] = {}
    for _, env in sorted(proto_pipeline.components.environments.items()):
        for dep in env.dependencies:
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
            if dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
                name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            else:
                name = os.path.basename(path)
            data = files.setdefault(name, Path(path).read_bytes())
            target, sha = FileSystems.join(staging_location, name), hashlib.sha256(data).hexdigest()
            if staging_location.startswith("gs://"):
                dep.type_urn = common_urns.artifact_types.URL.urn
                dep.type_payload = beam_runner_api_pb2.ArtifactUrlPayload(url=target, sha256=sha).SerializeToString()
            else:
                dep.type_payload = beam_runner_api_pb2.ArtifactFilePayload(path=target, sha256=sha).SerializeToString()
    return files


def complete_job(job) -> dict[str, Any]:
    """The dry run's `result.job` (an apiclient.Job: the job request and the runner-API pipeline)
    with the environment Beam's DataflowApplicationClient.create_job_description adds before
    submitting, built the same way minus the uploads. Returns {"job": the CreateJob request's job
    as Dataflow's JSON, "pipeline": the runner-API pipeline Beam stages as pipeline.pb, as JSON,
    "staged": the other files it would upload, name -> base64 of their bytes}."""
    import base64
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.runners.internal import names as shared_names
    from apache_beam.options.pipeline_options import WorkerOptions
    from google.protobuf import json_format

    overrides = job.options.view_as(WorkerOptions).sdk_harness_container_image_overrides
    apiclient.DataflowApplicationClient._apply_sdk_environment_overrides(
        job.proto_pipeline, dict(s.split(",", 1) for s in overrides) if overrides else {}, job.options
    )
    staged = _stage(job.proto_pipeline, job.google_cloud_options.staging_location)
    serialized = job.proto_pipeline.SerializeToString()
    job.proto.environment = apiclient.Environment(
        packages=list(staged),
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=FileSystems.join(job.google_cloud_options.staging_location, shared_names.STAGED_PIPELINE_FILENAME),
        proto_pipeline=job.proto_pipeline,
        pipeline_proto_hash=hashlib.sha256(serialized).hexdigest(),
    ).proto
    return {
        "job": json.loads(json_format.MessageToJson(job.proto._pb)),
        "pipeline": json_format.MessageToDict(job.proto_pipeline),
        "staged": {name: base64.b64encode(data).decode() for name, data in staged.items()},
    }


def pipeline_proto(described: dict[str, Any]):
    """The runner-API pipeline of a described job, as the proto again."""
    from apache_beam.portability.api import beam_runner_api_pb2
    from google.protobuf import json_format

    return json_format.ParseDict(described["pipeline"], beam_runner_api_pb2.Pipeline())


def steps(proto) -> dict[str, str]:
    """Every primitive step (a transform with no parts) -> its environment id."""
    return {t.unique_name: t.environment_id for t in proto.components.transforms.values() if not t.subtransforms}


def gpu_steps(proto) -> dict[str, str]:
    """Steps whose environment carries Beam's accelerator resource hint -> the hint."""
    envs = proto.components.environments
    hint = ACCELERATOR_URN
    return {
        name: envs[env].resource_hints[hint].decode()
        for name, env in steps(proto).items()
        if env and hint in envs[env].resource_hints
    }


@dataclass(frozen=True)
class DryRunResult:
    """What `run_build` gives back for `--dry_run=True`: the job, described; nothing was written."""

    region_id: str
    out_url: str  # where the build would go
    described: dict[str, Any]

    @property
    def summary(self) -> str:
        proto = pipeline_proto(self.described)
        gpu = gpu_steps(proto)
        stages = sorted({n.split("/")[0] for n in gpu})
        hints = sorted(set(gpu.values()))
        pools = self.described["job"].get("environment", {}).get("workerPools", [])
        images = sorted({i["containerImage"] for p in pools for i in p.get("sdkHarnessContainerImages", [])}
                        | {p["workerHarnessContainerImage"] for p in pools if p.get("workerHarnessContainerImage")})
        return one_line(
            f"{self.region_id}: dry run, Dataflow job {self.described['job'].get('name', '?')} built and not submitted: "
            f"{len({n.split('/')[0] for n in steps(proto)})} stages, {len(steps(proto))} steps, "
            + (f"GPU steps {len(gpu)} in {', '.join(stages)} ({'; '.join(hints)})" if gpu else "no GPU steps")
            + f", image {', '.join(images) or '(none)'} -> {self.out_url} (nothing written)"
        )
