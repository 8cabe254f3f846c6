# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test unit integration faults lint typecheck bench clean kafka-jars system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

kafka-jars: install system-deps
	$(BIN)/python -m shared.devtools.infra.kafka_local fetch

## The whole system with realistic simulated traffic (own Kafka and PostgreSQL unless configured).
## More options through ARGS, e.g. a second stack beside the first:
##   make run ARGS="--data-dir .run2 --port-base 9080 --kafka-port 9192"
ARGS ?=
run: install kafka-jars
	$(BIN)/complaints dev --simulate 20 $(ARGS)

## Debian packages the tests use (Java, Maven, Prometheus, Chromium, CJK fonts), installed only when missing.
system-deps:
	@bash deploy/system-deps.sh

## Lint, type-check, then every test tier; integration tests start real Kafka and PostgreSQL themselves. Of the
## fault suite (tests/e2e/test_fault_suite.py), one scenario of each kind (marker faults_quick); `make faults` runs
## them all; the attacks on `complaints dev` at every step of its start-up run in `make devstack` (they would add
## minutes). The slowest tests are listed at the end (--durations), to keep CI's time in view.
QUICK := -m "(not faults or faults_quick) and not attack"
test: install kafka-jars system-deps lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 $(QUICK) tests

unit: install
	$(BIN)/python -m pytest -q tests/unit tests/contract

integration: install kafka-jars system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(QUICK) tests/integration tests/e2e

## The dev stack run as a user runs it (tests/e2e/test_dev_stack.py, test_dev_simulate.py: also in `make test`), and
## attacked at every step (tests/e2e/test_dev_attack.py).
devstack: install kafka-jars system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -m devstack tests/e2e

## Every scenario of the fault suite (RELIABILITY.md 10-18), with its summary table (docs/operations.md).
faults: install kafka-jars system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -rA -m faults tests/e2e/test_fault_suite.py

lint: install
	$(BIN)/ruff check shared services tests

typecheck: install
	$(BIN)/mypy

bench: install kafka-jars
	$(BIN)/complaints bench intake

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
