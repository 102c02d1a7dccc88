# jsis_d2 — the commands the README and its pages document. Everything runs inside one venv per stack:
#   DETECTRON2=pb1 (default)  ./.venv             detectron2 0.6 sdist, no compiled ops
#   DETECTRON2=official       ./.venv-d2official  official detectron2 built with its C++ ops
DETECTRON2 ?= pb1
ifeq ($(DETECTRON2),official)
VENV ?= .venv-d2official
else
VENV ?= .venv
endif
export DETECTRON2
PY := $(VENV)/bin/python
OUTPUT ?= output/demo
BENCH_OUT ?= output/benchmark

.PHONY: setup test lint demo overfit ablation benchmark benchmark-readme docker-check clean

setup:            ## create the stack's venv with the pinned stack + the project (idempotent)
	VENV=$(VENV) bash dev/setup_env.sh

test: setup       ## the whole test suite (CPU)
	$(PY) -m pytest -q tests

lint: setup       ## ruff: lint rules and format check (settings in pyproject.toml)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

demo: setup       ## synthetic dataset -> train from scratch on CPU -> evaluate -> pictures
	$(PY) tools/run_demo.py --output $(OUTPUT)

overfit: setup    ## memorize the 2 real COCO images of ../shared (aim PQ >= 80; ~21 min)
	$(PY) tools/overfit_check.py --output output/overfit

ablation: setup   ## paper Table 3 on the synthetic data (3 trainings)
	$(PY) tools/ablation.py --output output/ablation

benchmark: setup  ## every benchmark (topk needs `make demo` first); JSON + markdown in BENCH_OUT
	$(PY) tools/benchmark.py all --output $(BENCH_OUT)

# The tables of docs/BENCHMARKS.md are generated from the committed JSON in docs/benchmarks:
# `make benchmark BENCH_OUT=docs/benchmarks && make benchmark-readme` refreshes both.
benchmark-readme: setup  ## refill docs/BENCHMARKS.md's tables from docs/benchmarks/*.json
	$(PY) tools/benchmark.py readme --results docs/benchmarks

# Not part of CI: needs dockerd, debootstrap and root; builds a stand-in of the GPU image
# (no GPU, no registry access) and runs the suite and the quick demo inside it. README.
docker-check:     ## build the Dockerfile's image on a stand-in CUDA 13.0 base; test inside it
	bash dev/docker_check.sh

clean:
	rm -rf output .pytest_cache
