# whitebox: every install step lives here, so a fresh clone needs only python3 (>= 3.10) and make.
#
#   make demo        venv + `pip install -e .`, then `python -m whitebox demo`
#   make test        venv + `pip install -e '.[dev,torch,distributed]'`, then the whole test suite (pytest-xdist)
#   make lint        ruff check + ruff format --check
#   make bench       benchmarks/train_step.py
#   make gpu-check   benchmarks/gpu_check.py: CUDA tests, GPU step timings, CuPy vs NumPy (< 8 min)
#   make notebooks   re-execute tutorials/*.ipynb in place, at full size, and stamp them (tutorials/stamp.py)
#   make clean       caches and build leftovers (keeps .venv; `make distclean` removes it too)
#
# Knobs: PYTHON=python3.11, DEMO_ARGS=..., PYTEST_ARGS=..., BENCH_ARGS=..., GPU_CHECK_OUT=...,
#        NOTEBOOKS="tutorials/03_x.ipynb".

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# -q keeps pip to warnings and errors; the version check would need the network for nothing.
PIP := $(PY) -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev

DEMO_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
NOTEBOOKS ?= $(sort $(wildcard tutorials/*.ipynb))

# Figures from headless runs (CI has no display).
export MPLBACKEND ?= Agg

.PHONY: help demo test lint format bench gpu-check notebooks clean distclean

help:
	@sed -n '3,10p' Makefile | sed 's/^# \{0,1\}//'

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PIP) install -e '.[dev,torch,distributed]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(PY) -m whitebox demo $(DEMO_ARGS)

# One BLAS thread per pytest-xdist worker: workers x BLAS threads > cores makes OpenBLAS spin.
test: $(STAMP_DEV)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n auto -q $(PYTEST_ARGS) tests

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP_DEV)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP_DEV)
	$(PY) benchmarks/train_step.py $(BENCH_ARGS)

# Without a GPU it says so and exits 0. GPU_CHECK_OUT: where the JSON and text summary go.
GPU_CHECK_OUT ?= gpu_check
gpu-check: $(STAMP_DEV)
	$(PY) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT)

# Full size: WHITEBOX_SMALL and WHITEBOX_FIGURES unset, so figures land in figures/. Each notebook is
# executed in place and stamped with hashes of the sources it loaded (tutorials/stamp.py), which
# tests/test_notebooks.py compares with the checkout to catch outputs older than the code.
notebooks: $(STAMP_DEV)
	env -u WHITEBOX_SMALL -u WHITEBOX_FIGURES PYTHONPATH=$(CURDIR) $(PY) tutorials/stamp.py execute $(NOTEBOOKS)

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	rm -f $(STAMP) $(STAMP_DEV)

distclean: clean
	rm -rf $(VENV)
