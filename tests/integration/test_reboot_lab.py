"""Node reboots on a real Swarm: this module's own lab ("rbt", 3 nodes, 1 manager), torn down at the end.

An anchor group (stack "rbt": anchor ``db`` + dependent ``worker`` constrained to the anchor's label) runs on
node2 with an ``orcastra run`` keeping it together; ``reboot_node(node2)`` with the lab's restart as the reboot
command must move the group to node3 as one, bring node2 back Ready and Active and remove the lock. A reboot
whose node never comes back, or whose command fails, aborts at the named step and leaves the node drained.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from orcastra.controllers.colocation import anchor_label_key
from orcastra.engine.adapter import EngineAdapter, EngineSettings
from orcastra.executor import AuditLog, EngineExecutor
from orcastra.lab import Lab, LabEnv
from orcastra.reboot.plan import LOCK_LABEL
from orcastra.reboot.run import RebootStepError, reboot_node
from orcastra.reboot.settings import RebootSettings

from .util import free_port, nodes_by_hostname, running_nodes, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

LAB_NAME = "rbt"
STACK = "rbt"
ANCHOR = f"{STACK}_db"
STACK_FILE = f"""
version: "3.8"
services:
  db:
    image: ${{ORCASTRA_LAB_IMAGE}}
    deploy:
      placement:
        constraints: [node.role == worker]
  worker:
    image: ${{ORCASTRA_LAB_IMAGE}}
    deploy:
      placement:
        constraints: [node.labels.{anchor_label_key(ANCHOR)} == true]
"""
CONFIG = """
stack: rbt
anchors:
  db:
    dependents: [worker]
nodes:
{nodes}
reconcile:
  resync_interval_seconds: 5
leader_election:
  ttl_seconds: 5
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


@dataclass
class Rbt:
    lab: Lab
    env: LabEnv
    dir: Path
    api: docker.APIClient
    engine: EngineAdapter
    executor: EngineExecutor


def set_availability(api: docker.APIClient, hostname: str, availability: str) -> None:
    for _ in range(5):
        n = nodes_by_hostname(api)[hostname]
        spec = dict(n["Spec"])
        spec["Availability"] = availability
        try:
            api.update_node(n["ID"], n["Version"]["Index"], node_spec=spec)
            return
        except docker.errors.APIError as e:
            if "out of sequence" not in str(e) and e.status_code != 409:
                raise
    raise AssertionError(f"could not set {hostname} {availability}")


def swarm_lock(api: docker.APIClient) -> str | None:
    labels = api.inspect_swarm()["Spec"].get("Labels") or {}
    value = labels.get(LOCK_LABEL)
    return str(value) if value is not None else None


def remove_lock(api: docker.APIClient) -> None:
    raw = api.inspect_swarm()
    spec = dict(raw["Spec"])
    labels = dict(spec.get("Labels") or {})
    if labels.pop(LOCK_LABEL, None) is not None:
        spec["Labels"] = labels
        api.update_swarm(version=raw["Version"]["Index"], swarm_spec=spec)


def node_state(api: docker.APIClient, hostname: str) -> tuple[str, str]:
    n = nodes_by_hostname(api)[hostname]
    return n["Status"]["State"], n["Spec"]["Availability"]


def group_on(api: docker.APIClient) -> str | None:
    db, worker = running_nodes(api, ANCHOR), running_nodes(api, f"{STACK}_worker")
    return db[0] if len(db) == 1 and db == worker else None


@pytest.fixture(scope="module")
def rbt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rbt]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab = Lab(name=LAB_NAME)
    env = lab.up(nodes=3, managers=1, swarm=True)
    d = tmp_path_factory.mktemp("rbt")
    api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=30)
    engine = EngineAdapter(EngineSettings(host=env.docker_host))
    proc: subprocess.Popen[bytes] | None = None
    docker_env = {**os.environ, "DOCKER_HOST": env.docker_host, "ORCASTRA_LAB_IMAGE": env.image}
    try:
        # The group must start on node2: node3 takes no new tasks while the stack is placed.
        set_availability(api, "node3", "pause")
        (d / "stack.yml").write_text(STACK_FILE, encoding="utf-8")
        subprocess.run(
            ["docker", "stack", "deploy", "-c", str(d / "stack.yml"), STACK],
            env=docker_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        nodes = "\n".join(f"  {name}:\n    endpoint: {host}" for name, host in sorted(env.node_hosts.items()))
        config = d / "orcastra.yml"
        config.write_text(CONFIG.format(nodes=nodes, port=free_port(), audit=d / "daemon-audit.jsonl"))
        proc = start_orcastra(["--config", str(config), "run"], env.docker_host, d / "run.log")
        wait_for("the group together on node2", lambda: group_on(api) == "node2", timeout=120)
        set_availability(api, "node3", "active")
        yield Rbt(lab, env, d, api, engine, EngineExecutor(engine, AuditLog(path=d / "reboot-audit.jsonl")))
    finally:
        if proc is not None:
            stop_process(proc)
        engine.close()
        api.close()
        lab.down()


def settings(command: str, ready_timeout: float = 120.0) -> RebootSettings:
    return RebootSettings(
        command=command,
        drain_timeout_seconds=90,
        command_timeout_seconds=180,
        ready_timeout_seconds=ready_timeout,
        poll_interval_seconds=0.5,
        lock_ttl_seconds=600,
    )


def test_reboot_moves_the_group_and_brings_the_node_back(rbt: Rbt) -> None:
    command = f"{sys.executable} -m orcastra lab restart --name {LAB_NAME} {{node}}"
    message = reboot_node(rbt.engine, rbt.executor, settings(command), "node2")
    assert "rebooted node2" in message
    audit = (rbt.dir / "reboot-audit.jsonl").read_text()
    assert "availability drain" in audit
    assert "availability active" in audit
    assert group_on(rbt.api) == "node3"
    assert node_state(rbt.api, "node2") == ("ready", "active")
    assert swarm_lock(rbt.api) is None
    # The group stays together on node3 (the node coming back pulls nothing back).
    wait_for("the group still together on node3", lambda: group_on(rbt.api) == "node3", timeout=10)


def test_node_that_never_comes_back_aborts_drained_and_keeps_the_lock(rbt: Rbt) -> None:
    try:
        with pytest.raises(RebootStepError) as e:
            reboot_node(rbt.engine, rbt.executor, settings("true {node}", ready_timeout=5), "node2")
        assert e.value.step == "wait-ready"
        assert "node2" in str(e.value)
        assert node_state(rbt.api, "node2") == ("ready", "drain")
        lock = swarm_lock(rbt.api)
        assert lock is not None
        assert lock.startswith("node2|")
        # The operator looked, cleared the lock: a reboot whose command fails stops at that step, drained.
        remove_lock(rbt.api)
        with pytest.raises(RebootStepError) as e:
            reboot_node(rbt.engine, rbt.executor, settings("false {node}"), "node2")
        assert e.value.step == "reboot-command"
        assert node_state(rbt.api, "node2") == ("ready", "drain")
        assert swarm_lock(rbt.api) is not None
    finally:
        remove_lock(rbt.api)
        set_availability(rbt.api, "node2", "active")
