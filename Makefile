# Payment saga orchestrator: developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make test runs the suite on this many pytest-xdist workers, a test file to a worker, each with a broker and a
# database of its own: most tests wait on Kafka and PostgreSQL, and one at a time left half of the CPU idle.
TEST_WORKERS ?= 2

.PHONY: help venv lint typecheck schemas-check unit integration e2e faults chaos deploy-check test demo stack-up stack-down bench bench-http bench-state bench-risk clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with dev tools

lint: $(STAMP) ## ruff, and the layer contracts (import-linter: the kernel imports no app, apps not each other)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

schemas-check: $(STAMP) ## Prove every schema version is backward and forward compatible with its predecessors
	$(BIN)/payments schemas check

unit: $(STAMP) ## Pure-logic tests, no I/O
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

integration: $(STAMP) ## Tests against real Kafka and PostgreSQL (started on demand)
	$(BIN)/pytest tests/integration -q $(PYTEST_ARGS)

e2e: $(STAMP) ## The whole pipeline as separate processes
	$(BIN)/pytest tests/e2e -q $(PYTEST_ARGS)

faults: $(STAMP) ## Broker and database faults while payments flow, longer than in make test
	PAYMENTS_FAULT_PAYMENTS=$${PAYMENTS:-600} PAYMENTS_FAULT_SECONDS=$${SECONDS_OF_TRAFFIC:-30} \
		$(BIN)/pytest tests/faults -q -s $(PYTEST_ARGS)

chaos: $(STAMP) ## Seeded chaos on a 3-broker cluster: 20,000 payments, >= 50 process kills, broker, PostgreSQL and partner faults; prints the table (SEED, PAYMENTS, RATE)
	$(BIN)/payments stack fetch
	$(BIN)/python -m tests.chaos --seed $${SEED:-1} --payments $${PAYMENTS:-20000} --rate $${RATE:-60} $(CHAOS_ARGS)

deploy-check: $(STAMP) ## The image, compose file and Helm chart through hadolint, compose-go, helm lint and kubeconform (tests/deploy)
	$(BIN)/payments stack tools
	$(BIN)/pytest tests/deploy -q $(PYTEST_ARGS)

test: $(STAMP) lint typecheck schemas-check ## Install everything and run the whole suite (lint, types, schemas, all tests on TEST_WORKERS workers; then the short chaos run; not make faults)
	$(BIN)/payments stack fetch
	$(BIN)/payments stack tools
	$(BIN)/pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile -m "not faults and not chaos" $(PYTEST_ARGS)
	@# The short chaos run alone afterwards: it kills processes and brokers against deadlines, on the machine it assumes.
	$(BIN)/pytest -q tests/chaos -m chaos $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: PYTEST_ARGS deselected it

demo: $(STAMP) ## Bring the stack up, run the services, publish sample payments, report, shut down
	$(BIN)/payments demo

stack-up: $(STAMP) ## Start the local Kafka + PostgreSQL stack (idempotent)
	$(BIN)/payments stack up

stack-down: $(STAMP) ## Stop the local stack
	$(BIN)/payments stack down

bench: $(STAMP) ## The whole pipeline: max rate, open-loop latency sweep, profiles, the exactly-once hop vs ceiling and Quix Streams peer; then the partner gateway (prints figures, writes .bench-results/)
	$(BIN)/python benchmarks/pipeline.py --payments $${PAYMENTS:-6000} --seconds $${SECONDS_PER_RATE:-20} \
		--partner-latency $${PARTNER_LATENCY_MS:-1} --profile
	$(BIN)/python benchmarks/partner_gateway.py --calls $${CALLS:-20000}

bench-http: $(STAMP) ## The HTTP intake: POST /v1/payments per second and latency, against an acknowledged Kafka produce (prints figures)
	$(BIN)/python benchmarks/http_intake.py --requests $${REQUESTS:-3000} --concurrency $${CONCURRENCY:-32}

bench-state: $(STAMP) ## Restore time, memory and changelog bytes per change with a long history (prints figures)
	$(BIN)/python benchmarks/state_history.py --history $${HISTORY:-1000000} --retained $${RETAINED:-100000}

bench-risk: $(STAMP) ## Risk scoring time per payment: behavioural features + the ONNX model, against the v1 scorer (prints figures)
	$(BIN)/python benchmarks/risk_scoring.py --payments $${PAYMENTS:-20000}

clean: ## Remove the virtual env, caches and all local stack data (a root-run PostgreSQL's server home too)
	-$(BIN)/payments stack purge
	rm -rf $(VENV) .stack .pytest_cache .mypy_cache .ruff_cache .hypothesis
