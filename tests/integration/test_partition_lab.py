"""A network partition of the anchor's node (``orcastra lab partition``: its link down, its daemon and containers
alive): Swarm marks the node Down and runs the anchor elsewhere, Orcastra moves the group after it; when the
partition heals (``orcastra lab heal``) nothing flaps: no label moves back, no service is updated again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra_lab import Lab, LabEnv

from .util import (
    deployed_stack,
    free_port,
    group_node,
    node_labels,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

STACK = "pt"
ANCHOR = f"{STACK}_db"
APP = f"{STACK}_app"
SETTLE_SECONDS = 25.0

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.role == worker]   # node1 is the only manager: it must stay reachable
  app:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels:
        orcastra.follow: db
      placement:
        constraints: [node.labels.orcastra.anchor.pt_db == true]
"""

CONFIG = """
stack: pt
nodes:
{nodes}
reconcile:
  resync_interval_seconds: 5
leader_election:
  enabled: false
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


def colocated(api: docker.APIClient) -> str | None:
    return group_node(api, ANCHOR, {APP: 1})


def versions(api: docker.APIClient) -> dict[str, int]:
    names = (ANCHOR, APP)
    return {s["Spec"]["Name"]: s["Version"]["Index"] for s in api.services() if s["Spec"]["Name"] in names}


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture
def pt(lab_env: LabEnv, lab: Lab, tmp_path: Path, docker_api: docker.APIClient) -> Iterator[tuple[Path, Path]]:
    with deployed_stack(lab_env, docker_api, STACK, STACK_FILE, tmp_path):
        audit = tmp_path / "audit.jsonl"
        nodes = "\n".join(f"  {n}:\n    endpoint: {h}" for n, h in sorted(lab_env.node_hosts.items()))
        config = tmp_path / "orcastra.yml"
        config.write_text(CONFIG.format(nodes=nodes, port=free_port(), audit=audit), encoding="utf-8")
        try:
            yield config, audit
        finally:
            for node in ("node2", "node3"):
                lab.heal(node)
            lab.up()  # mends what the partition left


def test_a_partitioned_anchor_node_the_group_follows_and_nothing_flaps_after_healing(
    lab_env: LabEnv, lab: Lab, pt: tuple[Path, Path], docker_api: docker.APIClient
) -> None:
    config, audit = pt
    log = config.parent / "run.log"
    proc = start_orcastra(["--config", str(config), "run"], lab_env.docker_host, log)
    try:
        first = wait_for("the group colocated", lambda: colocated(docker_api), timeout=90)
        lab.partition(first)
        partitioned = time.monotonic()
        moved = wait_for(
            "the group colocated on the other worker",
            lambda: (node := colocated(docker_api)) is not None and node != first and node,
            timeout=120,
            interval=0.5,
        )
        followed = time.monotonic() - partitioned
        lab.heal(first)
        wait_for(
            f"{first} Ready again",
            lambda: any(
                n["Description"]["Hostname"] == first and n["Status"]["State"] == "ready" for n in docker_api.nodes()
            ),
            timeout=60,
        )
        # Settled: from now on nothing changes, whatever the healed node's old containers still report.
        writes_before = len(audit_lines(audit))
        before = (versions(docker_api), node_labels(docker_api))
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            assert (versions(docker_api), node_labels(docker_api)) == before, "something flapped after healing"
            time.sleep(0.5)
        assert colocated(docker_api) == moved
        assert (versions(docker_api), node_labels(docker_api)) == before, "something flapped after healing"
        assert audit_lines(audit)[writes_before:] == []
        assert proc.poll() is None, log.read_text()[-3000:]
        print(
            f"\npartition: the group colocated on {moved} {followed:.1f} s after {first} was cut off; "
            "quiet after healing"
        )
    finally:
        stop_process(proc)
