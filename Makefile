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

clean:
	rm -rf output .pytest_cache
