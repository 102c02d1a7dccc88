# jsis_d2 — the commands the README documents. Everything runs inside ./.venv.
VENV ?= .venv
PY := $(VENV)/bin/python
OUTPUT ?= output/demo

.PHONY: setup test demo overfit ablation benchmark clean

setup:            ## create .venv with the pinned stack + the project (idempotent)
	bash tools/setup_env.sh

test: setup       ## the whole test suite (CPU)
	$(PY) -m pytest -q tests

demo: setup       ## synthetic dataset -> train from scratch on CPU -> evaluate -> pictures
	$(PY) tools/run_demo.py --output $(OUTPUT)

overfit: setup    ## memorize the 2 real COCO images of ../shared (PQ >= 80 expected; minutes)
	$(PY) tools/overfit_check.py --output output/overfit

ablation: setup   ## paper Table 3 on the synthetic data (3 trainings)
	$(PY) tools/ablation.py --output output/ablation

benchmark: setup  ## every benchmark (topk needs `make demo` first)
	$(PY) tools/benchmark.py all --output output/benchmark

clean:
	rm -rf output .pytest_cache
