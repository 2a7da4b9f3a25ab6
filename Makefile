# Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Runs the bundled example: against the real API when a key is set, else the built-in emulator.
run: install
	$(BIN)/runner run jobs/example.jsonl $(if $(SELAM_API_KEY)$(OPENAI_API_KEY),,--mock)

lint: install
	$(BIN)/ruff check runner tests migrations bench
	$(BIN)/ruff format --check runner tests migrations bench
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint unit

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runner.db runner.db-wal runner.db-shm jobs/*.results.jsonl
