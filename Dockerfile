# airlab with PyTorch and TensorFlow on a CUDA runtime base; `airlab doctor` is the default command.
#
#   docker build -t airlab .                                # GPU image: CUDA 12.8 runtime, torch cu128,
#                                                           #   tensorflow[and-cuda]
#   docker build -t airlab:cpu --build-arg FLAVOR=cpu .     # CPU-only image: Ubuntu base, CPU wheels
#   docker run --rm --gpus all --shm-size=8g airlab         # judge the GPU stack inside the container
#   docker run --rm --gpus all --shm-size=8g airlab airlab train /opt/airlab/configs/quickstart.yaml
#
# Drivers: the cu128 wheels load on any driver >= 525.60.13 (CUDA 12 minor-version compatibility);
# `airlab doctor` in the container says whether the host's driver and GPUs fit.

ARG FLAVOR=gpu

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS base-gpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
    TF_REQUIREMENT="tensorflow[and-cuda]==2.21.*" \
    AIRLAB_EXTRAS=torch

FROM ubuntu:24.04 AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
    TF_REQUIREMENT="tensorflow-cpu==2.21.*" \
    AIRLAB_EXTRAS=all

# base-gpu or base-cpu, chosen by the build argument (both stages are tagged above)
# hadolint ignore=DL3006
FROM base-${FLAVOR} AS airlab
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12; apt versions float with the base image's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /opt/airlab
COPY pyproject.toml README.md ./
COPY airlab ./airlab
COPY configs ./configs

# As the README installs it: the torch build for the hardware from its variant index first, then
# TensorFlow, then airlab with its extras (not `dev`: the tests stay out of the image). The GPU
# image takes tensorflow[and-cuda] and only airlab's torch extra, because the tf extra means the
# CPU-only tensorflow-cpu on Linux x86_64, which must not overwrite the CUDA build. The variant
# index serves the newest torch for this Python; TensorFlow 2.21 is the newest in the compat table.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir torch --index-url "$TORCH_INDEX_URL" \
    && pip install --no-cache-dir "$TF_REQUIREMENT" "keras>=3.11.3" \
    && pip install --no-cache-dir -e ".[$AIRLAB_EXTRAS]"

RUN groupadd --gid 10001 airlab \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash airlab
USER 10001:10001
WORKDIR /home/airlab
CMD ["airlab", "doctor"]
