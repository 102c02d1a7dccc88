# GPU training image for jsis_d2: CUDA devel base, PyTorch, OFFICIAL detectron2 built from
# source at a pinned commit WITH its CUDA ops, and this project. Entry point: tools/train_net.py.
#
#   docker build -t jsis_d2 .
#   docker run --gpus all --shm-size 8g \
#     -v /data/datasets:/datasets -v $PWD/output:/output jsis_d2 \
#     --config-file configs/COCO-PanopticSegmentation/jsis_R50_C4_8ep.yaml --num-gpus 8 \
#     OUTPUT_DIR /output/coco_8ep
#
# Pins shared with tools/setup_env.sh (keep in sync): torch/torchvision, numpy, pycocotools,
# panopticapi-lite, opencv-python-headless, fvcore, iopath, matplotlib, Pillow, setuptools.
# torch 2.14.1 wheels from PyPI are CUDA 13.0 builds, hence the CUDA 13.0 devel base.
FROM nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-dev python3-venv git ninja-build build-essential \
        libglib2.0-0 libgl1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN pip install torch==2.14.1 torchvision==0.29.1 \
        "setuptools<81" numpy==1.26.4 pycocotools==2.0.11 panopticapi-lite==0.2.0 \
        opencv-python-headless==4.10.0.84 fvcore==0.1.5.post20221221 iopath==0.1.9 \
        matplotlib==3.9.4 Pillow==11.3.0 pytest==8.3.5 wheel

# Official detectron2 with its C++/CUDA ops (no GPU at build time: FORCE_CUDA + arch list).
ARG DETECTRON2_COMMIT=2dde706855d87baa9760fbcd0bdb6004a3937204
ARG TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0"
ENV FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
RUN pip install --no-build-isolation \
        "git+https://github.com/facebookresearch/detectron2.git@${DETECTRON2_COMMIT}"

WORKDIR /workspace/jsis_d2
COPY . .
RUN pip install --no-build-isolation --no-deps -e . \
    && python -c "import jsis_d2, detectron2._C; print('detectron2', __import__('detectron2').__version__)"

ENV DETECTRON2_DATASETS=/datasets
ENTRYPOINT ["python", "tools/train_net.py"]
CMD ["--help"]
