# Two commands on a fresh machine; each sets up what it needs on first use (.venv with the CPU torch pin).
#   make run    train and evaluate GIM on the embedded default task (offline, a few seconds), print the summary
#   make test   the test suite (pytest; the real data in ../shared/data is used when present)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: a loose requirement would pull a multi-GB CUDA build on a CPU machine.
TORCH := torch==2.13.0

.PHONY: help run test clean-venv

help:
	@echo "make run    bench run on the embedded default task (sets up $(VENV) on first use)"
	@echo "make test   the test suite (sets up $(VENV) on first use)"
	@echo "make clean-venv   remove $(VENV)"

$(BIN)/bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	@touch $@

run: $(BIN)/bench
	$(BIN)/bench run --out results/runs

test: $(BIN)/bench
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
