# The two set-up commands of the README: `make demo` (main job on the local lab) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test lint unit integration lab-down bench robustness soak image

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
	$(VENV)/pytest tests -q --durations=20

bench: setup
	$(VENV)/python -m bench.colocation --rounds 20 --dependents 3
	$(VENV)/python -m bench.rebalance
	$(VENV)/python -m bench.reconcile_cost
	$(VENV)/python -m bench.footprint --seconds 300 --replicas 1
	$(VENV)/python -m bench.gc_plan
	$(VENV)/python -m bench.mods_refresh

# The fault-injection and robustness suite (its short form also runs in `make test`): faults on every Engine
# call during a failover, manager restarts and a killed leader on 3 managers, a partition, concurrent writers,
# hostile input, secrets.
robustness: setup
	$(VENV)/pytest -q tests/unit -k "hostile or fuzz or property or hypothesis or faults or runtime_loop"
	$(VENV)/pytest -q -s tests/integration/test_faults_lab.py tests/integration/test_managers_lab.py \
		tests/integration/test_partition_lab.py tests/integration/test_concurrent_writers_lab.py \
		tests/integration/test_secrets_lab.py tests/integration/test_leader_move_lab.py

# An hour of churn (kills, restarts, deploys, commands) on a lab of its own: memory and descriptor slopes.
soak: setup
	$(VENV)/python -m bench.soak --minutes 60

# Orcastra's image, built by ./Dockerfile on the local lab (brought up first if needed; `up` is idempotent)
# and pushed to its registry; prints the ref. Offline: see docs/deploy.md, "The image".
image: setup
	$(VENV)/orcastra lab up >/dev/null
	$(VENV)/orcastra lab image

lab-down: setup
	$(VENV)/orcastra lab down
