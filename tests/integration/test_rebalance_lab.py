"""Memory-aware rebalancing on the real lab Swarm, with real memory pressure.

Nodes get memory limits (node1 1 GiB, node2 and node3 512 MiB: the lab puts each node's containers under a
memory-limited cgroup and shows it to a real node_exporter per node). Containers hold real memory in tmpfs.
node2 is pushed over `high` by an anchor group and a hog that opts out; Orcastra must move the anchor group,
as one, to the node it chose, bring node2 under `high`, and then leave everything alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.domain.labels import MOVED_AT_LABEL, MOVED_TO_LABEL
from orcastra.features.rebalance.labels import pin_label_key
from orcastra_lab import Lab, LabEnv

from .test_colocation_lab import docker_cli
from .util import (
    free_port,
    node_labels,
    run_orcastra,
    running_nodes,
    set_node_labels,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

STACK = "rb"
MIB = 2**20


def fill(mib: int) -> str:
    return (
        f"""["/bin/sh", "-c", "dd if=/dev/zero of=/fill/x bs=1M count={mib} 2>/dev/null; """
        """trap 'exit 0' TERM; sleep infinity & wait"]"""
    )


STACK_FILE = f"""
version: "3.8"
x-fill: &tmpfs
  - type: tmpfs
    target: /fill
    tmpfs: {{size: 400000000}}
services:
  db:
    image: ${{ORCASTRA_LAB_IMAGE}}
    command: {fill(110)}
    volumes: *tmpfs
  app:
    image: ${{ORCASTRA_LAB_IMAGE}}
    command: {fill(20)}
    volumes: *tmpfs
    deploy:
      labels: {{orcastra.follow: db}}
      placement:
        constraints: [node.labels.orcastra.anchor.rb_db == true]
  hog:
    image: ${{ORCASTRA_LAB_IMAGE}}
    command: {fill(150)}
    volumes: *tmpfs
    deploy:
      labels: {{orcastra.rebalance: "false"}}
"""

CONFIG = """
stack: rb
nodes:
{nodes}
rebalance:
  enabled: true
  high_percent: 45
  target_percent: 35
  sustained_seconds: 4
  monitor_interval_seconds: 1
  global_cooldown_seconds: 600
  service_cooldown_seconds: 600
  stale_after_seconds: 30
  move_timeout_seconds: 90
  sources:
    node_exporter:
{exporters}
reconcile:
  resync_interval_seconds: 5
leader_election:
  enabled: false
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


def write_config(path: Path, env: LabEnv, audit: Path, *, skip_exporter: str | None = None) -> Path:
    nodes = "\n".join(f"  {n}:\n    endpoint: {h}" for n, h in sorted(env.node_hosts.items()))
    exporters = "\n".join(f"      {n}: {url}" for n, url in sorted(env.node_exporters.items()) if n != skip_exporter)
    path.write_text(CONFIG.format(nodes=nodes, exporters=exporters, port=free_port(), audit=audit), encoding="utf-8")
    return path


def set_availability(api: docker.APIClient, hostname: str, availability: str) -> None:
    for _ in range(5):
        node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
        spec = dict(node["Spec"])
        spec["Availability"] = availability
        try:
            api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
            return
        except docker.errors.APIError:
            continue
    raise AssertionError(f"could not set {hostname} {availability}")


def moves(audit: Path) -> list[dict[str, Any]]:
    if not audit.exists():
        return []
    lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    return [x for x in lines if x["controller"] == "rebalance" and x["target"].startswith("service/")]


def node_used_percent(env: LabEnv, tmp: Path, node: str) -> float:
    """node memory as Orcastra's own plan reads it (from that node's real node_exporter)."""
    cfg = write_config(tmp / "probe.yml", env, tmp / "probe-audit.jsonl")
    out = run_orcastra(["--config", str(cfg), "plan", "--json"], env.docker_host)
    assert out.returncode == 0, out.stderr
    nodes = {n["node"]: n for n in json.loads(out.stdout)["rebalance"]["nodes"]}
    value = nodes[node]["used_percent"]
    assert value is not None
    return float(value)


@dataclass
class Rb:
    env: LabEnv
    dir: Path
    audit: Path
    config: Path


@pytest.fixture(scope="module")
def rb(lab_env: LabEnv, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rb]:
    d = tmp_path_factory.mktemp("rb")
    api = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    labels_before = node_labels(api)
    lab.set_node_memory("node1", 1024 * MIB)
    lab.set_node_memory("node2", 512 * MIB)
    lab.set_node_memory("node3", 512 * MIB)
    # Everything starts on node2: drain the others while deploying (Swarm never moves running tasks back).
    set_availability(api, "node1", "drain")
    set_availability(api, "node3", "drain")
    # What Orcastra's colocation would do (it is not running yet): the anchor's node carries its label.
    set_node_labels(api, "node2", {**node_labels(api)["node2"], "orcastra.anchor.rb_db": "true"})
    try:
        (d / "stack.yml").write_text(STACK_FILE, encoding="utf-8")
        docker_cli(lab_env, "stack", "deploy", "-c", str(d / "stack.yml"), STACK)
        wait_for(
            "stack running on node2",
            lambda: all(running_nodes(api, f"{STACK}_{s}") == ["node2"] for s in ("db", "app", "hog")),
            timeout=120,
        )
    finally:
        set_availability(api, "node1", "active")
        set_availability(api, "node3", "active")
    audit = d / "audit.jsonl"
    try:
        yield Rb(lab_env, d, audit, write_config(d / "orcastra.yml", lab_env, audit))
    finally:
        subprocess.run(
            ["docker", "stack", "rm", STACK],
            env={**os.environ, "DOCKER_HOST": lab_env.docker_host},
            capture_output=True,
            check=False,
        )
        wait_for("stack removed", lambda: not api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}))
        for node in ("node1", "node2", "node3"):
            lab.set_node_memory(node, None)
        for hostname, labels in labels_before.items():
            if node_labels(api).get(hostname) != labels:
                set_node_labels(api, hostname, labels)
        api.close()


def test_plan_and_dry_run_change_nothing(rb: Rb, docker_api: docker.APIClient) -> None:
    wait_for("node2 over high", lambda: node_used_percent(rb.env, rb.dir, "node2") > 45, timeout=60, interval=1)
    versions = {s["ID"]: s["Version"]["Index"] for s in docker_api.services()}
    node_versions = {n["ID"]: n["Version"]["Index"] for n in docker_api.nodes()}
    out = run_orcastra(["--config", str(rb.config), "plan", "--json"], rb.env.docker_host)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["rebalance"]
    (move,) = plan["moves"]
    assert move["unit"] == f"{STACK}_db"
    assert sorted(move["services"]) == [f"{STACK}_app", f"{STACK}_db"]
    assert move["from_node"] == "node2"
    assert move["from_after_percent"] < 45 < move["from_before_percent"]
    assert move["to_after_percent"] <= 35
    assert any("opted out" in f["message"] for f in plan["findings"] if f["subject"] == f"{STACK}_hog")
    dry = run_orcastra(["--config", str(rb.config), "run", "--once", "--dry-run"], rb.env.docker_host)
    assert dry.returncode == 0, dry.stderr
    assert {s["ID"]: s["Version"]["Index"] for s in docker_api.services()} == versions
    assert {n["ID"]: n["Version"]["Index"] for n in docker_api.nodes()} == node_versions


def test_missing_data_moves_nothing(rb: Rb, docker_api: docker.APIClient) -> None:
    cfg = write_config(rb.dir / "no-node2.yml", rb.env, rb.dir / "audit-missing.jsonl", skip_exporter="node2")
    proc = start_orcastra(["--config", str(cfg), "run"], rb.env.docker_host, rb.dir / "missing.log")
    try:
        deadline = time.monotonic() + 10  # well past sustained_seconds (4 s) at a 1 s monitor interval
        while time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.5)
    finally:
        stop_process(proc)
    assert moves(rb.dir / "audit-missing.jsonl") == []
    assert running_nodes(docker_api, f"{STACK}_db") == ["node2"]
    assert "node2" in (rb.dir / "missing.log").read_text()


def test_overloaded_node_moves_anchor_group_then_nothing_flaps(rb: Rb, lab: Lab, docker_api: docker.APIClient) -> None:
    proc = start_orcastra(["--config", str(rb.config), "run"], rb.env.docker_host, rb.dir / "run.log")
    try:
        wait_for("a move is made", lambda: moves(rb.audit), timeout=60)
        db = docker_api.inspect_service(f"{STACK}_db")
        target = db["Spec"]["Labels"][MOVED_TO_LABEL]
        assert target in ("node1", "node3")
        assert node_labels(docker_api)[target].get(pin_label_key(f"{STACK}_db")) == "true"
        wait_for(
            f"group running on {target}",
            lambda: (
                running_nodes(docker_api, f"{STACK}_db") == [target]
                and running_nodes(docker_api, f"{STACK}_app") == [target]
            ),
            timeout=90,
        )
        assert running_nodes(docker_api, f"{STACK}_hog") == ["node2"]  # opted out: never moved
        wait_for("node2 under high", lambda: node_used_percent(rb.env, rb.dir, "node2") < 45, timeout=60, interval=1)
        # Now watch >= 10 monitor cycles: nothing else moves, nothing moves back.
        moved_at = db["Spec"]["Labels"][MOVED_AT_LABEL]
        count = len(moves(rb.audit))
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(1)
        assert len(moves(rb.audit)) == count
        assert docker_api.inspect_service(f"{STACK}_db")["Spec"]["Labels"][MOVED_AT_LABEL] == moved_at
        assert running_nodes(docker_api, f"{STACK}_db") == [target]
        log = (rb.dir / "run.log").read_text()
        assert "now runs on" in log  # the move was verified

        # Borderline: the node the group landed on now goes over `high` itself (its memory shrinks). The group
        # must not be moved back (nor anywhere: cooldowns) over >= 10 monitor cycles.
        lab.set_node_memory(target, 256 * MIB)
        wait_for(f"{target} over high", lambda: node_used_percent(rb.env, rb.dir, target) > 45, timeout=30, interval=1)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(1)
        assert len(moves(rb.audit)) == count
        assert running_nodes(docker_api, f"{STACK}_db") == [target]
        assert "cooldown" in (rb.dir / "run.log").read_text()
    finally:
        stop_process(proc)
