# Two entry points: `make demo` and `make test`. Each creates the virtualenv it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch reference for parity tests. Installed on its own, before anything that could pull torch in, so pip
# takes the local CPU wheel instead of fetching a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-base: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed-base
	$(BIN)/jaxprobe demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
