"""Orcastra beside other writers: ``docker stack deploy`` of the same stack in a loop (each deploy strips the
constraint Orcastra added to a dependent) and another tool rewriting node labels several times a second. Version
conflicts are re-planned, nothing either writer set is lost, and Orcastra's writes stay bounded by what the
others undo (no fight that feeds itself)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.features.colocation.plan import anchor_constraint
from orcastra_lab import LabEnv

from .test_colocation_lab import docker_cli, service_spec
from .util import deployed_stack, free_port, node_labels, running_nodes, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

STACK = "cw"
ANCHOR = f"{STACK}_db"
APP = f"{STACK}_app"
DEPLOYS = 6
DEPLOY_EVERY_SECONDS = 6.0
OTHER_TOOL_KEY = "other.tool"

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
  app:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels:
        orcastra.follow: db     # no constraint in the file: every deploy strips the one Orcastra adds
"""

CONFIG = """
stack: cw
reconcile:
  resync_interval_seconds: 5
leader_election:
  enabled: false
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def constrained(api: docker.APIClient) -> bool:
    placement = service_spec(api, APP)["TaskTemplate"].get("Placement") or {}
    return anchor_constraint(ANCHOR) in (placement.get("Constraints") or [])


class OtherTool(threading.Thread):
    """Rewrites one label of every node, as fast as the Swarm lets it, with the node's version (re-read on a
    conflict, as a careful tool does); remembers the last value it set on each node."""

    def __init__(self, api: docker.APIClient) -> None:
        super().__init__(name="other-tool", daemon=True)
        self.api = api
        self.stop = threading.Event()
        self.last: dict[str, str] = {}
        self.writes = 0
        self.conflicts = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for node in self.api.nodes():
                n += 1
                spec = dict(node["Spec"])
                spec["Labels"] = {**(spec.get("Labels") or {}), OTHER_TOOL_KEY: str(n)}
                try:
                    self.api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
                except docker.errors.APIError:
                    self.conflicts += 1
                    continue
                self.writes += 1
                self.last[node["Description"]["Hostname"]] = str(n)
            self.stop.wait(0.3)


@pytest.fixture
def cw(lab_env: LabEnv, tmp_path: Path, docker_api: docker.APIClient) -> Iterator[Path]:
    with deployed_stack(lab_env, docker_api, STACK, STACK_FILE, tmp_path):
        yield tmp_path


def test_deploys_in_a_loop_and_another_label_writer_nothing_lost_no_fight(
    lab_env: LabEnv, cw: Path, docker_api: docker.APIClient
) -> None:
    audit = cw / "audit.jsonl"
    config = cw / "orcastra.yml"
    config.write_text(CONFIG.format(port=free_port(), audit=audit), encoding="utf-8")
    log = cw / "run.log"
    proc = start_orcastra(["--config", str(config), "run"], lab_env.docker_host, log)
    other = OtherTool(docker_api)
    try:
        wait_for("the app constrained and beside the anchor", lambda: constrained(docker_api) and running_nodes(
            docker_api, APP) == running_nodes(docker_api, ANCHOR) != [], timeout=90)  # fmt: skip
        start = len(audit_lines(audit))
        other.start()
        started = time.monotonic()
        for _ in range(DEPLOYS):
            docker_cli(lab_env, "stack", "deploy", "-c", str(cw / "stack.yml"), STACK)
            time.sleep(DEPLOY_EVERY_SECONDS)
        other.stop.set()
        other.join(10)
        wait_for("the constraint back after the last deploy", lambda: constrained(docker_api), timeout=30)
        wait_for(
            "the group colocated again",
            lambda: running_nodes(docker_api, APP) == running_nodes(docker_api, ANCHOR) != [],
            timeout=90,
        )
        elapsed = time.monotonic() - started
        ours = audit_lines(audit)[start:]
        applied = [x for x in ours if x["result"] == "ok"]
        conflicts = [x for x in ours if x["result"] == "conflict"]
        # Nothing lost: the other tool's last value on every node is there, and so is Orcastra's anchor label.
        labels = node_labels(docker_api)
        for host, value in other.last.items():
            assert labels[host][OTHER_TOOL_KEY] == value
        assert any(f"orcastra.anchor.{ANCHOR}" in ls for ls in labels.values())
        # No fight: each deploy undoes one constraint and Orcastra puts it back once (plus the label moves
        # the restarts cause); writes per minute stay within a small multiple of deploys per minute.
        restorations = [x for x in applied if x["target"] == f"service/{APP}" and "+constraint" in x["change"]]
        assert 1 <= len(restorations) <= DEPLOYS
        assert len(applied) <= 4 * DEPLOYS + 6, [(x["target"], x["change"]) for x in applied]
        assert other.writes > 0
        assert proc.poll() is None, log.read_text()[-3000:]
        print(  # the figures the README quotes
            f"\nconcurrent writers: {DEPLOYS} deploys and {other.writes} label writes ({other.conflicts} conflicts) "
            f"in {elapsed:.0f} s; Orcastra: {len(applied)} writes ({len(restorations)} constraint restorations), "
            f"{len(conflicts)} conflicts re-planned"
        )
    finally:
        other.stop.set()
        stop_process(proc)
