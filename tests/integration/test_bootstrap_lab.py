"""Bootstrap and healing on real daemons: the module's own lab ("boot"), three bare dockerds.

Each test starts from bare daemons (every node leaves whatever swarm it is in) and asserts on what the
Engines report afterwards; the lab is torn down at the end of the module unless ORCASTRA_LAB_KEEP=1.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from orcastra.bootstrap import run_bootstrap
from orcastra.bootstrap.engine import SwarmEngine
from orcastra.config.model import Config
from orcastra.engine import EngineSettings
from orcastra.executor import AuditLog
from orcastra.lab import Lab, LabEnv
from orcastra.snapshot import Node

pytestmark = pytest.mark.lab

LAB_NAME = "boot"
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def boot_lab() -> Iterator[tuple[Lab, LabEnv]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, a bridge, iptables, dockerd)")
    lab = Lab(name=LAB_NAME)
    env = lab.up(nodes=3, swarm=False)
    yield lab, env
    if os.environ.get("ORCASTRA_LAB_KEEP") != "1":
        lab.down()


def engine(host: str) -> SwarmEngine:
    return SwarmEngine(EngineSettings(host=host, timeout_seconds=60.0))


@pytest.fixture
def bare(boot_lab: tuple[Lab, LabEnv]) -> tuple[Lab, LabEnv]:
    """Every node out of any swarm: the starting point of each test."""
    _, env = boot_lab

    def leave(host: str) -> None:
        with engine(host) as e:
            if e.local_swarm().local_state != "inactive":
                e.leave_swarm()

    # All at once: one after the other, the later managers' leaves wait out timeouts on a Raft that has
    # already lost its quorum (measured: 33 s for three managers).
    with ThreadPoolExecutor(max_workers=len(env.node_hosts)) as pool:
        list(pool.map(leave, env.node_hosts.values()))
    return boot_lab


def config_for(lab: Lab, env: LabEnv, manager_target: int) -> Config:
    addresses = {s.name: s.address for s in lab.status()}
    return Config.model_validate(
        {
            "docker": {"host": env.docker_host},
            "nodes": {
                name: {"endpoint": host, "ip": addresses[name], "role": "manager"}
                for name, host in env.node_hosts.items()
            },
            "bootstrap": {"mode": "once", "manager_target": manager_target},
        }
    )


def nodes_of(env: LabEnv) -> tuple[Node, ...]:
    with engine(env.docker_host) as e:
        return e.list_nodes()


def wait_all_ready(env: LabEnv, count: int) -> tuple[Node, ...]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        nodes = nodes_of(env)
        if len(nodes) == count and all(n.ready for n in nodes):
            return nodes
        if time.monotonic() > deadline:
            pytest.fail(f"nodes never all Ready: {[(n.hostname, n.state, n.role) for n in nodes]}")
        time.sleep(0.5)


def test_three_bare_daemons_become_three_managers_without_leaking_tokens(
    bare: tuple[Lab, LabEnv], caplog: pytest.LogCaptureFixture
) -> None:
    lab, env = bare
    audit_stream = io.StringIO()
    caplog.set_level(logging.DEBUG)
    dry = run_bootstrap(config_for(lab, env, 3), dry_run=True, audit=AuditLog(stream=audit_stream))
    assert [o.result for o in dry.outcomes] == ["dry-run"] * 3
    with engine(env.docker_host) as e:
        assert e.local_swarm().local_state == "inactive"  # a dry run changes nothing

    run = run_bootstrap(config_for(lab, env, 3), dry_run=False, audit=AuditLog(stream=audit_stream))
    assert run.ok, run
    nodes = wait_all_ready(env, 3)
    assert sorted((n.hostname, n.role) for n in nodes) == [
        ("node1", "manager"),
        ("node2", "manager"),
        ("node3", "manager"),
    ]
    # A second cycle finds nothing to do.
    again = run_bootstrap(config_for(lab, env, 3), dry_run=False, audit=AuditLog(stream=audit_stream))
    assert again.plan.actions == ()

    with engine(env.docker_host) as e:
        tokens = e.join_tokens()
    assert tokens.worker
    assert tokens.manager
    logged = caplog.text + audit_stream.getvalue() + repr(run) + repr(again)
    assert "join-swarm" in audit_stream.getvalue()  # the audit did record the joins
    assert tokens.worker not in logged
    assert tokens.manager not in logged


def test_target_one_gives_one_manager_and_two_workers(bare: tuple[Lab, LabEnv]) -> None:
    lab, env = bare
    run = run_bootstrap(config_for(lab, env, 1), dry_run=False, audit=None)
    assert run.ok, run
    nodes = wait_all_ready(env, 3)
    assert sorted((n.hostname, n.role) for n in nodes) == [
        ("node1", "manager"),
        ("node2", "worker"),
        ("node3", "worker"),
    ]


def test_a_node_that_left_is_joined_again(bare: tuple[Lab, LabEnv], caplog: pytest.LogCaptureFixture) -> None:
    lab, env = bare
    cfg = config_for(lab, env, 3)
    assert run_bootstrap(cfg, dry_run=False, audit=None).ok
    before = {n.hostname: n.id for n in wait_all_ready(env, 3)}
    with engine(env.node_hosts["node3"]) as e:
        e.leave_swarm()
        assert e.local_swarm().local_state == "inactive"

    caplog.set_level(logging.DEBUG)
    audit_stream = io.StringIO()
    run = run_bootstrap(cfg, dry_run=False, audit=AuditLog(stream=audit_stream))
    assert run.ok, run
    assert any(a.kind == "join-swarm" and a.node == "node3" for a in run.plan.actions)
    nodes = wait_all_ready(env, 3)  # the stale node3 entry is gone, the new one is Ready
    by_host = {n.hostname: n for n in nodes}
    assert by_host["node3"].id != before["node3"]
    assert all(n.role == "manager" for n in nodes)
    with engine(env.node_hosts["node3"]) as e:
        assert e.local_swarm().local_state == "active"
    with engine(env.docker_host) as e:
        tokens = e.join_tokens()
    logged = caplog.text + audit_stream.getvalue()
    assert tokens.worker not in logged
    assert tokens.manager not in logged


def test_split_brain_is_refused_and_changes_nothing(bare: tuple[Lab, LabEnv]) -> None:
    lab, env = bare
    cfg = config_for(lab, env, 3)
    # node1 and node2 in one swarm (target 1 keeps node2 a worker), node3 in a swarm of its own.
    two = cfg.model_copy(update={"nodes": {k: v for k, v in cfg.nodes.items() if k != "node3"}})
    assert run_bootstrap(two, dry_run=False, audit=None).ok
    wait_all_ready(env, 2)
    address3 = cfg.nodes["node3"].ip
    assert address3 is not None
    with engine(env.node_hosts["node3"]) as e:
        e.init_swarm(address3)
        cluster3 = e.local_swarm().cluster_id
    with engine(env.docker_host) as e:
        cluster1 = e.local_swarm().cluster_id
    assert cluster1
    assert cluster1 != cluster3
    versions_before = {n.id: n.version for n in nodes_of(env)}

    run = run_bootstrap(cfg, dry_run=False, audit=None)

    assert run.plan.refused
    assert run.plan.actions == ()
    assert run.outcomes == ()
    finding = " ".join(run.plan.findings)
    assert "split brain" in finding
    assert f"cluster {cluster1[:12]} (node1, node2)" in finding
    assert f"cluster {cluster3[:12]} (node3)" in finding
    assert {n.id: n.version for n in nodes_of(env)} == versions_before
    with engine(env.node_hosts["node3"]) as e:
        assert e.local_swarm().cluster_id == cluster3


def test_orcastra_run_once_with_bootstrap_mode_builds_the_swarm(bare: tuple[Lab, LabEnv], tmp_path: Path) -> None:
    """The daemon's own wiring: BOOTSTRAP_MODE=once through `orcastra run --once` on bare daemons."""
    lab, env = bare
    config = config_for(lab, env, manager_target=3)
    path = tmp_path / "orcastra.yml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "orcastra", "--config", str(path), "run", "--once"],
        env={**os.environ, "DOCKER_HOST": env.docker_host, "BOOTSTRAP_MODE": "once"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    nodes = nodes_of(env)
    assert sorted(n.hostname for n in nodes) == ["node1", "node2", "node3"]
    assert sorted(n.role for n in nodes) == ["manager", "manager", "manager"]
    assert "bootstrap:" in result.stderr
