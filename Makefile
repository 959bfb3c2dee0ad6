# Clarion — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# uv from PATH, else the uv module installed into the system Python by `ensure-uv`.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
REPLAY ?= default
SPEED ?= 0
EXIT_AFTER_REPLAY ?= 0

PACKAGES := contracts libs/clarion-kit libs/clarion-devstack $(wildcard services/*)
TYPED_STRICT := contracts/src libs/clarion-kit/src libs/clarion-devstack/src

.PHONY: help ensure-uv install lock lint format test unit integration e2e chaos bench run asyncapi schemas deploy-gen up down clean devstack-up devstack-down

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

ensure-uv:
	@command -v uv >/dev/null 2>&1 || python3 -c "import uv" 2>/dev/null || python3 -m pip install --quiet uv

$(STAMP): requirements.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml) | ensure-uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip install --quiet --python $(PY) -r requirements.lock
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install every package from the pinned lock

lock: | ensure-uv ## Re-pin requirements.lock from requirements.in (no download URLs recorded)
	$(UV) pip compile requirements.in -o requirements.lock --python-version $(PYTHON_VERSION) --no-header --quiet

lint: $(STAMP) ## ruff + mypy (strict on contracts and libs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED_STRICT)
	$(BIN)/mypy services/*/src

format: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: $(STAMP) ## Unit tests only (no servers)
	$(BIN)/pytest -q -m "not integration and not e2e and not browser" contracts libs services deploy $(PYTEST_ARGS)

integration: $(STAMP) ## Integration tests on the embedded stack
	$(BIN)/pytest -q -m "integration" contracts libs services $(PYTEST_ARGS)

e2e: $(STAMP) ## End-to-end tests: the whole stack as processes, real events replayed
	$(BIN)/pytest -q tests-e2e $(PYTEST_ARGS)

test: lint $(STAMP) ## Lint, unit, integration and end-to-end tests (starts the embedded stack itself)
	$(BIN)/pytest -q contracts libs services deploy tests-e2e $(PYTEST_ARGS)

CHAOS_ARGS ?=

chaos: $(STAMP) ## Fault injection on the whole stack (kill -9, SIGSTOP, restarts): counts lost and doubled notifications
	$(PY) tests-e2e/chaos.py --report .clarion/chaos/report.md $(CHAOS_ARGS)

BENCH_DIR ?= .clarion/bench/services
# Scale of the peer comparison, e.g. PEER_BENCH_ARGS="--users 200 --records 5000 --rounds 1"
PEER_BENCH_ARGS ?=

bench: $(STAMP) ## Benchmarks on the embedded stack (each service, the gateway next to its peers (needs node/npm), then all of it); writes docs/benchmarks.md
	$(BIN)/python services/aggregator/bench/aggregator_bench.py --json $(BENCH_DIR)/aggregator.json
	$(BIN)/python services/ingest-api/bench/inbox_bench.py --json $(BENCH_DIR)/ingest-api.json
	$(BIN)/python services/push-worker/bench/push_bench.py --json $(BENCH_DIR)/push-worker.json
	$(BIN)/python services/realtime-gateway/bench/gateway_bench.py --connections 10000 --json $(BENCH_DIR)/realtime-gateway.json
	$(BIN)/python services/realtime-gateway/bench/peer_bench.py --json $(BENCH_DIR)/peers.json $(PEER_BENCH_ARGS)
	$(BIN)/clarion bench --output docs/benchmarks.md --services $(BENCH_DIR)

run: $(STAMP) ## Run the embedded stack + all six services and replay real GitHub events
	$(BIN)/clarion run --replay "$(REPLAY)" --speed $(SPEED) $(if $(filter 1 true yes,$(EXIT_AFTER_REPLAY)),--exit-after-replay,)

asyncapi: $(STAMP) ## Generate docs/asyncapi.json from the contracts
	$(BIN)/clarion contracts asyncapi --output docs/asyncapi.json

schemas: $(STAMP) ## Refresh the JSON Schema snapshots (refuses incompatible changes)
	$(BIN)/clarion contracts snapshot

deploy-gen: $(STAMP) ## Regenerate topic resources in k8s/ and deploy/ from the registry
	$(PY) deploy/generate.py generate

devstack-up: $(STAMP) ## Start the embedded Kafka/Redis/PostgreSQL stack in the background
	$(BIN)/clarion devstack up

devstack-down: $(STAMP) ## Stop the embedded stack
	$(BIN)/clarion devstack down

up: ## docker compose up (Apache Kafka, Redis, PostgreSQL, Prometheus, Grafana, the six services)
	docker compose up -d --build

down: ## docker compose down
	docker compose down

clean: ## Remove the venv and local state (.clarion/)
	rm -rf $(VENV) .clarion
