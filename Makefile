# palrm: the two set-up commands are `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Override on machines with a GPU or another platform, e.g. `make test TORCH_REQ="torch>=2.3"`.
TORCH_REQ ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.palrm-installed
DEVSTAMP := $(VENV)/.palrm-dev-installed

.PHONY: quickstart test install dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, so pip does not pull a multi-GB CUDA build as a dependency.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH_REQ)"
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEVSTAMP)

install: $(STAMP)

dev: $(DEVSTAMP)

quickstart: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/palrm quickstart

test: $(DEVSTAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The paper's experiments and the speed / scale benchmarks, reduced profile (docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/palrm bench --suite all --quick

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
