"""Anchor-following on the real lab Swarm.

One stack ("colo") and one running ``orcastra run`` for the module; the tests run in order:
colocation -> failover of the anchor's node -> the node comes back without flapping -> a re-deploy strips
the added constraint and Orcastra puts it back -> a broken anchor is restarted with growing delays ->
dry-run/plan change nothing -> two instances, one leader, takeover when it dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.domain.labels import RESTART_AT_LABEL, RESTART_ATTEMPTS_LABEL
from orcastra.features.colocation.plan import anchor_constraint, anchor_label_key
from orcastra_lab import Lab, LabEnv

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

STACK = "colo"
ANCHOR = f"{STACK}_db"
KEY = anchor_label_key(ANCHOR)

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        # never on node1: the test kills the anchor's node and node1 is the only manager
        constraints: [node.role == worker]
  web:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
      labels:
        orcastra.follow: db          # declared by label; Orcastra adds the constraint
  worker:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.labels.orcastra.anchor.colo_db == true]   # declared in the config, constraint in the file
  broken:
    image: ${ORCASTRA_LAB_REGISTRY}/orcastra/missing:none
    deploy:
      restart_policy: {condition: none}
  brokenapp:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels:
        orcastra.follow: broken
"""

CONFIG = """
stack: colo
anchors:
  db:
    dependents: [worker]
  broken:
    dependents: [brokenapp]
    retry_intervals: [3, 6, 12]
    restart_dependents: false
nodes:
{nodes}
reconcile:
  resync_interval_seconds: 10
leader_election:
  ttl_seconds: 5
api:
  listen: 127.0.0.1:{port}
audit:
  path: {audit}
"""


def write_config(path: Path, env: LabEnv, port: int, audit: Path) -> Path:
    nodes = "\n".join(f"  {name}:\n    endpoint: {host}" for name, host in sorted(env.node_hosts.items()))
    path.write_text(CONFIG.format(nodes=nodes, port=port, audit=audit), encoding="utf-8")
    return path


def docker_cli(env: LabEnv, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "DOCKER_HOST": env.docker_host,
        "ORCASTRA_LAB_IMAGE": env.image,
        "ORCASTRA_LAB_REGISTRY": env.registry,
    }
    result = subprocess.run(
        ["docker", *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def service_spec(api: docker.APIClient, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = api.inspect_service(name)["Spec"]
    return spec


def colocated(api: docker.APIClient) -> str | None:
    """The anchor's node when the anchor and all dependents run there (2 web, 1 worker), else None."""
    db = running_nodes(api, ANCHOR)
    if len(db) != 1:
        return None
    web, worker = running_nodes(api, f"{STACK}_web"), running_nodes(api, f"{STACK}_worker")
    if web == db * 2 and worker == db and labelled_nodes(api) == db:
        return db[0]
    return None


def labelled_nodes(api: docker.APIClient) -> list[str]:
    return sorted(h for h, labels in node_labels(api).items() if labels.get(KEY) == "true")


def http_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            body = r.read()
            return r.status, json.loads(body) if path == "/healthz" else body.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()) if path == "/healthz" else ""
    except OSError:  # not listening yet (starting) or any more (killed)
        return 0, {}


@dataclass
class Colo:
    env: LabEnv
    dir: Path
    port: int
    audit: Path
    config: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.dir / "run.log").read_text(errors="replace")

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def colo(lab_env: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Colo]:
    d = tmp_path_factory.mktemp("colo")
    stack_file = d / "stack.yml"
    stack_file.write_text(STACK_FILE, encoding="utf-8")
    api = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    labels_before = node_labels(api)
    docker_cli(lab_env, "stack", "deploy", "-c", str(stack_file), STACK)
    port, audit = free_port(), d / "audit.jsonl"
    config = write_config(d / "orcastra.yml", lab_env, port, audit)
    proc = start_orcastra(["--config", str(config), "run"], lab_env.docker_host, d / "run.log", {"DEBUG": "true"})
    c = Colo(lab_env, d, port, audit, config, proc)
    try:
        yield c
    finally:
        stop_process(c.proc)
        subprocess.run(
            ["docker", "stack", "rm", STACK],
            env={**os.environ, "DOCKER_HOST": lab_env.docker_host},
            capture_output=True,
            check=False,
        )
        lease = [s for s in api.services(filters={"name": "orcastra-leader"}) if s["Spec"]["Name"] == "orcastra-leader"]
        for s in lease:
            api.remove_service(s["ID"])
        wait_for("stack removed", lambda: not api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}))
        for hostname, labels in labels_before.items():
            current = node_labels(api).get(hostname)
            if current is not None and current != labels:
                set_node_labels(api, hostname, labels)
        api.close()


def test_stack_ends_colocated(colo: Colo, docker_api: docker.APIClient) -> None:
    node = wait_for("anchor and dependents colocated", lambda: colocated(docker_api), timeout=90)
    assert node in ("node2", "node3")
    web = service_spec(docker_api, f"{STACK}_web")
    assert anchor_constraint(ANCHOR) in web["TaskTemplate"]["Placement"]["Constraints"]
    assert any(
        line["target"] == f"service/{STACK}_web" and "constraint" in line["change"] for line in colo.audit_lines()
    )
    status = run_orcastra(["--config", str(colo.config), "status", "--json"], colo.env.docker_host)
    assert status.returncode == 0, status.stderr
    groups = {g["anchor"]: g for g in json.loads(status.stdout)["groups"]}
    assert groups[ANCHOR]["colocated"] is True
    assert groups[ANCHOR]["anchor_nodes"] == [node]
    assert {d["service"]: d["colocated"] for d in groups[ANCHOR]["dependents"]} == {
        f"{STACK}_worker": True,
        f"{STACK}_web": True,
    }
    code, health = http_json(colo.port, "/healthz")
    assert code == 200
    assert health["role"] == "leader"


def test_anchor_node_killed_dependents_follow_then_no_flap(colo: Colo, lab: Lab, docker_api: docker.APIClient) -> None:
    old = wait_for("colocated", lambda: colocated(docker_api), timeout=60)
    other = "node3" if old == "node2" else "node2"
    lab.kill(old)
    try:
        new = wait_for(f"group colocated on {other}", lambda: colocated(docker_api) == other, timeout=120)
        assert new
        assert labelled_nodes(docker_api) == [other]
    finally:
        lab.start(old)
    # The node is back: nothing moves back and forth. Watch the group and the services' versions.
    versions = {s["Spec"]["Name"]: s["Version"]["Index"] for s in docker_api.services()}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert colocated(docker_api) == other, "the group moved after the old node came back"
        time.sleep(1)
    after = {s["Spec"]["Name"]: s["Version"]["Index"] for s in docker_api.services()}
    assert {k: v for k, v in after.items() if k.startswith(f"{STACK}_") and "broken" not in k} == {
        k: v for k, v in versions.items() if k.startswith(f"{STACK}_") and "broken" not in k
    }


def test_constraint_restored_after_stack_deploy(colo: Colo, docker_api: docker.APIClient) -> None:
    wait_for("colocated", lambda: colocated(docker_api), timeout=60)
    docker_cli(colo.env, "stack", "deploy", "-c", str(colo.dir / "stack.yml"), STACK)

    def restored() -> bool:
        web = service_spec(docker_api, f"{STACK}_web")
        constraints = (web["TaskTemplate"].get("Placement") or {}).get("Constraints") or []
        return anchor_constraint(ANCHOR) in constraints

    wait_for("constraint restored by Orcastra", restored, timeout=30)
    wait_for("colocated again", lambda: colocated(docker_api), timeout=90)


def test_broken_anchor_restarted_with_growing_delays(colo: Colo, docker_api: docker.APIClient) -> None:
    anchor = f"{STACK}_broken"

    def attempts() -> int:
        return int((service_spec(docker_api, anchor).get("Labels") or {}).get(RESTART_ATTEMPTS_LABEL, "0"))

    seen: dict[int, float] = {}

    def reached(n: int) -> bool:
        a = attempts()
        if a and a not in seen:
            seen[a] = float(service_spec(docker_api, anchor)["Labels"][RESTART_AT_LABEL])
        return a >= n

    wait_for("third restart attempt", lambda: reached(3), timeout=90, interval=0.5)
    gaps = [seen[i + 1] - seen[i] for i in sorted(seen) if i + 1 in seen]
    assert gaps, seen
    assert all(g >= 5 for g in gaps), f"restarts too close together: {seen}"  # 6 s, then 12 s
    if len(gaps) >= 2:
        assert gaps[1] > gaps[0]

    status = run_orcastra(["--config", str(colo.config), "status", "--json"], colo.env.docker_host)
    group = next(g for g in json.loads(status.stdout)["groups"] if g["anchor"] == anchor)
    assert group["colocated"] is False
    assert group["restart_attempts"] >= 3
    assert "anchor not running" in group["why"]
    code, metrics = http_json(colo.port, "/metrics")
    assert code == 200
    line = next(
        x for x in metrics.splitlines() if x.startswith(f'orcastra_anchor_restart_attempts{{anchor="{anchor}"}}')
    )
    assert float(line.split()[-1]) >= 2
    assert f'orcastra_anchor_colocated{{anchor="{ANCHOR}"}} 1.0' in metrics


def test_dry_run_and_plan_change_nothing(colo: Colo, docker_api: docker.APIClient, tmp_path: Path) -> None:
    wait_for("colocated", lambda: colocated(docker_api), timeout=60)
    # Pretend the labels drifted: remove the anchor label by hand on a config where Orcastra is paused
    # (we stop the running instance for this test and start it again after).
    stop_process(colo.proc)
    node = labelled_nodes(docker_api)[0]
    set_node_labels(docker_api, node, {k: v for k, v in node_labels(docker_api)[node].items() if k != KEY})
    versions = {s["ID"]: s["Version"]["Index"] for s in docker_api.services()}
    node_versions = {n["ID"]: n["Version"]["Index"] for n in docker_api.nodes()}

    planned = run_orcastra(["--config", str(colo.config), "plan", "--json"], colo.env.docker_host)
    assert planned.returncode == 0, planned.stderr
    actions = json.loads(planned.stdout)["actions"]
    assert any(a["target"] == f"node/{node}" and a["set_labels"].get(KEY) == "true" for a in actions)
    dry = run_orcastra(["--config", str(colo.config), "run", "--once", "--dry-run"], colo.env.docker_host)
    assert dry.returncode == 0, dry.stderr
    assert f"would update-node-labels node/{node}" in dry.stderr

    assert {s["ID"]: s["Version"]["Index"] for s in docker_api.services()} == versions
    assert {n["ID"]: n["Version"]["Index"] for n in docker_api.nodes()} == node_versions
    colo.proc = start_orcastra(["--config", str(colo.config), "run"], colo.env.docker_host, colo.dir / "run2.log")
    wait_for("label restored by the real run", lambda: labelled_nodes(docker_api) == [node], timeout=30)


def test_two_instances_one_leader_and_takeover(colo: Colo, docker_api: docker.APIClient) -> None:
    wait_for("first instance leads", lambda: http_json(colo.port, "/healthz")[1].get("role") == "leader", timeout=30)
    port2 = free_port()
    config2 = write_config(colo.dir / "orcastra2.yml", colo.env, port2, colo.dir / "audit2.jsonl")
    second = start_orcastra(["--config", str(config2), "run"], colo.env.docker_host, colo.dir / "second.log")
    try:
        wait_for(
            "second instance follows", lambda: http_json(port2, "/healthz")[1].get("role") == "follower", timeout=30
        )
        # Drift: only the leader may repair it; the follower's audit log stays empty.
        node = labelled_nodes(docker_api)[0]
        set_node_labels(docker_api, node, {k: v for k, v in node_labels(docker_api)[node].items() if k != KEY})
        wait_for("leader repairs the label", lambda: labelled_nodes(docker_api) == [node], timeout=30)
        assert not (colo.dir / "audit2.jsonl").exists()

        # The leader dies without releasing its lease: the follower takes over within the lease period.
        colo.proc.send_signal(signal.SIGKILL)
        colo.proc.wait()
        killed_at = time.monotonic()
        wait_for("follower takes over", lambda: http_json(port2, "/healthz")[1].get("role") == "leader", timeout=30)
        took = time.monotonic() - killed_at
        assert took <= 5 * 2, f"takeover took {took:.1f} s with a 5 s lease"
        set_node_labels(docker_api, node, {k: v for k, v in node_labels(docker_api)[node].items() if k != KEY})
        wait_for("new leader repairs the label", lambda: labelled_nodes(docker_api) == [node], timeout=30)
        assert (colo.dir / "audit2.jsonl").exists()
    finally:
        stop_process(second)
