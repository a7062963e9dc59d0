# syntax=docker/dockerfile:1
# GPU worker image: CUDA 13.0 + cuDNN runtime (what the torch 2.13 wheels of gpu-requirements.txt
# are built for), Python 3.11, Beam's boot copied from its SDK image (Beam's documented recipe for
# a custom base), corebuild with the ocr, gcp, sam and easyocr backends, and vLLM.
# Build from the repository root (weights: see docker/README.md):
#   docker build -f docker/gpu.Dockerfile -t corebuild-gpu:0.1.0 .
FROM apache/beam_python3.11_sdk:2.77.0 AS beam

FROM nvidia/cuda:13.0.3-cudnn-runtime-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3.11-dev and gcc: Triton (under vLLM) compiles a small launcher module at run time.
# libgl1/libglib2.0-0: opencv-python, which rapidocr imports.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev gcc \
        libgl1 libglib2.0-0 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# Boot runs `python` from PATH: the venv. RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT stops it from
# making another venv per worker start. The COREBUILD_* paths are where corebuild looks for
# weights (read on the workers; the SAM/CLIP ones also by `corebuild build` when it starts).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    COREBUILD_HOME=/opt/corebuild \
    COREBUILD_CACHE_DIR=/opt/corebuild/cache \
    COREBUILD_EASYOCR_DIR=/opt/corebuild/weights/easyocr \
    HF_HOME=/opt/corebuild/weights/hf

COPY docker/gpu-requirements.txt /tmp/gpu-requirements.txt
COPY pyproject.toml README.md /tmp/src/
COPY corebuild /tmp/src/corebuild
COPY pipelines /tmp/src/pipelines
# The lock pins every package, corebuild's own dependencies included, hence --no-deps for corebuild.
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir pip==26.3 \
    && pip install --no-cache-dir -r /tmp/gpu-requirements.txt \
    && pip install --no-cache-dir --no-deps /tmp/src \
    && pip check \
    && rm -rf /tmp/src /tmp/gpu-requirements.txt

COPY --from=beam /opt/apache/beam /opt/apache/beam

WORKDIR /opt/corebuild

# Weights, baked: whatever docker/weights/ holds when the image is built (sam/, clip/, easyocr/,
# llm/; never committed), and/or SAM and open_clip files fetched by URL, each checked by sha256.
# Public URLs only: no key is ever a build argument (a gated model goes into docker/weights/).
ARG SAM_CHECKPOINT_FILE=sam_vit_b_01ec64.pth
ARG CLIP_CHECKPOINT_FILE=open_clip_pytorch_model.bin
ARG SAM_CHECKPOINT_URL=""
ARG SAM_CHECKPOINT_SHA256=""
ARG CLIP_CHECKPOINT_URL=""
ARG CLIP_CHECKPOINT_SHA256=""
ENV COREBUILD_SAM_CHECKPOINT=/opt/corebuild/weights/sam/${SAM_CHECKPOINT_FILE} \
    COREBUILD_CLIP_CHECKPOINT=/opt/corebuild/weights/clip/${CLIP_CHECKPOINT_FILE}
COPY docker/weights/ /opt/corebuild/weights/
RUN fetch() { \
        [ -n "$1" ] || return 0; \
        [ -n "$2" ] || { echo "$1: pass its sha256 too" >&2; return 1; }; \
        mkdir -p "$(dirname "$3")"; \
        curl -fsSL --retry 3 -o "$3" "$1"; \
        echo "$2  $3" | sha256sum -c -; \
    }; \
    fetch "$SAM_CHECKPOINT_URL" "$SAM_CHECKPOINT_SHA256" "$COREBUILD_SAM_CHECKPOINT" \
    && fetch "$CLIP_CHECKPOINT_URL" "$CLIP_CHECKPOINT_SHA256" "$COREBUILD_CLIP_CHECKPOINT" \
    && python -c "from corebuild.regions.landmask import land_mask; land_mask()" \
    && corebuild models check \
    && useradd --create-home --uid 1000 corebuild

# Runs as root, as in cpu.Dockerfile (boot writes into the runner's mounts); locally: --user corebuild.
ENTRYPOINT ["/opt/apache/beam/boot"]
