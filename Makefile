# One task runner: the README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-cluster lint typecheck pytest services-up services-down clean seaweedfs

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

demo: $(STAMP) ## Start Kafka and Redis if needed and run the demo pipeline
	$(BIN)/fstore demo

lint: $(STAMP) ## ruff (lint + format check) and the import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy --strict on the packages
	$(BIN)/mypy

pytest: $(STAMP) seaweedfs ## Only the test suite (starts real Kafka, Redis and S3 itself)
	$(BIN)/pytest $(PYTEST_ARGS)

seaweedfs: $(STAMP) ## Build the local S3 server once (SeaweedFS from the Go module proxy, cached)
	$(BIN)/fstore services build

test: lint typecheck pytest ## Lint, types, every test (on one Redis)

# The suites that touch Redis, again on a 3-master Redis Cluster with a replica each (started by
# the tests' fixtures): streaming (ingest, monitor), serving, the writer, failover.
CLUSTER_TESTS := tests/streaming tests/serving tests/featurestore/test_writer.py \
	tests/featurestore/test_writer_shards.py tests/featurestore/test_state_loss.py \
	tests/featurestore/test_cluster_failover.py tests/featurestore/test_cluster_mode.py \
	tests/featurestore/test_distinct_online_offline.py
# The side structures of percentiles, first/last of strings, last_n and top_k (issue 21).
CLUSTER_TESTS += tests/featurestore/test_percentiles_online_offline.py \
	tests/featurestore/test_first_last_strings.py
# Window kinds, the lifetime state, and the functions kept beside the tiles over every kind.
CLUSTER_TESTS += tests/featurestore/test_window_kinds.py \
	tests/featurestore/test_new_functions_window_kinds.py

test-cluster: $(STAMP) ## The Redis suites again on a local Redis Cluster
	FSTORE_TEST_REDIS=cluster $(BIN)/pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)

services-up: $(STAMP) ## Start local Kafka and Redis
	$(BIN)/fstore services up

services-down: $(STAMP) ## Stop them
	$(BIN)/fstore services down

clean: ## Remove the virtualenv and caches (not the Kafka jar cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench
bench: $(STAMP) ## Ingest benchmark (bench/ingest.py; BENCH_ARGS=--quick for a smoke run)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

.PHONY: wheel
wheel: $(STAMP) ## Build the sdist and the wheel into dist/ (what users pip install)
	$(BIN)/uv build -o dist
