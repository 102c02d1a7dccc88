#!/usr/bin/env bash
# One command for a lent GPU machine (one GPU, Python 3.12 with its own torch and nvcc, no
# network): CUDA tests, a short R50-C4 AMP training on synthetic data, inference latency in
# fp32/bf16/fp16, joint vs two networks on the GPU -> one JSON (dev/gpu_check.py).
#
#   dev/gpu_check.sh --prepare-wheels DIR   # CPU side, with network: the cp312 wheels
#   dev/gpu_check.sh --wheels DIR [--out F] # GPU side: install from DIR (offline), run
#   dev/gpu_check.sh --cpu [--out F]        # dry run here, tiny sizes, current python
#   --lean (with --prepare-wheels and --wheels): only what the lent H200 image lacks (~4 MB
#     instead of ~112 MB, under the device tool's 64 MiB carry limit); NumPy, Pillow, OpenCV,
#     matplotlib, TensorBoard, PyYAML, tqdm, tabulate, ... come from the machine, unpinned.
#
# Options: --python PY (default python3.12 on the GPU side, python3 with --cpu),
# --train-iters N, --skip-tests. Output: --out (default output/gpu_check.json). The run is
# sized to finish in about 5 minutes on one H200 (outside: installing the wheels, ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=gpu wheels= out=output/gpu_check.json py= extra=() lean=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare-wheels) mode=prepare; wheels=${2:?--prepare-wheels needs a folder}; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --cpu) mode=cpu ;;
    --lean) lean=1 ;;
    --out) out=${2:?--out needs a file}; shift ;;
    --python) py=${2:?--python needs an interpreter}; shift ;;
    --train-iters) extra+=(--train-iters "${2:?}"); shift ;;
    --skip-tests) extra+=(--skip-tests) ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# pb1-detectron2 0.6 sdist, fetched through pip (the user's index, proxy and CA settings
# apply) and checked by hash, as dev/setup_env.sh does.
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
# Runtime packages beyond torch (requirements/base.txt's pins, minus torch and the test-only
# extras) and detectron2 0.6's own runtime imports; torchvision is installed on the GPU side
# only when that python lacks it.
pins() { grep -vE '^\s*(#|$)|^(torch|torchvision|wheel)(==|$)' requirements/base.txt | sed 's/\s*#.*//'; }
# (panopticapi-lite goes in without its dependencies: scipy and scikit-image alone are ~50 MB
# and only its pq_compute, which the GPU check does not run, needs them.)
D2_RUNTIME=(termcolor yacs tabulate cloudpickle tqdm "omegaconf>=2.1" "hydra-core>=1.1" tensorboard)
# --lean: the packages of the chain that the lent H200 image does not hold (its package list:
# the device tool's KINDS.md), installed with --no-deps over the machine's own.
LEAN=(termcolor yacs "omegaconf>=2.1" "hydra-core>=1.1" "pycocotools==2.0.11")

if [ "$mode" = prepare ]; then
  py=${py:-python3}
  mkdir -p "$wheels"
  build=$(mktemp -d); trap 'rm -rf "$build"' EXIT
  # 1. detectron2 0.6 (pb1 sdist) as a pure-Python wheel, without its compiled ops.
  "$py" -m pip download -q --no-deps --no-build-isolation -d "$build" "pb1-detectron2==0.6"
  sdist=$(ls "$build"/pb1[-_]detectron2-0.6.tar.gz)
  [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$D2_SHA256" ] \
    || { echo "gpu_check: $sdist: sha256 mismatch" >&2; exit 1; }
  tar -xzf "$sdist" -C "$build"
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$build/pb1-detectron2-0.6/setup.py"
  "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" "$build/pb1-detectron2-0.6"
  # 2. Packages published only as sdists (pure Python): built here into py3 wheels.
  "$py" -m pip wheel -q --no-deps -w "$wheels" "fvcore==0.1.5.post20221221" \
    "antlr4-python3-runtime==4.9.3" "panopticapi-lite==0.2.0" "iopath==0.1.9"
  if [ "$lean" = 1 ]; then
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --abi cp312 --abi abi3 --abi none --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -d "$wheels" "${LEAN[@]}"
    echo "gpu_check: $(ls "$wheels" | wc -l) wheels in $wheels ($(du -sh "$wheels" | cut -f1));"\
         "run there: dev/gpu_check.sh --lean --wheels $wheels"
    exit 0
  fi
  # 3. Everything else as cp312 manylinux binaries, dependencies resolved for that target.
  mapfile -t base < <(pins | grep -v '^panopticapi')
  "$py" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 --find-links "$wheels" \
    -d "$wheels" "${base[@]}" "${D2_RUNTIME[@]}"
  "$py" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 -d "$wheels/torchvision" \
    "torchvision==0.29.1"
  echo "gpu_check: $(ls "$wheels" | wc -l) wheels in $wheels ($(du -sh "$wheels" | cut -f1));"\
       "copy it with the repo and run: dev/gpu_check.sh --wheels $wheels"
  exit 0
fi

if [ "$mode" = cpu ]; then
  py=${py:-python3}
  PYTHONPATH=$PWD "$py" dev/gpu_check.py --cpu --out "$out" "${extra[@]}"
  exit $?
fi

py=${py:-python3.12}
venv=${GPU_CHECK_VENV:-/tmp/jsis_gpu_check_venv}
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'" \
  || { echo "gpu_check: $py has no CUDA torch (use --cpu for a dry run)" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  [ -n "$wheels" ] || { echo "gpu_check: --wheels DIR is needed (make it with --prepare-wheels)" >&2; exit 2; }
  "$py" -m venv --system-site-packages "$venv"   # keeps the machine's own torch
  vpip=("$venv/bin/python" -m pip install -q --no-index --find-links "$wheels")
  if [ "$lean" = 1 ]; then
    "${vpip[@]}" --no-deps "$wheels"/*.whl
  else
    mapfile -t base < <(pins | grep -v '^panopticapi')
    "$venv/bin/python" -c "import torchvision" 2>/dev/null \
      || "$venv/bin/python" -m pip install -q --no-index --no-deps "$wheels"/torchvision/*.whl
    "${vpip[@]}" "${base[@]}" "${D2_RUNTIME[@]}"
    "${vpip[@]}" --no-deps pb1-detectron2 panopticapi-lite
  fi
fi
PYTHONPATH=$PWD "$venv/bin/python" dev/gpu_check.py --out "$out" "${extra[@]}"
