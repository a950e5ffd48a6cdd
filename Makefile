# Two commands on a fresh machine with only Python 3.11+:
#   make demo   set up .venv, write sample inputs, run configs/demo.yaml
#   make test   set up .venv, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.voxpipe-installed

.PHONY: setup demo test lint bench bench-peers bench-all bench-denoise-real bench-brain-tissue clean

setup: $(STAMP)

# torch is pinned here (the CPU build) and installed first, so pip never pulls a CUDA build;
# the package itself only asks for torch>=2.4.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: setup
	@# the inputs are written once: new sample series would get new UIDs, so new case ids
	test -d build/demo/input || $(BIN)/voxpipe sample-data -o build/demo/input --ct-series 3
	$(BIN)/voxpipe run configs/demo.yaml -i build/demo/input -o build/demo/output --workers 2
	@echo "outputs: build/demo/output (one folder per CT case, manifest.json, report.html)"

test: setup lint
	$(BIN)/python -m pytest -q

# ruff (lint and format check; configured in pyproject.toml): part of `make test`, so of CI.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-peers: setup
	$(BIN)/python -m pip install --quiet -e '.[bench-peers]'

bench: setup
	$(BIN)/python benchmarks/cli_startup.py --write

# Every benchmark, each rewriting its own section of docs/benchmarks.md (tens of minutes on 2 cores).
bench-all: bench
	$(BIN)/python benchmarks/dicom_load.py --write
	$(BIN)/python benchmarks/denoise_nlm.py --write
	$(BIN)/python benchmarks/enhance_pipeline.py --write
	$(BIN)/python benchmarks/classical_recipes.py --write
	$(BIN)/python benchmarks/deep_inference.py --write
	$(BIN)/python benchmarks/vgg_extract.py --write

# Against the heavy peers (bench-peers: BM3D/BM4D, DIPY, nilearn, ANTs); each takes 5-20 min on 2 cores.
bench-denoise-real: bench-peers
	nice -n 10 $(BIN)/python benchmarks/denoise_real.py --write

bench-brain-tissue: bench-peers
	nice -n 10 $(BIN)/python benchmarks/brain_tissue.py --write

clean:
	rm -rf build $(VENV)
