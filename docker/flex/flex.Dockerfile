# syntax=docker/dockerfile:1
# Flex Template image: a worker image (cpu or gpu, built first) plus Dataflow's Python template
# launcher, so the job is launched with the very code, prompts, manifests and weights its workers
# run (`corebuild build` checks the models before it submits). Build from the repository root:
#   docker build -f docker/flex/flex.Dockerfile --build-arg WORKER_IMAGE=REGISTRY/corebuild-gpu:0.1.0 \
#     -t REGISTRY/corebuild-flex-gpu:0.1.0 .
# Bump LAUNCHER_IMAGE to the newest tag on Dataflow's "Flex Templates base images" page.
ARG WORKER_IMAGE=corebuild-cpu:0.1.0
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:flex_templates_base_image_release_20240628_RC00

FROM ${LAUNCHER_IMAGE} AS launcher

FROM ${WORKER_IMAGE}
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
COPY docker/flex/launch.py /opt/corebuild/flex/launch.py
# No FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE / SETUP_FILE: everything is installed in the image.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/corebuild/flex/launch.py
# Boot stays the entrypoint, so this image also serves as the job's --sdk_container_image.
ENTRYPOINT ["/opt/apache/beam/boot"]
