# The two set-up commands of the README: `make demo` (main job on the local lab) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test lint unit integration lab-down bench

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

lint: setup
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports

unit: setup
	$(VENV)/pytest tests/unit -q

integration: setup
	$(VENV)/pytest tests/integration -q

test: lint
	$(VENV)/pytest tests -q

bench: setup
	$(VENV)/python -m bench.colocation --rounds 20 --dependents 3
	$(VENV)/python -m bench.rebalance
	$(VENV)/python -m bench.reconcile_cost
	$(VENV)/python -m bench.footprint --seconds 300 --replicas 1

lab-down: setup
	$(VENV)/orcastra lab down
