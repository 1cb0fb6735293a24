"""Orcastra through a fault-injecting proxy (``orcastra_lab.faults``) in front of the lab manager, while the lab
does a real failover: 500s and 503s, stale-version answers to writes, slow answers, resets and truncated bodies
on the calls it makes. It must not crash, no thread may die, every fault must show in its log and metrics, and
once the faults stop the anchor group must be colocated within a resync interval and a move."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from orcastra_lab import Lab, LabEnv
from orcastra_lab.faults import FaultProxy, Rule

from .util import (
    deployed_stack,
    free_port,
    group_node,
    running_nodes,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

STACK = "fi"
ANCHOR = f"{STACK}_db"
APP = f"{STACK}_app"
RESYNC_SECONDS = 5
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"
NO_LEADER = "rpc error: code = Unknown desc = raft: no leader"

# About one cycle in four meets a failed read (each one then waits out its error's delay, doubling while
# failures repeat); one write in three meets a stale-version answer or a reset.
RULES = [
    Rule("status", "GET", r"^/tasks$", fraction=0.1, status=500, message=NO_LEADER),
    Rule("status", "GET", r"^/nodes$", fraction=0.08, status=503, message=NO_LEADER),
    Rule("truncate", "GET", r"^/services$", fraction=0.05, after_bytes=40),
    Rule("delay", "GET", r"^/services$", fraction=0.05, seconds=2.0),
    Rule("status", "POST", r"^/nodes/[^/]+/update$", fraction=0.3, status=500, message=OUT_OF_SEQUENCE),
    Rule("reset", "POST", r"^/services/[^/]+/update$", fraction=0.2),
    Rule("reset", "GET", r"^/services/[^/]+$", fraction=0.1),
]

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.role == worker]   # node1, the only manager, must stay up
  app:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
      labels:
        orcastra.follow: db
"""

CONFIG = """
stack: fi
reconcile:
  resync_interval_seconds: {resync}
leader_election:
  ttl_seconds: 6
api:
  listen: 127.0.0.1:{port}
"""


def colocated(api: docker.APIClient) -> str | None:
    return group_node(api, ANCHOR, {APP: 2})


@pytest.fixture
def fi(lab_env: LabEnv, lab: Lab, tmp_path: Path, docker_api: docker.APIClient) -> Iterator[FaultProxy]:
    with deployed_stack(lab_env, docker_api, STACK, STACK_FILE, tmp_path):
        try:
            with FaultProxy(lab_env.docker_host, seed=7) as proxy:
                yield proxy
        finally:
            lab.up()  # the node the test killed


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_faults_on_every_call_during_a_failover(
    lab_env: LabEnv, lab: Lab, fi: FaultProxy, docker_api: docker.APIClient, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "orcastra.yml"
    config.write_text(CONFIG.format(resync=RESYNC_SECONDS, port=port), encoding="utf-8")
    log = tmp_path / "run.log"
    proc = start_orcastra(["--config", str(config), "run"], fi.docker_host, log)
    try:
        fi.set_rules(RULES)
        started = time.monotonic()
        first = wait_for("the group colocated through the faults", lambda: colocated(docker_api), timeout=180)
        phases = {"colocated under faults": time.monotonic() - started}
        lab.kill(first)  # a power loss of the anchor's node, faults still on
        killed = time.monotonic()
        wait_for(
            "the anchor running elsewhere",
            lambda: (db := running_nodes(docker_api, ANCHOR)) and db[0] != first,
            timeout=120,
            interval=0.5,
        )
        phases["anchor elsewhere"] = time.monotonic() - killed
        time.sleep(10)  # a while of failover under faults: cycles fail, writes conflict, connections reset
        faults = fi.stats()
        fi.clear()
        cleared = time.monotonic()
        moved = wait_for("the group colocated after the faults stopped", lambda: colocated(docker_api), 120, 0.5)
        recovery = time.monotonic() - cleared
        assert moved != first
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert proc.poll() is None, log.read_text()[-3000:]
        assert metric(metrics, "orcastra_thread_restarts_total") == 0, "a thread died"
        assert metric(metrics, 'orcastra_cycles_total{result="failed"}') > 0 or "cycle failed" in log.read_text()
        assert sum(faults.faults.values()) > 0
        assert "Traceback" not in log.read_text()
        print(
            f"\nfault injection: {sum(faults.faults.values())} faults over {faults.requests} requests "
            f"({dict(faults.faults)}); colocated again {recovery:.1f} s after the faults stopped; "
            + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
        )
    finally:
        stop_process(proc)
