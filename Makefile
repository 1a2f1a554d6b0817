# `make run` and `make test` each bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/backpack serve --data ./data

lint: $(STAMP)
	$(BIN)/ruff check backpack tests bench
	$(BIN)/ruff format --check backpack tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict backpack

# Everything on the embedded default, then the API suite again on the machine's PostgreSQL
# (127.0.0.1:5432) and Redis (:6379): tests/engine.py.
test: lint typecheck
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	command -v firefox-esr >/dev/null || (apt-get update -q && apt-get install -y -q firefox-esr)
	command -v node >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm)
	$(BIN)/pytest -q -p no:cacheprovider
	BACKPACK_TEST_ENGINE=postgres $(BIN)/pytest -q -p no:cacheprovider tests/e2e

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.realtime
	$(BIN)/python -m bench.control

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
