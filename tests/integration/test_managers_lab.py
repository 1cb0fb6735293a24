"""Manager faults on a 3-manager lab (its own lab, "ha"), with one Orcastra per manager, each talking to its own
manager: exactly one acts at every instant. The manager the leader talks to is restarted, then the leader's
node is killed; another instance takes over within the lease time, the anchor group follows its anchor, and
the audit logs of all instances never interleave (one writer between two changes of leader)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from orcastra_lab import Lab, LabEnv

from .util import free_port, group_node, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

LAB_NAME = "ha"
STACK = "ha"
ANCHOR = f"{STACK}_db"
APP = f"{STACK}_app"
TTL_SECONDS = 5.0

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
  app:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels:
        orcastra.follow: db
      placement:
        constraints: [node.labels.orcastra.anchor.ha_db == true]
"""

CONFIG = """
stack: ha
reconcile:
  resync_interval_seconds: 5
leader_election:
  ttl_seconds: {ttl}
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


@dataclass
class Instance:
    node: str
    host: str  # the DOCKER_HOST of its own manager
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    roles: list[tuple[float, str]] = field(default_factory=list)

    @property
    def audit(self) -> Path:
        return self.dir / f"{self.node}-audit.jsonl"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.node}.log"

    def start(self) -> None:
        config = self.dir / f"{self.node}.yml"
        config.write_text(CONFIG.format(ttl=TTL_SECONDS, port=self.port, audit=self.audit), encoding="utf-8")
        self.proc = start_orcastra(["--config", str(config), "run"], self.host, self.log)

    def role(self) -> str:
        try:
            return str(httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json().get("role", "?"))
        except (httpx.HTTPError, ValueError):
            return "down"

    def writes(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(x) | {"by": self.node} for x in self.audit.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabEnv, Path]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab = Lab(name=LAB_NAME)
    env = lab.up(nodes=3, managers=3, swarm=True)
    d = tmp_path_factory.mktemp("ha")
    try:
        (d / "stack.yml").write_text(STACK_FILE, encoding="utf-8")
        subprocess.run(
            ["docker", "stack", "deploy", "-c", str(d / "stack.yml"), STACK],
            env={**os.environ, "DOCKER_HOST": env.docker_host, "ORCASTRA_LAB_IMAGE": env.image},
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield lab, env, d
    finally:
        lab.down()


def leaders(instances: list[Instance]) -> list[str]:
    return [i.node for i in instances if i.role() == "leader"]


def colocated(api: docker.APIClient) -> str | None:
    return group_node(api, ANCHOR, {APP: 1})


def test_one_writer_at_every_instant_through_manager_restarts_and_a_killed_leader(
    ha: tuple[Lab, LabEnv, Path],
) -> None:
    lab, env, d = ha
    instances = [Instance(node, host, free_port(), d) for node, host in sorted(env.node_hosts.items())]
    for i in instances:
        i.start()
    try:
        first = wait_for("exactly one leader", lambda: (ls := leaders(instances)) and len(ls) == 1 and ls[0], 30)
        by_node = {i.node: i for i in instances}
        survivor_host = next(i.host for i in instances if i.node != first)
        api = docker.APIClient(base_url=survivor_host, version="auto", timeout=30)
        wait_for("the group colocated", lambda: colocated(api), timeout=90)

        # The leader's own manager restarts (a dockerd restart: its Engine and the Raft member go away and
        # come back). The leader keeps or loses the lease, but never shares it.
        lab.restart(first)
        wait_for("one leader after the restart", lambda: len(leaders(instances)) == 1, timeout=60)

        # The leader's node dies. Its instance goes with it (killed, as a power loss would).
        leader = leaders(instances)[0]
        anchor_node = colocated(api)
        by_node[leader].proc.kill()  # type: ignore[union-attr]
        killed_at = time.monotonic()
        lab.kill(leader)
        rest = [i for i in instances if i.node != leader]
        api_host = next(i.host for i in rest)
        api.close()
        api = docker.APIClient(base_url=api_host, version="auto", timeout=30)
        new = wait_for("a new leader among the others", lambda: (ls := leaders(rest)) and len(ls) == 1 and ls[0], 60)
        takeover = time.monotonic() - killed_at
        assert new != leader
        if anchor_node == leader:
            moved = wait_for("the group following its anchor", lambda: (n := colocated(api)) and n != leader, 120)
            assert moved != leader
        else:
            wait_for("the group still colocated", lambda: colocated(api), timeout=60)
        print(f"\nmanager faults: takeover {takeover:.1f} s after the leader's node was killed (ttl {TTL_SECONDS:g} s)")

        # One writer at every instant: in the merged audit logs, the writer changes at most once per change
        # of leader (here: the restart may hand over once, the kill once).
        writes = sorted((w for i in instances for w in i.writes() if w["result"] == "ok"), key=lambda w: w["time"])
        writers = [w["by"] for w in writes]
        changes = sum(1 for a, b in itertools.pairwise(writers) if a != b)
        assert changes <= 2, [(w["time"], w["by"], w["target"]) for w in writes]
        for i in rest:
            assert i.proc is not None
            assert i.proc.poll() is None, i.log.read_text()[-3000:]
        api.close()
    finally:
        for i in instances:
            if i.proc is not None:
                stop_process(i.proc)
        lab.up()  # bring the killed node back for the module's clean-up
