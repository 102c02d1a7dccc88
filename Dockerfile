# GPU training image for jsis_d2: CUDA 13.0 devel base, torch 2.14.1 (cu130 wheels), OFFICIAL
# detectron2 built from source at a pinned commit WITH its CUDA ops, and this project.
# Entry point: tools/train_net.py. Classic builder compatible (no BuildKit features).
#
#   docker build -t jsis_d2 .
#   docker run --gpus all --shm-size 8g \
#     -v /data/datasets:/datasets -v $PWD/output:/output jsis_d2 \
#     --config-file configs/COCO-PanopticSegmentation/jsis_R50_C4_8ep.yaml --num-gpus 8 \
#     OUTPUT_DIR /output/coco_8ep
#
# Build args (all optional; the defaults are the real GPU image):
#   BASE_IMAGE            CUDA 13.0 devel image (needs nvcc under /usr/local/cuda, apt, and a
#                         Python 3 that torch 2.14.1 has wheels for).
#   DETECTRON2_SOURCE     anything `pip install` accepts: the default git+https URL at the
#                         pinned commit, an https/http URL of a source archive, ...
#   PIP_WHEELHOUSE        a pip --find-links location (URL or path); when set, pip installs
#                         with --no-index from it only. Default: the package index.
#   TORCH_CUDA_ARCH_LIST  GPU architectures compiled into detectron2's CUDA ops. The default
#                         is torch 2.14.1+cu130's own list (sm_75 sm_80 sm_86 sm_90 sm_100
#                         sm_120, PTX for the newest). GPUs of the same major version run
#                         those (8.9 -> 8.6, 10.3 -> 10.0, 12.1 -> 12.0). CUDA 13.0 dropped
#                         compute_70 (Volta): do not add 7.0.
#   MAX_JOBS              parallel compile jobs (empty: ninja's default).
#
# Pins: requirements/base.txt (shared with dev/setup_env.sh) and
# requirements/detectron2-official.txt (official detectron2's install_requires, pinned;
# detectron2 itself is installed with --no-deps). `make docker-check` builds a stand-in of
# this image on a machine without GPU or registry access (README, "GPU training with Docker").
#
# The `deploy` target is a separate, small image: the ONNX runtime only (numpy, onnxruntime,
# Pillow, tqdm: requirements/deploy.txt; no torch, CUDA or detectron2) with the entry point
# `tools/predict.py --backend onnx` (docs/PREDICT.md):
#
#   docker build --target deploy -t jsis_d2:deploy .
#   docker run --rm -v $PWD/export:/model:ro -v /data/images:/images:ro -v $PWD/out:/out \
#     jsis_d2:deploy --model /model --input /images --output /out
#
#   DEPLOY_BASE_IMAGE     its base: any Debian/Ubuntu image; Python 3 is installed with apt
#                         when the base has none. PIP_WHEELHOUSE applies to it too.
# It is the FIRST stage: Docker's classic builder (no BuildKit) builds every stage before the
# target, so `--target deploy` builds nothing of the GPU image; the GPU image's build also
# builds this small stage.
ARG BASE_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
ARG DEPLOY_BASE_IMAGE=python:3.11-slim-bookworm

# --- deploy: the ONNX runtime of an exported model, nothing else ---
FROM ${DEPLOY_BASE_IMAGE} AS deploy
RUN if ! command -v python3 >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/deploy
ENV PATH=/opt/deploy/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
ARG PIP_WHEELHOUSE=
COPY requirements/deploy.txt /tmp/deploy.txt
RUN pip install ${PIP_WHEELHOUSE:+--no-index --find-links=$PIP_WHEELHOUSE} -r /tmp/deploy.txt \
    && rm /tmp/deploy.txt
WORKDIR /workspace/jsis_d2
COPY jsis_runtime/ jsis_runtime/
COPY tools/predict.py tools/predict.py
# jsis_runtime from the source tree (no setuptools, no jsis_d2 in this image).
ENV PYTHONPATH=/workspace/jsis_d2
RUN python -c "import sys, jsis_runtime.cli, onnxruntime; \
assert not {'torch', 'detectron2', 'cv2'} & set(sys.modules); \
print('jsis_runtime with onnxruntime', onnxruntime.__version__)"
ENTRYPOINT ["python", "tools/predict.py", "--backend", "onnx"]
CMD ["--help"]

# --- runtime base: what both stages share (the final image's Python is this one) ---
FROM ${BASE_IMAGE} AS runtime-base
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# --- build stage: the venv with torch and detectron2 (its CUDA ops compiled here) ---
FROM runtime-base AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3-dev build-essential ninja-build git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

ARG PIP_WHEELHOUSE=
COPY requirements/ /tmp/requirements/
RUN pip install ${PIP_WHEELHOUSE:+--no-index --find-links=$PIP_WHEELHOUSE} \
        -r /tmp/requirements/base.txt -r /tmp/requirements/detectron2-official.txt

# Official detectron2 at 02b5c4e (2026-06-06, the newest commit; version 0.6): CPU launch()
# with gloo, fairscale/timm optional. No GPU at build time: FORCE_CUDA + the arch list.
ARG DETECTRON2_SOURCE=git+https://github.com/facebookresearch/detectron2.git@02b5c4e295e990042a714712c21dc79b731e8833
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;9.0;10.0;12.0+PTX"
ARG MAX_JOBS=
RUN CUDA_HOME=/usr/local/cuda FORCE_CUDA=1 \
        pip install ${PIP_WHEELHOUSE:+--no-index --find-links=$PIP_WHEELHOUSE} \
        --use-pep517 --no-build-isolation --no-deps "$DETECTRON2_SOURCE" \
    && cd / && python -c "import detectron2._C as C; \
assert C.has_cuda(), 'detectron2._C was built without CUDA ops'; \
print('detectron2._C:', C.get_cuda_version(), 'ops for archs $TORCH_CUDA_ARCH_LIST')"

# --- final image: runtime base + the venv; no wheelhouse, source tree or build-time env ---
FROM runtime-base
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DETECTRON2_DATASETS=/datasets

WORKDIR /workspace/jsis_d2
COPY . .
RUN pip install --no-index --use-pep517 --no-build-isolation --no-deps -e . \
    && python -c "import jsis_d2, detectron2, detectron2._C as C; \
assert C.has_cuda(); print('jsis_d2 on detectron2', detectron2.__version__)"

ENTRYPOINT ["python", "tools/train_net.py"]
CMD ["--help"]
