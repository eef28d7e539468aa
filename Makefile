# zephyr-train: `make smoke` and `make test` set everything up on a fresh clone (no GPU, no Hub needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed only when the environment has no torch yet. On this CPU machine the registry mirror
# serves the CPU build; on a GPU box the same pin resolves to the CUDA build. Override freely.
TORCH ?= torch==2.13.0
RECIPE ?= recipes/smoke.yaml
ARGS ?=

.PHONY: install smoke test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

smoke: install
	HF_HUB_OFFLINE=1 $(BIN)/zephyr-train run $(RECIPE) --force $(ARGS)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/sft_throughput.py $(ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
