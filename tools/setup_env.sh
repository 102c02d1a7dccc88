#!/usr/bin/env bash
# One-command environment for jsis_d2 on a CPU machine (Linux x86_64, Python 3.11).
#
#   bash tools/setup_env.sh          # or: make setup
#
# Creates ./.venv and installs exactly pinned versions: torch/torchvision, detectron2 v0.6
# (the `pb1-detectron2` sdist, built without its C++/CUDA ops, which it does not ship),
# pycocotools, panopticapi (`panopticapi-lite`), opencv-python-headless, fvcore, and this
# project in editable mode. Re-running it is a no-op (a stamp records what was installed).
#
# Users who already have official detectron2 do NOT need this script:
#   pip install -e .
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
D2_SDIST=pb1-detectron2-0.6.tar.gz
D2_URL=https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/$D2_SDIST
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
# Pins shared with the Dockerfile (keep them in sync).
PINNED_DEPS=(
  "setuptools<81"            # detectron2 0.6's model_zoo imports pkg_resources
  "numpy==1.26.4"            # panopticapi-lite requires numpy<2
  "pycocotools==2.0.11"
  "panopticapi-lite==0.2.0"
  "opencv-python-headless==4.10.0.84"
  "fvcore==0.1.5.post20221221"
  "iopath==0.1.9"
  "matplotlib==3.9.4"
  "Pillow==11.3.0"
  "pytest==8.3.5"
)

stamp="$VENV/.jsis_d2_setup"
want=$(cat "$0" setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$VENV/bin/python" -c "import torch, detectron2, jsis_d2" 2>/dev/null; then
  echo "setup_env: $VENV is up to date (nothing to do)."
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# 1. torch + torchvision: exactly this pair (other versions download several GB here).
"${pip[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "${PINNED_DEPS[@]}"

# 2. detectron2 v0.6 from the pb1-detectron2 sdist, without compiled ops.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('pb1-detectron2') == '0.6'" 2>/dev/null; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/python" - "$D2_URL" "$tmp/$D2_SDIST" "$D2_SHA256" <<'PY'
import hashlib, sys, urllib.request
url, dest, sha = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
got = hashlib.sha256(data).hexdigest()
if got != sha:
    sys.exit(f"setup_env: {url}: sha256 {got} != expected {sha}")
open(dest, "wb").write(data)
PY
  tar -xzf "$tmp/$D2_SDIST" -C "$tmp"
  # The sdist lacks detectron2/layers/csrc: build it as pure Python.
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$tmp/pb1-detectron2-0.6/setup.py"
  grep -q 'ext_modules=\[\],' "$tmp/pb1-detectron2-0.6/setup.py" \
    || { echo "setup_env: could not disable ext_modules in the detectron2 sdist" >&2; exit 1; }
  "${pip[@]}" --no-build-isolation "$tmp/pb1-detectron2-0.6"
fi

# 3. The project itself, editable.
"${pip[@]}" --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import jsis_d2, detectron2, torch; print('setup_env: ok: torch', torch.__version__, 'detectron2', detectron2.__version__)"
echo "$want" > "$stamp"
