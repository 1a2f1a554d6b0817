# `make run` and `make test` each bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean image test-containers

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

# Everything on the embedded default and, at the same time, the API suite again on the
# machine's PostgreSQL (127.0.0.1:5432) and Redis (:6379): tests/engine.py. The two share
# nothing (each test makes its own ports, data directories, databases and Redis prefixes)
# and mostly wait on servers, so together they take little longer than the longer one.
# The PostgreSQL run's output follows the embedded run's; either failing fails the target.
test: lint typecheck
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	command -v firefox-esr >/dev/null || (apt-get update -q && apt-get install -y -q firefox-esr)
	command -v node >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm)
	@pg_log=$$(mktemp); \
	BACKPACK_TEST_ENGINE=postgres $(BIN)/pytest -q -p no:cacheprovider tests/e2e \
	  >"$$pg_log" 2>&1 & pg=$$!; \
	echo "== embedded (SQLite, local disk): every test; PostgreSQL + Redis: tests/e2e, alongside"; \
	$(BIN)/pytest -q -p no:cacheprovider; embedded=$$?; \
	wait $$pg; postgres=$$?; \
	echo "== PostgreSQL + Redis: tests/e2e"; cat "$$pg_log"; rm -f "$$pg_log"; \
	test $$embedded -eq 0 && test $$postgres -eq 0

# The container image (deploy/Dockerfile), built with podman from a registry-free base.
IMAGE ?= backpack:latest
image: $(STAMP)
	deploy/build-image.sh $(IMAGE)

# The podman-run tests alone (image, docker runtime); they fail, not skip, without podman.
test-containers: $(STAMP)
	command -v podman >/dev/null && command -v debootstrap >/dev/null && test -x /usr/sbin/runc \
	  || (apt-get update -q && apt-get install -y -q podman runc debootstrap)
	BACKPACK_TEST_CONTAINERS=1 $(BIN)/pytest -q -p no:cacheprovider tests/containers
	BACKPACK_TEST_CONTAINERS=1 $(BIN)/pytest -q -p no:cacheprovider \
	  tests/contract/test_runtime_contract.py -k docker

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.realtime
	$(BIN)/python -m bench.control
	$(BIN)/python -m bench.scaleout
	command -v valgrind >/dev/null || apt-get install -y valgrind
	$(BIN)/python -m bench.instructions

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
