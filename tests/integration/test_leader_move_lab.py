"""A rebalancing move outlives the leader that started it: two Orcastras share the lease; the leader starts a
move (node2 is over ``high``) and is killed (SIGKILL) before the move converges; the other one takes the lease
over and follows the move through from the labels the Swarm holds (``orcastra.rebalance.move-state``), with no
memory of its own of that move."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from orcastra.domain.labels import LEASE_HOLDER_LABEL, MOVE_STATE_LABEL, MOVED_TO_LABEL, PIN_LABEL_PREFIX
from orcastra_lab import Lab, LabEnv

from .test_colocation_lab import docker_cli
from .test_rebalance_lab import fill, set_availability
from .util import free_port, node_labels, running_nodes, set_node_labels, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

STACK = "mv"
APP = f"{STACK}_app"
MIB = 2**20
LEASE = "orcastra-leader-mv"

STACK_FILE = f"""
version: "3.8"
x-fill: &tmpfs
  - type: tmpfs
    target: /fill
    tmpfs: {{size: 400000000}}
services:
  app:
    image: ${{ORCASTRA_LAB_IMAGE}}
    command: {fill(110)}
    volumes: *tmpfs
  hog:
    image: ${{ORCASTRA_LAB_IMAGE}}
    command: {fill(150)}
    volumes: *tmpfs
    deploy:
      labels: {{orcastra.rebalance: "false"}}
"""

CONFIG = """
stack: mv
nodes:
{nodes}
rebalance:
  enabled: true
  high_percent: 45
  target_percent: 35
  sustained_seconds: 2
  monitor_interval_seconds: 1
  global_cooldown_seconds: 600
  service_cooldown_seconds: 600
  stale_after_seconds: 30
  move_timeout_seconds: 120
  sources:
    node_exporter:
{exporters}
reconcile:
  resync_interval_seconds: 5
leader_election:
  lease_name: {lease}
  ttl_seconds: 5
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


@dataclass
class Instance:
    name: str
    config: Path
    audit: Path
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def health(self) -> dict[str, Any]:
        try:
            return dict(httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(x) for x in self.audit.read_text().splitlines() if x.strip()]


def instance(name: str, d: Path, env: LabEnv) -> Instance:
    port = free_port()
    audit = d / f"{name}-audit.jsonl"
    nodes = "\n".join(f"  {n}:\n    endpoint: {h}" for n, h in sorted(env.node_hosts.items()))
    exporters = "\n".join(f"      {n}: {url}" for n, url in sorted(env.node_exporters.items()))
    config = d / f"{name}.yml"
    text = CONFIG.format(nodes=nodes, exporters=exporters, lease=LEASE, port=port, audit=audit)
    config.write_text(text, encoding="utf-8")
    return Instance(name, config, audit, d / f"{name}.log", port)


def app_labels(api: docker.APIClient) -> dict[str, str]:
    (svc,) = api.services(filters={"name": APP})
    return dict(svc["Spec"].get("Labels") or {})


@pytest.fixture
def mv(lab_env: LabEnv, lab: Lab, tmp_path: Path) -> Iterator[tuple[LabEnv, Path, docker.APIClient]]:
    api = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    labels_before = node_labels(api)
    lab.set_node_memory("node1", 1024 * MIB)
    lab.set_node_memory("node2", 512 * MIB)
    lab.set_node_memory("node3", 512 * MIB)
    # Everything starts on node2: drain the others while deploying (Swarm never moves running tasks back).
    set_availability(api, "node1", "drain")
    set_availability(api, "node3", "drain")
    try:
        (tmp_path / "stack.yml").write_text(STACK_FILE, encoding="utf-8")
        docker_cli(lab_env, "stack", "deploy", "-c", str(tmp_path / "stack.yml"), STACK)
        wait_for(
            "stack running on node2",
            lambda: all(running_nodes(api, f"{STACK}_{s}") == ["node2"] for s in ("app", "hog")),
            timeout=120,
        )
    finally:
        set_availability(api, "node1", "active")
        set_availability(api, "node3", "active")
    try:
        yield lab_env, tmp_path, api
    finally:
        subprocess.run(
            ["docker", "stack", "rm", STACK],
            env={**os.environ, "DOCKER_HOST": lab_env.docker_host},
            capture_output=True,
            check=False,
        )
        wait_for("stack removed", lambda: not api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}))
        for lease in api.services(filters={"name": LEASE}):
            api.remove_service(lease["ID"])
        for node in ("node1", "node2", "node3"):
            lab.set_node_memory(node, None)
        for hostname, labels in labels_before.items():
            if node_labels(api).get(hostname) != labels:
                set_node_labels(api, hostname, labels)
        api.close()


def test_a_new_leader_finishes_the_move_the_killed_leader_started(
    mv: tuple[LabEnv, Path, docker.APIClient],
) -> None:
    env, d, api = mv
    a, b = instance("a", d, env), instance("b", d, env)
    try:
        a.proc = start_orcastra(["--config", str(a.config), "run"], env.docker_host, a.log)
        wait_for("a leads", lambda: a.health().get("role") == "leader", timeout=30)
        b.proc = start_orcastra(["--config", str(b.config), "run"], env.docker_host, b.log)
        wait_for("b follows", lambda: b.health().get("role") == "follower", timeout=30)

        # a sees node2 above high for the sustained period and moves the app; kill it the moment the move
        # is recorded, long before Swarm can have restarted the app elsewhere (its restart delay is 5 s).
        wait_for(
            "a starts a move", lambda: app_labels(api).get(MOVE_STATE_LABEL) == "moving", timeout=90, interval=0.05
        )
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        killed = time.monotonic()
        labels = app_labels(api)
        assert labels[MOVE_STATE_LABEL] == "moving", "the move converged before the leader was killed"
        target = labels[MOVED_TO_LABEL]
        assert node_labels(api)[target].get(PIN_LABEL_PREFIX + APP) == "true"

        # b takes the lease over (5 s of silence on its own clock) and follows the move through.
        wait_for("b leads", lambda: b.health().get("role") == "leader", timeout=30)
        wait_for("the move recorded as converged", lambda: app_labels(api).get(MOVE_STATE_LABEL) == "converged", 90)
        finished = time.monotonic() - killed
        assert running_nodes(api, APP) == [target]
        converged_by_b = [
            x for x in b.audit_lines() if x["target"] == f"service/{APP}" and "move converged" in x["reason"]
        ]
        assert len(converged_by_b) == 1, b.audit_lines()
        assert not [x for x in a.audit_lines() if "move converged" in x["reason"]]
        (lease,) = api.services(filters={"name": LEASE})
        assert lease["Spec"]["Labels"][LEASE_HOLDER_LABEL] != ""
        print(f"\nleader killed mid-move: the new leader recorded the move converged {finished:.1f} s after the kill")
    finally:
        for inst in (a, b):
            if inst.proc is not None:
                stop_process(inst.proc)
