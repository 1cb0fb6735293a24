"""Node reboots on a real Swarm: this module's own lab ("rbt", 3 nodes, 1 manager), torn down at the end.

An anchor group (stack "rbt": anchor ``db`` + dependent ``worker`` constrained to the anchor's label) runs on
a worker, with one ``orcastra run`` keeping it together and taking commands (command file, ``orcastra do``,
HTTP API). ``reboot NODE`` through each channel restarts the node's dockerd (the lab's reboot) after draining
it: the group moves to the other worker as one, the node comes back Ready and Active, the lock is gone, and the
channel reports the result. The scheduled mode reboots the nodes whose sentinel file exists, one after the
other, once each, and only inside its window. A reboot whose node never comes back, or whose command fails,
aborts at the named step and leaves the node drained.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.adapters.engine.adapter import EngineAdapter, EngineSettings
from orcastra.features.colocation.plan import anchor_label_key
from orcastra.features.reboot.plan import LOCK_LABEL
from orcastra.features.reboot.settings import RebootSettings
from orcastra.runtime.executor import AuditLog, EngineExecutor
from orcastra.runtime.reboot import RebootStepError, reboot_node
from orcastra_lab import Lab, LabEnv

from .util import (
    free_port,
    nodes_by_hostname,
    run_orcastra,
    running_nodes,
    start_orcastra,
    stop_process,
    wait_for,
)

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
TOKEN = "rbt-token-5c1e"
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
  token: {token}
commands:
  file: {commands}
audit:
  path: {audit}
reboot:
  # The lab's reboot: restart the node's dockerd. It logs when it runs and, like a real reboot, clears the
  # node's reboot-required sentinel.
  command: >-
    echo "start {{node}} $(date +%s.%N)" >> {dir}/reboots.log
    && {python} -m orcastra lab restart --name {lab} {{node}}
    && rm -f {dir}/{{node}}.required
    && echo "end {{node}} $(date +%s.%N)" >> {dir}/reboots.log
  sentinel_command: 'echo "{{node}} $(date +%s.%N)" >> {dir}/sentinels.log; test -f {dir}/{{node}}.required'
  drain_timeout_seconds: 90
  command_timeout_seconds: 180
  ready_timeout_seconds: 120
  poll_interval_seconds: 0.5
  lock_ttl_seconds: 600
  schedule: {schedule}
"""
SCHEDULE_OFF = {"enabled": False, "check_interval_seconds": 1}


@dataclass
class Rbt:
    lab: Lab
    env: LabEnv
    dir: Path
    api: docker.APIClient
    engine: EngineAdapter
    executor: EngineExecutor
    config: Path
    nodes: str
    port: int

    @property
    def commands(self) -> Path:
        return self.dir / "commands.yml"

    @property
    def log(self) -> Path:
        return self.dir / "run.log"

    def write_config(self, schedule: dict[str, Any]) -> None:
        """(Re)write the daemon's config; it reloads a changed file within about a second."""
        text = CONFIG.format(
            nodes=self.nodes,
            port=self.port,
            token=TOKEN,
            commands=self.commands,
            audit=self.dir / "daemon-audit.jsonl",
            dir=self.dir,
            python=sys.executable,
            lab=LAB_NAME,
            schedule=json.dumps(schedule),
        )
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config)

    def reboots(self) -> list[tuple[str, str, float]]:
        """("start"|"end", node, time) for each line the lab's reboot command logged."""
        path = self.dir / "reboots.log"
        lines = path.read_text().split("\n") if path.exists() else []
        return [(w[0], w[1], float(w[2])) for w in (line.split() for line in lines) if len(w) == 3]

    def sentinel_checks(self) -> list[tuple[str, float]]:
        path = self.dir / "sentinels.log"
        lines = path.read_text().split("\n") if path.exists() else []
        return [(w[0], float(w[1])) for w in (line.split() for line in lines) if len(w) == 2]

    def daemon_audit(self) -> list[dict[str, Any]]:
        path = self.dir / "daemon-audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def command_results(self) -> list[dict[str, Any]]:
        path = self.commands.parent / (self.commands.name + ".results.jsonl")
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in (json.loads(x) for x in lines if x.strip()) if r.get("result") in ("ok", "error")]


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
        executor = EngineExecutor(engine, AuditLog(path=d / "reboot-audit.jsonl"))
        rbt = Rbt(lab, env, d, api, engine, executor, d / "orcastra.yml", nodes, free_port())
        rbt.write_config(SCHEDULE_OFF)
        proc = start_orcastra(["--config", str(rbt.config), "run"], env.docker_host, rbt.log)
        wait_for("the group together on node2", lambda: group_on(api) == "node2", timeout=120)
        set_availability(api, "node3", "active")
        yield rbt
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


def dockerd_pid(rbt: Rbt, node: str) -> int | None:
    return next(n.pid for n in rbt.lab.status() if n.name == node)


def availability_changes(rbt: Rbt, node: str) -> list[str]:
    return [
        r["change"]
        for r in rbt.daemon_audit()
        if r["action"] == "set-node-availability" and r["target"] == f"node/{node}" and r["controller"] == "reboot"
    ]


class Before:
    """What a reboot of ``node`` is checked against: its dockerd, the audit and the reboot log so far."""

    def __init__(self, rbt: Rbt, node: str) -> None:
        self.node = node
        self.pid = dockerd_pid(rbt, node)
        self.changes = len(availability_changes(rbt, node))
        self.reboots = len(rbt.reboots())
        self.group = group_on(rbt.api)
        assert self.group == node, "the anchor group must be on the node to reboot"
        assert self.pid is not None


def assert_rebooted(rbt: Rbt, before: Before) -> None:
    """Drained (audited by the daemon), its dockerd really restarted, Ready and Active again, lock released,
    and the anchor group moved, as one, to the other worker."""
    node = before.node
    assert availability_changes(rbt, node)[before.changes :] == ["availability drain", "availability active"]
    assert [(what, n) for what, n, _ in rbt.reboots()[before.reboots :]] == [("start", node), ("end", node)]
    pid = dockerd_pid(rbt, node)
    assert pid is not None
    assert pid != before.pid
    assert node_state(rbt.api, node) == ("ready", "active")
    assert swarm_lock(rbt.api) is None
    other = "node3" if node == "node2" else "node2"
    assert group_on(rbt.api) == other


def test_reboot_from_the_command_file(rbt: Rbt) -> None:
    before = Before(rbt, "node2")
    rbt.commands.write_text("- reboot node2\n", encoding="utf-8")
    result = wait_for(
        "the reboot's result in the results file",
        lambda: next((r for r in rbt.command_results() if r["command"] == "reboot node2"), None),
        timeout=240,
    )
    assert result["result"] == "ok", result
    assert result["message"].startswith("rebooted node2"), result
    assert "reboot node2" not in rbt.commands.read_text()  # taken: it never runs twice
    assert_rebooted(rbt, before)
    # The group stays together on node3 (the node coming back pulls nothing back).
    wait_for("the group still together on node3", lambda: group_on(rbt.api) == "node3", timeout=10)


def test_reboot_from_the_cli(rbt: Rbt) -> None:
    before = Before(rbt, "node3")
    done = run_orcastra(["--config", str(rbt.config), "do", "reboot", "node3"], rbt.env.docker_host, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebooted node3" in done.stdout
    assert_rebooted(rbt, before)


def test_reboot_from_the_http_api(rbt: Rbt) -> None:
    before = Before(rbt, "node2")
    request = urllib.request.Request(
        f"http://127.0.0.1:{rbt.port}/v1/commands",
        data=json.dumps({"command": "reboot", "node": "node2"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["result"] == "ok", body
    assert body["command"] == "reboot node2"
    assert body["message"].startswith("rebooted node2")
    assert_rebooted(rbt, before)


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


def reloads(rbt: Rbt) -> int:
    return rbt.log.read_text().count("configuration reloaded")


def use_schedule(rbt: Rbt, schedule: dict[str, Any]) -> None:
    """Give the running daemon this schedule and wait until it has reloaded its config."""
    seen = reloads(rbt)
    rbt.write_config({"check_interval_seconds": 1, **schedule})
    wait_for("the daemon to reload its config", lambda: reloads(rbt) > seen, timeout=30)


def test_scheduled_reboots_only_inside_the_window_one_node_at_a_time_once_each(rbt: Rbt) -> None:
    for node in ("node2", "node3"):
        (rbt.dir / f"{node}.required").touch()  # both workers say they need a reboot
    reboots_before = len(rbt.reboots())
    pids = {node: dockerd_pid(rbt, node) for node in ("node2", "node3")}
    try:
        # Outside the window (every day but today): no sentinel is even checked, nothing is rebooted.
        today = dt.datetime.now().strftime("%a").lower()
        other_days = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
        use_schedule(rbt, {"enabled": True, "days": other_days, "start": "00:00", "end": "23:59"})
        time.sleep(3.5)  # three checks of the schedule; asserting that nothing happens needs a fixed wait
        assert rbt.sentinel_checks() == []
        assert len(rbt.reboots()) == reboots_before
        assert {node: dockerd_pid(rbt, node) for node in pids} == pids

        # Inside the window: node2, then node3, each once.
        now = dt.datetime.now()
        start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
        end = (now + dt.timedelta(hours=1)).strftime("%H:%M")
        use_schedule(rbt, {"enabled": True, "start": start, "end": end})
        wait_for(
            "both scheduled reboots done",
            lambda: sum(what == "end" for what, _, _ in rbt.reboots()[reboots_before:]) == 2,
            timeout=300,
            interval=0.5,
        )
        done = rbt.reboots()[reboots_before:]
        assert [(what, node) for what, node, _ in done] == [
            ("start", "node2"),
            ("end", "node2"),
            ("start", "node3"),
            ("end", "node3"),
        ]
        assert done[1][2] <= done[2][2]  # node3 started after node2 was back: one node at a time
        last_end = done[3][2]
        # Later checks find no sentinel set any more: nobody is rebooted a second time.
        wait_for(
            "a full round of sentinel checks after the last reboot",
            lambda: {node for node, t in rbt.sentinel_checks() if t > last_end} >= {"node1", "node2", "node3"},
            timeout=60,
        )
        assert len(rbt.reboots()) == reboots_before + 4
        assert not (rbt.dir / "node2.required").exists()
        assert not (rbt.dir / "node3.required").exists()
        for node in ("node2", "node3"):
            assert dockerd_pid(rbt, node) != pids[node]
            assert node_state(rbt.api, node) == ("ready", "active")
        assert swarm_lock(rbt.api) is None
        assert "scheduled reboot: rebooted node2" in rbt.log.read_text()
        assert "scheduled reboot: rebooted node3" in rbt.log.read_text()
        wait_for("the group together again", lambda: group_on(rbt.api) is not None, timeout=60)
    finally:
        use_schedule(rbt, SCHEDULE_OFF)
        for node in ("node2", "node3"):
            (rbt.dir / f"{node}.required").unlink(missing_ok=True)
