# Two entry points on a fresh machine: `make train` and `make test`. Both create the
# virtualenv and install the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup train test test-slow bench gpu-check gpu-wheels clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

train: setup  ## Train the default experiment (brax inverted_pendulum) on the CPU.
	$(PY) -m experiments.train

test: setup  ## Lint, then the test suite (long runs marked slow are left out), in 2 workers.
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile

test-slow: setup  ## Only the long runs.
	$(PY) -m pytest -m slow

bench: setup  ## Training and rollout-only throughput, compile time, on 1, 2 and 4 devices.
	$(PY) -m experiments.bench --devices 1 2 4

# The check runs with this project's virtualenv where there is one, else with $(PYTHON): on a
# GPU image, the image's Python with its own jax (and no .venv).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

gpu-check:  ## The GPU window's one command (about 8 min on one H100): see experiments/gpu_check.py; ARGS=--small on a CPU.
	$(GPU_PYTHON) -m experiments.gpu_check $(ARGS)

gpu-wheels: setup  ## Where pip reaches PyPI: the cp312 wheels a bare GPU image lacks, into .whl/ (never jax or flax).
	$(PY) -m experiments.gpu_wheels --dir .whl

clean:
	rm -rf $(VENV) runs .pytest_cache
