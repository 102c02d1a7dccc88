#!/usr/bin/env bash
# One-command environment for jsis_d2 on a CPU machine (Linux x86_64, Python 3.11).
#
#   bash dev/setup_env.sh                        # or: make setup   (stack "pb1", ./.venv)
#   DETECTRON2=official bash dev/setup_env.sh    # or: make setup DETECTRON2=official
#
# Two stacks, the same pinned torch/NumPy/... (requirements/base.txt):
#   pb1       ./.venv: detectron2 v0.6 from the `pb1-detectron2` sdist (fetched with
#             `pip download`, so the user's index, proxy and CA settings apply), built as
#             pure Python: the sdist does not ship the C++/CUDA ops (jsis_d2.compat stands
#             in for them).
#   official  ./.venv-d2official: official detectron2 built from source WITH its compiled
#             C++ ops (CUDA ops too when CUDA_HOME/FORCE_CUDA say so), its dependencies
#             pinned (requirements/detectron2-official.txt). Source: DETECTRON2_SOURCE, a
#             path (tarball or checkout) or a pip URL; default ../shared/vendor's tarball of
#             the pinned commit when present, else that commit on GitHub.
# Re-running it is a no-op (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DETECTRON2=${DETECTRON2:-pb1}
# The official commit the project is tested against (2026-06-06; still reports 0.6).
D2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
D2_VENDORED=../shared/vendor/detectron2-${D2_COMMIT:0:7}.tar.gz
# pb1-detectron2 0.6 sdist, verified by hash whichever index serves it.
PB1_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

case "$DETECTRON2" in
  pb1)
    VENV=${VENV:-.venv}
    source_id="pb1-detectron2==0.6 sha256:$PB1_SHA256" ;;
  official)
    VENV=${VENV:-.venv-d2official}
    if [ -z "${DETECTRON2_SOURCE:-}" ]; then
      if [ -f "$D2_VENDORED" ]; then DETECTRON2_SOURCE=$D2_VENDORED
      else DETECTRON2_SOURCE="git+https://github.com/facebookresearch/detectron2.git@$D2_COMMIT"; fi
    fi
    source_id="$DETECTRON2_SOURCE" ;;
  *)
    echo "setup_env: DETECTRON2=$DETECTRON2 is not a stack: use pb1 (default) or official" >&2
    exit 2 ;;
esac

stamp="$VENV/.jsis_d2_setup"
want=$(cat "$0" setup.py requirements/*.txt <(echo "$source_id") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$VENV/bin/python" -c "import torch, detectron2, jsis_d2" 2>/dev/null; then
  echo "setup_env: $VENV ($DETECTRON2 detectron2) is up to date (nothing to do)."
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. torch + torchvision + the rest, exactly pinned (other torch pairs download several GB).
"${pip[@]}" install -r requirements/base.txt -r requirements/lint.txt

# 2. detectron2.
installed_d2() {  # prints the installed detectron2 distribution ("pb1-detectron2 0.6", ...)
  "$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
for name in ("pb1-detectron2", "detectron2"):
    try:
        print(name, m.version(name))
        break
    except m.PackageNotFoundError:
        pass
PY
}
if [ "$DETECTRON2" = pb1 ]; then
  if [ "$(installed_d2)" != "pb1-detectron2 0.6" ]; then
    "${pip[@]}" download --no-deps --no-build-isolation -d "$tmp" "pb1-detectron2==0.6"
    sdist=$(ls "$tmp"/pb1[-_]detectron2-0.6.tar.gz)
    got=$(sha256sum "$sdist" | cut -d' ' -f1)
    [ "$got" = "$PB1_SHA256" ] \
      || { echo "setup_env: $sdist: sha256 $got != expected $PB1_SHA256" >&2; exit 1; }
    tar -xzf "$sdist" -C "$tmp"
    src=$(ls -d "$tmp"/pb1[-_]detectron2-0.6)
    # The sdist lacks detectron2/layers/csrc: build it as pure Python.
    sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
    grep -q 'ext_modules=\[\],' "$src/setup.py" \
      || { echo "setup_env: could not disable ext_modules in the detectron2 sdist" >&2; exit 1; }
    "${pip[@]}" install --no-build-isolation --use-pep517 "$src"
  fi
else
  "${pip[@]}" install -r requirements/detectron2-official.txt
  if [ "$(installed_d2)" != "detectron2 0.6" ] || [ ! -f "$stamp" ] \
     || ! "$VENV/bin/python" -c "from detectron2 import _C" 2>/dev/null; then
    case "$DETECTRON2_SOURCE" in
      *.tar.gz|*.tgz)
        tar -xzf "$DETECTRON2_SOURCE" -C "$tmp"
        src=$(dirname "$(ls "$tmp"/*/setup.py | head -1)") ;;
      *) src=$DETECTRON2_SOURCE ;;
    esac
    echo "setup_env: building official detectron2 from $DETECTRON2_SOURCE (a few minutes)"
    # --use-pep517: setuptools' legacy `develop`/install path re-runs pip with build isolation
    # (needs the index, ignores the setuptools pin); --no-deps: the pins above are its deps.
    "${pip[@]}" install --no-build-isolation --use-pep517 --no-deps "$src"
  fi
  "$VENV/bin/python" -c "from detectron2 import _C; print('setup_env: detectron2._C built,', 'CUDA ops' if _C.has_cuda() else 'CPU ops')"
fi

# 3. The project itself, editable.
"${pip[@]}" install --no-build-isolation --use-pep517 --no-deps -e .
"$VENV/bin/python" -c "import jsis_d2, detectron2, torch; print('setup_env: ok: torch', torch.__version__, 'detectron2', detectron2.__version__, 'from', detectron2.__file__)"
echo "$want" > "$stamp"
