# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint faults bench lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rebuild demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# static checks: errors only (ruff F/E9: undefined names, unused imports; mypy: types)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# the whole fault suite (kill -9 sweeps, corruption, concurrency, hostile input, secrets) and every other slow test
faults: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests/faults -m "slow or not slow"
	$(BIN)/python -m pytest -q -n 2 tests --ignore=tests/faults -m slow

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

# JupyterLab on 127.0.0.1 (token login), opened on notebooks/, with the venv's python3 kernel
# first on the kernel path (so a user-wide python3 kernel cannot shadow the project's); as root
# (containers) it needs --allow-root.
LAB_PORT ?= 8888
lab: $(STAMP)
	JUPYTER_PATH="$(CURDIR)/$(VENV)/share/jupyter" $(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) \
		--no-browser --ServerApp.root_dir=notebooks --MappingKernelManager.default_kernel_name=python3 $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) .demo reports .pytest_cache
