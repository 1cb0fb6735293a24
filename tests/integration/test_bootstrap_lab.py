"""Bootstrap and healing on real daemons: the module's own lab ("boot"), three bare dockerds.

Each test starts from bare daemons (every node leaves whatever swarm it is in) and asserts on what the
Engines report afterwards; the lab is torn down at the end of the module unless ORCASTRA_LAB_KEEP=1.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from orcastra.adapters.engine import EngineSettings
from orcastra.adapters.engine.connect import make_engine
from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.config.model import Config
from orcastra.domain.snapshot import Node
from orcastra.errors import EngineError
from orcastra.runtime.bootstrap import BootstrapRun, run_bootstrap
from orcastra.runtime.executor import AuditLog
from orcastra.runtime.wiring import make_executor
from orcastra_lab import Lab, LabEnv

from .util import free_port, node_labels, set_node_labels, start_orcastra, stop_process, wait_for

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
    lab, _ = boot_lab
    hosts = lab.env().node_hosts  # every node of the lab, also one a test added

    def leave(host: str) -> None:
        with engine(host) as e:
            if e.local_swarm().local_state != "inactive":
                e.leave_swarm()

    # All at once: one after the other, the later managers' leaves wait out timeouts on a Raft that has
    # already lost its quorum (measured: 33 s for three managers).
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(leave, hosts.values()))
    return boot_lab


def config_for(
    lab: Lab,
    env: LabEnv,
    manager_target: int,
    *,
    roles: Mapping[str, str] | None = None,
    bootstrap: Mapping[str, Any] | None = None,
) -> Config:
    """Every node of ``env`` in the inventory (role manager unless ``roles`` says otherwise)."""
    addresses = {s.name: s.address for s in lab.status()}
    return Config.model_validate(
        {
            "docker": {"host": env.docker_host},
            "nodes": {
                name: {"endpoint": host, "ip": addresses[name], "role": (roles or {}).get(name, "manager")}
                for name, host in env.node_hosts.items()
            },
            "bootstrap": {"mode": "once", "manager_target": manager_target, **(bootstrap or {})},
        }
    )


def without(config: Config, *names: str) -> Config:
    """The same config with these nodes left out of the inventory."""
    return config.model_copy(update={"nodes": {k: v for k, v in config.nodes.items() if k not in names}})


def roles_of(env: LabEnv) -> dict[str, str]:
    return {n.hostname: n.role for n in nodes_of(env)}


def set_role(env: LabEnv, hostname: str, role: str) -> None:
    """What an operator's `docker node promote/demote` does."""
    with engine(env.docker_host) as e:
        node = next(n for n in e.list_nodes() if n.hostname == hostname)
        assert e.set_role(node.id, role)


def wait_roles(env: LabEnv, expected: dict[str, str]) -> None:
    """Until the Swarm lists exactly these nodes, Ready, with these roles (managers reachable)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            nodes = nodes_of(env)
        except EngineError:  # no Swarm yet (a daemon about to bootstrap it), or a leader election
            nodes = ()
        seen = {n.hostname: n.role for n in nodes}
        if seen == expected and all(
            n.ready and (n.role == "worker" or n.manager_reachability == "reachable") for n in nodes
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"roles never became {expected}: {[(n.hostname, n.state, n.role) for n in nodes]}")
        time.sleep(0.5)


def bootstrap_once(config: Config, *, dry_run: bool, audit: AuditLog | None) -> BootstrapRun:
    """One bootstrap cycle through the runtime's executor, as ``orcastra run`` wires it."""
    executor = make_executor(config, make_engine(config, {}), dry_run=dry_run, audit=audit or AuditLog())
    return run_bootstrap(config, executor)


def summary(run: BootstrapRun) -> list[tuple[str, str]]:
    return [(a.kind, a.node) for a in run.plan.actions]


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
    dry = bootstrap_once(config_for(lab, env, 3), dry_run=True, audit=AuditLog(stream=audit_stream))
    assert [o.result for o in dry.outcomes] == ["dry-run"] * 3
    with engine(env.docker_host) as e:
        assert e.local_swarm().local_state == "inactive"  # a dry run changes nothing

    run = bootstrap_once(config_for(lab, env, 3), dry_run=False, audit=AuditLog(stream=audit_stream))
    assert run.ok, run
    nodes = wait_all_ready(env, 3)
    assert sorted((n.hostname, n.role) for n in nodes) == [
        ("node1", "manager"),
        ("node2", "manager"),
        ("node3", "manager"),
    ]
    # A second cycle finds nothing to do.
    again = bootstrap_once(config_for(lab, env, 3), dry_run=False, audit=AuditLog(stream=audit_stream))
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
    run = bootstrap_once(config_for(lab, env, 1), dry_run=False, audit=None)
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
    assert bootstrap_once(cfg, dry_run=False, audit=None).ok
    before = {n.hostname: n.id for n in wait_all_ready(env, 3)}
    with engine(env.node_hosts["node3"]) as e:
        e.leave_swarm()
        assert e.local_swarm().local_state == "inactive"

    caplog.set_level(logging.DEBUG)
    audit_stream = io.StringIO()
    run = bootstrap_once(cfg, dry_run=False, audit=AuditLog(stream=audit_stream))
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
    assert bootstrap_once(two, dry_run=False, audit=None).ok
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

    run = bootstrap_once(cfg, dry_run=False, audit=None)

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


def test_a_worker_is_promoted_when_managers_are_below_the_target(bare: tuple[Lab, LabEnv]) -> None:
    lab, env = bare
    cfg = config_for(lab, env, 3)
    assert bootstrap_once(cfg, dry_run=False, audit=None).ok
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager"})
    node3_id = next(n.id for n in nodes_of(env) if n.hostname == "node3")
    set_role(env, "node3", "worker")  # an operator's `docker node demote node3`
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "worker"})

    run = bootstrap_once(cfg, dry_run=False, audit=None)

    assert run.ok, run
    assert summary(run) == [("promote-node", "node3")]
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager"})
    assert next(n.id for n in nodes_of(env) if n.hostname == "node3") == node3_id  # promoted, not re-joined
    assert bootstrap_once(cfg, dry_run=False, audit=None).plan.actions == ()


def test_managers_beyond_the_target_are_demoted_but_never_its_own_node(bare: tuple[Lab, LabEnv]) -> None:
    lab, _ = bare
    env = lab.up(nodes=4, swarm=False)  # a fourth bare daemon (kept for the module; `bare` handles it)
    assert sorted(env.node_hosts) == ["node1", "node2", "node3", "node4"]
    assert bootstrap_once(config_for(lab, env, 3), dry_run=False, audit=None).ok
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"})
    set_role(env, "node4", "manager")  # 4 managers: one more than the target
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "manager"})

    # node1 is Orcastra's own Engine (docker.host). Its inventory role is worker, which would make it the
    # first to demote: it must be skipped, and the last inventory manager demoted instead.
    cfg = config_for(lab, env, 3, roles={"node1": "worker"})
    run = bootstrap_once(cfg, dry_run=False, audit=None)

    assert run.ok, run
    assert summary(run) == [("demote-node", "node4")]
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"})
    assert bootstrap_once(cfg, dry_run=False, audit=None).plan.actions == ()


def test_two_managers_are_never_demoted_to_one_and_a_third_node_restores_three(
    bare: tuple[Lab, LabEnv], caplog: pytest.LogCaptureFixture
) -> None:
    lab, env = bare
    full = config_for(lab, env, 3)
    two = without(full, "node3")
    assert bootstrap_once(two, dry_run=False, audit=None).ok  # 2 nodes: target lowered to 1
    wait_roles(env, {"node1": "manager", "node2": "worker"})
    set_role(env, "node2", "manager")
    wait_roles(env, {"node1": "manager", "node2": "manager"})

    caplog.set_level(logging.WARNING, logger="orcastra.features.bootstrap")
    run = bootstrap_once(two, dry_run=False, audit=None)

    assert run.plan.actions == ()
    assert "2 managers but the target is 1: refusing to go down to a single manager" in caplog.text
    assert roles_of(env) == {"node1": "manager", "node2": "manager"}

    # With node3 back in the inventory, the target is 3 again: it joins as the third manager.
    run = bootstrap_once(full, dry_run=False, audit=None)
    assert run.ok, run
    assert summary(run) == [("join-swarm", "node3")]
    wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager"})


def audit_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def joined_ok(audit: Path, node: str) -> int:
    return sum(
        r["action"] == "join-swarm" and r["target"] == f"node/{node}" and r["result"] == "ok"
        for r in audit_records(audit)
    )


def test_loop_removes_a_node_down_too_long_and_joins_it_again_when_it_is_back(
    bare: tuple[Lab, LabEnv], tmp_path: Path
) -> None:
    """`orcastra run` with bootstrap.mode loop and remove_down_after_seconds: a manager whose dockerd is killed
    is demoted and removed once Down long enough (never down to a single manager), and joins again when back,
    with the labels its old entry had."""
    lab, env = bare
    config = config_for(
        lab, env, 3, bootstrap={"mode": "loop", "loop_interval_seconds": 1, "remove_down_after_seconds": 60}
    ).model_dump(mode="json", exclude_defaults=True)
    audit = tmp_path / "audit.jsonl"
    config["audit"] = {"path": str(audit)}
    config["api"] = {"listen": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "orcastra.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp_path / "run.log"
    proc = start_orcastra(["--config", str(path), "run"], env.docker_host, log)
    try:
        wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager"})
        # The manager lists a joined node before its join call returns: wait for the daemon's own result.
        wait_for("node3's join audited", lambda: joined_ok(audit, "node3") == 1, timeout=WAIT_SECONDS)
        old_id = next(n.id for n in nodes_of(env) if n.hostname == "node3")
        api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=30)
        set_node_labels(api, "node3", {"rack": "r3"})  # set by hand: kept across the removal

        lab.kill("node3")  # a power loss: Swarm marks it Down after ~10 s
        wait_for(
            "node3's entry removed from the node list",
            lambda: all(n.id != old_id for n in nodes_of(env)),
            timeout=180,
            interval=0.5,
        )
        done = {(r["action"], r["target"]): r for r in audit_records(audit) if r["result"] == "ok"}
        assert ("demote-node", "node/node3") in done  # a manager is demoted before it can be removed
        assert "has been down for" in done[("remove-node", "node/node3")]["reason"]
        # Two managers left: the target drops to 1, which is never reached by demoting automatically.
        assert roles_of(env) == {"node1": "manager", "node2": "manager"}
        wait_for(
            "the 2 -> 1 refusal in the log",
            lambda: "2 managers but the target is 1: refusing" in log.read_text(),
            timeout=10,
        )

        lab.start("node3")  # back: its entry is gone, so it is joined again (a new node ID), as a manager
        wait_roles(env, {"node1": "manager", "node2": "manager", "node3": "manager"})
        new_id = next(n.id for n in nodes_of(env) if n.hostname == "node3")
        assert new_id != old_id
        wait_for("node3's second join audited", lambda: joined_ok(audit, "node3") == 2, timeout=WAIT_SECONDS)
        # The new entry has the hand-set label back, and the record of it is gone.
        assert node_labels(api)["node3"] == {"rack": "r3"}
        swarm_labels = api.inspect_swarm()["Spec"].get("Labels") or {}
        assert not [k for k in swarm_labels if k.startswith("orcastra.removed-node-labels.")]
        assert proc.poll() is None, log.read_text()[-3000:]
        api.close()
    finally:
        stop_process(proc)
