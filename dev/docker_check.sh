#!/usr/bin/env bash
# Build the Dockerfile's image on a machine WITHOUT a GPU or registry access, and run the
# whole test suite and the quick demo inside it.
#
#   make docker-check            # or: bash dev/docker_check.sh
#
# Needs: a running dockerd (no bridge needed: everything uses --network host), debootstrap,
# root, python3 with pip (the same minor version as the stand-in's Python, 3.11), PyPI and
# Debian's archive. Steps (each cached; re-running reuses what is there):
#   1. stand-in base image: Debian bookworm minbase (debootstrap) + a CUDA 13.0 toolkit tree
#      assembled from NVIDIA's PyPI wheels (nvcc, crt, nvvm, cccl, cudart; the cuBLAS,
#      cuSPARSE, cuSOLVER, cuRAND, cuFFT headers), in place of nvidia/cuda:13.0.0-devel;
#   2. a wheelhouse of every pin in requirements/ built on the host (the container's pip
#      cannot verify the registries' certificate here), served with the vendored official
#      detectron2 source (../shared/vendor) on 127.0.0.1 while the image builds;
#   3. `docker build` of the repository's Dockerfile with those as build args
#      (TORCH_CUDA_ARCH_LIST=9.0 to keep it short);
#   4. in the container: has_cuda(), no build-time env, the whole suite, run_demo.py --quick;
#   5. the `deploy` target (ONNX runtime only) on a plain bookworm minbase: no torch in it, its
#      size; the quick demo's checkpoint exported with the full image, its predictions with
#      the deploy image compared with the PyTorch backend's (jsis_runtime.compare).
# Not part of CI. Environment overrides: DOCKER_CACHE, SHARED, IMAGE, ARCHS, MAX_JOBS,
# DOCKER_CHECK_PORT, DEBIAN_MIRROR, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CACHE=${DOCKER_CACHE:-$REPO/output/docker-cache}
SHARED=${SHARED:-$(dirname "$REPO")/shared}
IMAGE=${IMAGE:-jsis_d2:standin}
DEPLOY_IMAGE=${DEPLOY_IMAGE:-jsis_d2:deploy-standin}
BASE_TAG=jsis_d2-standin-base:bookworm-cuda13.0
DEPLOY_BASE_TAG=jsis_d2-standin-base:bookworm   # the same minbase without CUDA (deploy stage)
ARCHS=${ARCHS:-9.0}
MAX_JOBS=${MAX_JOBS:-2}
PORT=${DOCKER_CHECK_PORT:-38641}   # fixed: the URLs are build args, part of the cache key
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
STANDIN_PY=3.11                    # Debian bookworm's python3
D2_TARBALL=detectron2-02b5c4e.tar.gz
# CUDA 13.0 from PyPI: whole wheels, then wheels of which only the headers are needed.
CUDA_WHOLE=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
            nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96)
CUDA_HEADERS=(nvidia-cublas==13.1.1.3 nvidia-cusparse==12.6.3.3 nvidia-cusolver==12.0.4.66
              nvidia-curand==10.4.0.35 nvidia-cufft==12.0.0.61)

t_start=$SECONDS
timings=()
step() { echo; echo "== docker-check: $* ($(date -u +%H:%M:%S) UTC)"; t_step=$SECONDS; }
done_step() { local d=$((SECONDS - t_step)); timings+=("$(printf '%-34s %4d min %02d s' "$1" $((d / 60)) $((d % 60)))"); }
die() { echo "docker-check: $*" >&2; exit 2; }

docker info >/dev/null 2>&1 || die "no Docker daemon (start one: dockerd --bridge=none --iptables=false)"
mkdir -p "$CACHE"

# 1. The stand-in base image.
step "stand-in base image $BASE_TAG"
if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  echo "reusing $BASE_TAG"
else
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  work="$CACHE/base-build"
  rm -rf "$work"; mkdir -p "$work/wheels" "$work/cuda-13.0"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $work/debootstrap.log)"
  "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    -d "$work/wheels" "${CUDA_WHOLE[@]}" "${CUDA_HEADERS[@]}"
  "$PYTHON" - "$work/wheels" "$work/cuda-13.0" "${CUDA_HEADERS[@]%%==*}" <<'PY'
import pathlib, sys, zipfile
wheels, dest, header_only = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
header_only = {n.replace("-", "_") for n in header_only}
for whl in sorted(wheels.glob("*.whl")):
    only_include = whl.name.split("-")[0] in header_only
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[:2] != ["nvidia", "cu13"] or info.is_dir() or len(parts) < 4:
                continue
            top = "lib64" if parts[2] == "lib" else parts[2]
            if only_include and top != "include":
                continue
            out = dest.joinpath(top, *parts[3:])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(info))
            out.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
PY
  ln -s libcudart.so.13 "$work/cuda-13.0/lib64/libcudart.so"
  [ -x "$work/cuda-13.0/bin/nvcc" ] && [ -f "$work/cuda-13.0/include/cusparse.h" ] \
    || die "incomplete CUDA tree in $work/cuda-13.0"
  mv "$work/cuda-13.0" "$work/rootfs/usr/local/cuda-13.0"
  ln -s cuda-13.0 "$work/rootfs/usr/local/cuda"
  docker image inspect "$DEPLOY_BASE_TAG" >/dev/null 2>&1 \
    || tar --numeric-owner -C "$work/rootfs" --exclude ./usr/local/cuda-13.0 -c . \
       | docker import - "$DEPLOY_BASE_TAG" >/dev/null
  tar --numeric-owner -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CUDA_VERSION=13.0' - "$BASE_TAG" >/dev/null
  rm -rf "$work"
fi
if ! docker image inspect "$DEPLOY_BASE_TAG" >/dev/null 2>&1; then  # a cache from before
  work="$CACHE/deploy-base-build"
  rm -rf "$work"; mkdir -p "$work"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $work/debootstrap.log)"
  tar --numeric-owner -C "$work/rootfs" -c . | docker import - "$DEPLOY_BASE_TAG" >/dev/null
  rm -rf "$work"
fi
done_step "stand-in base image"

# The Dockerfile's default arch list must be valid for CUDA 13.0's nvcc.
default_archs=$(sed -n 's/^ARG TORCH_CUDA_ARCH_LIST="\(.*\)"$/\1/p' Dockerfile)
[ -n "$default_archs" ] || die "Dockerfile: no ARG TORCH_CUDA_ARCH_LIST=\"...\" line"
nvcc_archs=$(docker run --rm --network host "$BASE_TAG" nvcc --list-gpu-arch | tr '\n' ' ')
for a in ${default_archs//;/ }; do
  a=${a%+PTX}
  case " $nvcc_archs " in *" compute_${a/./} "*) ;;
    *) die "Dockerfile's TORCH_CUDA_ARCH_LIST has $a, which CUDA 13.0's nvcc lacks ($nvcc_archs)";; esac
done
echo "Dockerfile default archs $default_archs: all in nvcc's list ($nvcc_archs)"

# 2. The wheelhouse (rebuilt when requirements/ change) and the detectron2 source.
step "wheelhouse"
host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$host_py" = "$STANDIN_PY" ] || die "$PYTHON is $host_py; the wheelhouse needs Python $STANDIN_PY (set PYTHON=)"
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$CACHE/wheels/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "reusing $CACHE/wheels"
else
  rm -rf "$CACHE/wheels" "$CACHE/wheels.tmp"
  "$PYTHON" -m pip wheel --disable-pip-version-check -q -w "$CACHE/wheels.tmp" \
    -r requirements/base.txt -r requirements/detectron2-official.txt
  "$PYTHON" -m pip wheel --disable-pip-version-check -q -w "$CACHE/wheels.tmp" \
    -r requirements/deploy.txt
  mv "$CACHE/wheels.tmp" "$CACHE/wheels"
  echo "$want" > "$CACHE/wheels/.stamp"
fi
echo "$(ls "$CACHE/wheels" | wc -l) wheels, $(du -sh "$CACHE/wheels" | cut -f1)"
[ -f "$SHARED/vendor/$D2_TARBALL" ] || die "$SHARED/vendor/$D2_TARBALL not found (set SHARED=)"
cp -p "$SHARED/vendor/$D2_TARBALL" "$CACHE/$D2_TARBALL"
done_step "wheelhouse"

# Serve the cache on the loopback only for the build (the build runs with --network host).
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$CACHE" "$PORT" >"$CACHE/http.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/$D2_TARBALL', timeout=2)" 2>/dev/null && break
  kill -0 $server 2>/dev/null || die "could not serve $CACHE on 127.0.0.1:$PORT (port in use? set DOCKER_CHECK_PORT)"
  sleep 0.2
done

# 3. The image, from the repository's Dockerfile.
step "docker build $IMAGE (TORCH_CUDA_ARCH_LIST=$ARCHS, MAX_JOBS=$MAX_JOBS)"
docker build --network host -t "$IMAGE" \
  --build-arg BASE_IMAGE="$BASE_TAG" \
  --build-arg DEPLOY_BASE_IMAGE="$DEPLOY_BASE_TAG" \
  --build-arg PIP_WHEELHOUSE="http://127.0.0.1:$PORT/wheels/" \
  --build-arg DETECTRON2_SOURCE="http://127.0.0.1:$PORT/$D2_TARBALL" \
  --build-arg TORCH_CUDA_ARCH_LIST="$ARCHS" \
  --build-arg MAX_JOBS="$MAX_JOBS" .
done_step "docker build"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")

step "docker build --target deploy $DEPLOY_IMAGE"
docker build --network host --target deploy -t "$DEPLOY_IMAGE" \
  --build-arg DEPLOY_BASE_IMAGE="$DEPLOY_BASE_TAG" \
  --build-arg PIP_WHEELHOUSE="http://127.0.0.1:$PORT/wheels/" .
kill $server 2>/dev/null || true
done_step "docker build --target deploy"
deploy_size=$(docker image inspect -f '{{.Size}}' "$DEPLOY_IMAGE")

# 4. Inside the container.
step "checks inside $IMAGE"
run=(docker run --rm --network host --shm-size 1g --entrypoint python)
env_leak=$(docker image inspect -f '{{join .Config.Env "\n"}}' "$IMAGE" \
  | grep -E '^(FORCE_CUDA|TORCH_CUDA_ARCH_LIST|MAX_JOBS|PIP_WHEELHOUSE|DETECTRON2_SOURCE|CUDA_HOME)=' || true)
[ -z "$env_leak" ] || die "build-time variables in the image's env: $env_leak"
"${run[@]}" -i "$IMAGE" - <<'PY'
import glob, detectron2, detectron2._C as C
assert C.has_cuda(), "detectron2._C has no CUDA ops"
left = [p for pat in ("/opt/venv/**/*.whl", "/tmp/pip-*", "/tmp/requirements", "/tmp/*.tar.gz", "/workspace/**/*.tar.gz",
                      "/workspace/jsis_d2/output*")
        for p in glob.glob(pat, recursive=True)]
assert not left, f"build leftovers in the image: {left[:5]}"
print("detectron2", detectron2.__version__, "from", detectron2.__file__,
      "| _C:", C.get_cuda_version(), "| no wheels or sources left")
PY
done_step "image checks"

step "test suite inside the container"
mount=()
if [ -d "$SHARED" ]; then mount=(-v "$(cd "$SHARED" && pwd)":/workspace/shared:ro); fi
"${run[@]}" "${mount[@]}" "$IMAGE" -m pytest -q tests 2>&1 | tee "$CACHE/pytest.log"
done_step "test suite"

step "run_demo.py --quick inside the container"
"${run[@]}" "$IMAGE" tools/run_demo.py --quick --output /tmp/demo 2>&1 | tail -n 15
done_step "run_demo.py --quick"

step "deploy image: export with $IMAGE, predict with $DEPLOY_IMAGE, compare with PyTorch"
docker run --rm --network host --entrypoint python "$DEPLOY_IMAGE" -c "
import importlib.util as u
found = [m for m in ('torch', 'detectron2', 'jsis_d2', 'cv2', 'pycocotools') if u.find_spec(m)]
assert not found, f'the deploy image holds {found}'
print('deploy image: no torch, detectron2, jsis_d2, cv2 or pycocotools')"
work="$CACHE/deploy-check"
rm -rf "$work"; mkdir -p "$work"
vol=(-v "$work":/work)
val=(--image-info /work/demo/synthetic/val/panoptic_val.json --image-root /work/demo/synthetic/val/images)
"${run[@]}" "${vol[@]}" "$IMAGE" tools/run_demo.py --quick --output /work/demo 2>&1 | tail -n 3
"${run[@]}" "${vol[@]}" "$IMAGE" tools/export_model.py --config-file /work/demo/config.yaml \
  --output /work/export --opts MODEL.WEIGHTS /work/demo/model_final.pth 2>&1 | tail -n 3
"${run[@]}" "${vol[@]}" "$IMAGE" tools/predict.py --config-file /work/demo/config.yaml "${val[@]}" \
  --output /work/pytorch --no-progress --opts MODEL.WEIGHTS /work/demo/model_final.pth 2>&1 | tail -n 2
docker run --rm --network host "${vol[@]}" "$DEPLOY_IMAGE" --model /work/export "${val[@]}" \
  --output /work/onnx --no-progress 2>&1 | tail -n 2
"${run[@]}" "${vol[@]}" "$IMAGE" -m jsis_runtime.compare /work/pytorch /work/onnx 2>&1 \
  | grep -E "^(category agreement|PQ of B)" | tee "$CACHE/deploy-compare.log"
[ -s "$CACHE/deploy-compare.log" ] || die "the deploy comparison printed nothing"
done_step "deploy image check"

echo
echo "== docker-check passed: $IMAGE, $((size / 1000000)) MB ($(tail -n 1 "$CACHE/pytest.log"))"
echo "   deploy image $DEPLOY_IMAGE: $((deploy_size / 1000000)) MB; $(tr '\n' ' ' < "$CACHE/deploy-compare.log")"
printf '   %s\n' "${timings[@]}"
d=$((SECONDS - t_start)); printf '   %-34s %4d min %02d s\n' "total" $((d / 60)) $((d % 60))
