# make demo: create .venv if missing, install, run the embedded-default study end to end.
# make test: create .venv if missing, install, ruff check + pytest.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUDY ?= studies/digits.yaml

.PHONY: demo test lint install clean-study

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m autokd.demo $(STUDY)

test: $(STAMP)
	$(BIN)/ruff check autokd tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check autokd tests benchmarks

clean-study:
	rm -rf studies/digits
