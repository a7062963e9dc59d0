# syntax=docker/dockerfile:1
# CPU worker image: Beam's own Python 3.11 SDK image (its boot entrypoint, Beam 2.77.0[gcp])
# plus corebuild[ocr,gcp]. Build from the repository root:
#   docker build -f docker/cpu.Dockerfile -t corebuild-cpu:0.1.0 .
FROM apache/beam_python3.11_sdk:2.77.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# opencv-python (pulled in by rapidocr) needs libGL and glib when it is imported.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Boot would otherwise make a fresh venv per worker start; everything is preinstalled here.
# COREBUILD_HOME is the working directory. Prompts and region manifests are package data: the
# installed corebuild finds them wherever it runs.
ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    COREBUILD_HOME=/opt/corebuild \
    COREBUILD_CACHE_DIR=/opt/corebuild/cache

COPY pyproject.toml README.md /tmp/src/
COPY corebuild /tmp/src/corebuild
COPY pipelines /tmp/src/pipelines
# Only-if-needed upgrades keep the image's tested Beam dependency set; pip check proves it still holds.
RUN pip install --no-cache-dir '/tmp/src[ocr,gcp]' \
    && pip check \
    && rm -rf /tmp/src

WORKDIR /opt/corebuild

# Bake the bit-packed land mask (117 MB) so no worker spends ~6 s and ~1 GB unpacking it;
# `models check` prints what this image can run, in the build log.
RUN python -c "from corebuild.regions.landmask import land_mask; land_mask()" \
    && corebuild models check \
    && useradd --create-home --uid 1000 corebuild

# Runs as root: Beam's boot writes staged artifacts into the runner's --semi_persist_dir (a host
# mount on Dataflow) and pip-installs them. For local runs use `docker run --user corebuild`.
ENTRYPOINT ["/opt/apache/beam/boot"]
