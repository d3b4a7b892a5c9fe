# Two entry points on a fresh machine: `make train` and `make test`. Both create the
# virtualenv and install the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup train test test-slow bench gpu-check clean

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

gpu-check:  ## On a machine with a GPU and JAX (no .venv): throughput and a whole brax_ant run.
	@if [ -d .whl ] && ! $(PYTHON) -c "import brax, mujoco.mjx, tensorboardX" 2>/dev/null; then \
	  $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl; fi
	PYTHONPATH=/tmp/site:$$PYTHONPATH $(PYTHON) -m experiments.gpu_check $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
