"""Table tests of the bootstrap planner over observations built in code (no daemon, no clock)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec.structs
import pytest

from orcastra.adapters.engine.swarm import JoinTokens, redact
from orcastra.config import Config
from orcastra.domain.actions import BootstrapAction, DemoteNode, InitSwarm, JoinSwarm, PromoteNode, RemoveNode
from orcastra.domain.snapshot import Node, frozen_labels
from orcastra.features.bootstrap.model import BootstrapObservation, BootstrapPlan, NodeObservation
from orcastra.features.bootstrap.plan import largest_odd_at_most, plan_bootstrap
from orcastra.features.bootstrap.settings import BootstrapSettings
from orcastra.features.inventory import NodeSettings
from orcastra.runtime.bootstrap import insecure_token_paths

CLUSTER = "c" * 25
OTHER_CLUSTER = "d" * 25
NOW = 10_000.0


def bare(name: str, *, reachable: bool = True, address: str | None = None, state: str = "inactive") -> NodeObservation:
    ip = address if address is not None else f"10.0.0.{name[-1]}"
    return NodeObservation(
        name=name,
        endpoint=f"tcp://{name}:2376",
        reachable=reachable,
        local_state=state if reachable else "",
        address=ip,
    )


def joined(name: str, *, manager: bool, cluster: str = CLUSTER) -> NodeObservation:
    return NodeObservation(
        name=name,
        endpoint=f"tcp://{name}:2376",
        reachable=True,
        local_state="active",
        node_id=f"id-{name}",
        cluster_id=cluster if manager else "",
        control_available=manager,
        address=f"10.0.0.{name[-1]}",
    )


def member(
    name: str,
    role: str,
    *,
    state: str = "ready",
    availability: str = "active",
    node_id: str | None = None,
    updated_at: float = NOW - 5,
) -> Node:
    return Node(
        id=node_id or f"id-{name}",
        version=7,
        hostname=name,
        role=role,
        availability=availability,
        state=state,
        addr=f"10.0.0.{name[-1]}",
        manager_reachability=("reachable" if state == "ready" else "unreachable") if role == "manager" else "",
        updated_at=updated_at,
    )


@dataclass(frozen=True)
class Case:
    id: str
    nodes: tuple[NodeObservation, ...]
    members: tuple[Node, ...] = ()
    manager: str | None = None
    roles: dict[str, Literal["manager", "worker"]] = field(default_factory=dict)  # inventory roles (default: none)
    target: int = 3
    remove_down_after: float | None = None
    self_node: str = "node1"
    expect: tuple[str, ...] = ()  # "<kind> <node> [role]"
    finding: str | None = None  # a substring some finding must contain
    refused: bool = False


def summary(a: BootstrapAction) -> str:
    if isinstance(a, JoinSwarm):
        return f"join {a.node} {a.role}"
    short = {InitSwarm: "init", PromoteNode: "promote", DemoteNode: "demote", RemoveNode: "remove"}
    return f"{short[type(a)]} {a.node}"


CASES = [
    Case(
        "bare-three-target-3",
        nodes=(bare("node1"), bare("node2"), bare("node3")),
        expect=("init node1", "join node2 manager", "join node3 manager"),
    ),
    Case(
        "bare-three-target-1",
        nodes=(bare("node1"), bare("node2"), bare("node3")),
        target=1,
        expect=("init node1", "join node2 worker", "join node3 worker"),
    ),
    Case(
        "init-on-first-inventory-manager",
        nodes=(bare("node1"), bare("node2"), bare("node3")),
        roles={"node1": "worker", "node2": "worker", "node3": "manager"},
        target=1,
        expect=("init node3", "join node1 worker", "join node2 worker"),
    ),
    Case(
        "init-skips-unreachable",
        nodes=(bare("node1", reachable=False), bare("node2"), bare("node3")),
        expect=("init node2", "join node3 worker"),
        finding="target 3 lowered to 1",
    ),
    Case(
        "joins-prefer-inventory-managers",
        nodes=(bare("node1"), bare("node2"), bare("node3"), bare("node4"), bare("node5")),
        roles={"node4": "manager", "node5": "manager"},
        expect=("init node4", "join node5 manager", "join node1 manager", "join node2 worker", "join node3 worker"),
    ),
    Case(
        "four-nodes-target-3",
        nodes=(bare("node1"), bare("node2"), bare("node3"), bare("node4")),
        expect=("init node1", "join node2 manager", "join node3 manager", "join node4 worker"),
    ),
    Case(
        "no-address-no-init",
        nodes=(bare("node1", address=""),),
        expect=(),
        finding="set nodes.node1.ip",
    ),
    Case(
        "steady-state-nothing-to-do",
        nodes=(joined("node1", manager=True), joined("node2", manager=True), joined("node3", manager=True)),
        members=(member("node1", "manager"), member("node2", "manager"), member("node3", "manager")),
        manager="node1",
        expect=(),
    ),
    Case(
        "rejoin-node-that-left",
        nodes=(joined("node1", manager=True), joined("node2", manager=True), bare("node3")),
        members=(member("node1", "manager"), member("node2", "manager"), member("node3", "manager", state="down")),
        manager="node1",
        expect=("demote node3", "remove node3", "join node3 manager"),
    ),
    Case(
        "promote-healthy-workers-preferring-inventory-managers",
        nodes=tuple(joined(f"node{i}", manager=i == 1) for i in range(1, 5)),
        members=(
            member("node1", "manager"),
            member("node2", "worker"),
            member("node3", "worker"),
            member("node4", "worker"),
        ),
        manager="node1",
        roles={"node4": "manager"},
        expect=("promote node4", "promote node2"),
    ),
    Case(
        "no-promotion-of-drained-or-down-workers",
        nodes=(joined("node1", manager=True), joined("node2", manager=False), joined("node3", manager=False)),
        members=(
            member("node1", "manager"),
            member("node2", "worker", availability="drain"),
            member("node3", "worker", state="down"),
        ),
        manager="node1",
        expect=(),
    ),
    Case(
        "demote-beyond-target-preferring-inventory-workers",
        nodes=tuple(joined(f"node{i}", manager=True) for i in range(1, 6)),
        members=tuple(member(f"node{i}", "manager") for i in range(1, 6)),
        manager="node1",
        roles={"node2": "worker", "node3": "manager", "node4": "manager", "node5": "manager"},
        expect=("demote node2", "demote node5"),
    ),
    Case(
        "never-demote-itself",
        nodes=tuple(joined(f"node{i}", manager=True) for i in range(1, 6)),
        members=tuple(member(f"node{i}", "manager") for i in range(1, 6)),
        manager="node1",
        roles={"node1": "worker", "node2": "worker"},
        expect=("demote node2", "demote node5"),
    ),
    Case(
        "two-to-one-refused",
        nodes=(joined("node1", manager=True), joined("node2", manager=True)),
        members=(member("node1", "manager"), member("node2", "manager")),
        manager="node1",
        expect=(),
        finding="refusing to go down to a single manager",
    ),
    Case(
        "three-to-one-refused",
        nodes=tuple(joined(f"node{i}", manager=True) for i in range(1, 4)),
        members=tuple(member(f"node{i}", "manager") for i in range(1, 4)),
        manager="node1",
        target=1,
        expect=(),
        finding="refusing to go down to a single manager",
    ),
    Case(
        "demotion-keeps-raft-majority",
        # 5 managers, 3 of them down and not in the inventory: demoting node2 would leave 1 reachable of 4.
        nodes=(
            joined("node1", manager=True),
            joined("node2", manager=True),
            joined("node6", manager=False),
            joined("node7", manager=False),
        ),
        members=(
            member("node1", "manager"),
            member("node2", "manager"),
            *(member(f"node{i}", "manager", state="down") for i in (3, 4, 5)),
            member("node6", "worker"),
            member("node7", "worker"),
        ),
        manager="node1",
        expect=(),
        finding="would lose the Raft majority",
    ),
    Case(
        "demote-unreachable-managers-first",
        # 5 managers, 2 of them unreachable, 4 nodes healthy -> target 3: the unreachable inventory one first.
        nodes=(*(joined(f"node{i}", manager=True) for i in range(1, 4)), bare("node4", reachable=False)),
        members=(
            *(member(f"node{i}", "manager") for i in range(1, 4)),
            member("node4", "manager", state="down"),
            member("node5", "manager", state="down"),
            member("node6", "worker"),
        ),
        manager="node1",
        expect=("demote node4", "demote node3"),
    ),
    Case(
        "remove-long-down-node",
        nodes=(joined("node1", manager=True), joined("node2", manager=False), bare("node3", reachable=False)),
        members=(
            member("node1", "manager"),
            member("node2", "worker"),
            member("node3", "worker", state="down", updated_at=NOW - 700),
        ),
        manager="node1",
        target=1,
        remove_down_after=600,
        expect=("remove node3",),
    ),
    Case(
        "long-down-node-outside-the-inventory-is-not-ours",
        nodes=(joined("node1", manager=True), joined("node2", manager=False)),
        members=(
            member("node1", "manager"),
            member("node2", "worker"),
            member("node9", "worker", state="down", updated_at=NOW - 7000),
        ),
        manager="node1",
        target=1,
        remove_down_after=600,
        expect=(),
    ),
    Case(
        "keep-recently-down-node",
        nodes=(joined("node1", manager=True), joined("node2", manager=False), bare("node3", reachable=False)),
        members=(
            member("node1", "manager"),
            member("node2", "worker"),
            member("node3", "worker", state="down", updated_at=NOW - 60),
        ),
        manager="node1",
        target=1,
        remove_down_after=600,
        expect=(),
    ),
    Case(
        "down-nodes-kept-when-removal-off",
        nodes=(joined("node1", manager=True), joined("node2", manager=False), bare("node3", reachable=False)),
        members=(
            member("node1", "manager"),
            member("node2", "worker"),
            member("node3", "worker", state="down", updated_at=0),
        ),
        manager="node1",
        target=1,
        expect=(),
        finding="node3: Engine at tcp://node3:2376 not reachable",
    ),
    Case(
        "split-brain-refused",
        nodes=(
            joined("node1", manager=True),
            joined("node2", manager=False),
            joined("node3", manager=True, cluster=OTHER_CLUSTER),
        ),
        members=(member("node1", "manager"), member("node2", "worker")),
        manager="node1",
        expect=(),
        refused=True,
        finding=f"cluster {CLUSTER[:12]} (node1, node2); cluster {OTHER_CLUSTER[:12]} (node3)",
    ),
    Case(
        "member-of-unknown-swarm-left-alone",
        nodes=(joined("node1", manager=True), joined("node2", manager=False)),
        members=(member("node1", "manager"),),
        manager="node1",
        target=1,
        expect=(),
        finding="node2: reports Swarm node",
    ),
    Case(
        "swarm-without-reachable-manager",
        nodes=(joined("node2", manager=False), bare("node1", reachable=False)),
        expect=(),
        finding="no inventory manager answered",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_bootstrap(case: Case) -> None:
    names = sorted(o.name for o in case.nodes)
    inventory = {name: NodeSettings(role=case.roles.get(name)) for name in names}
    observation = BootstrapObservation(
        nodes=case.nodes,
        members=case.members,
        manager=case.manager,
        self_node_id=f"id-{case.self_node}",
        now=NOW,
    )
    plan = plan_bootstrap(
        observation,
        inventory,
        BootstrapSettings(manager_target=case.target),
        remove_down_after_seconds=case.remove_down_after,
    )
    assert tuple(summary(a) for a in plan.actions) == case.expect, plan.findings
    assert plan.refused == case.refused
    if case.finding is not None:
        assert any(case.finding in f for f in plan.findings), plan.findings
    assert all(a.reason for a in plan.actions)


@pytest.mark.parametrize(("n", "odd"), [(0, 1), (1, 1), (2, 1), (3, 3), (4, 3), (5, 5), (6, 5)])
def test_largest_odd_at_most(n: int, odd: int) -> None:
    assert largest_odd_at_most(n) == odd


def test_planner_imports_no_io() -> None:
    # import-linter's "planners are pure" contract does not list orcastra.features.bootstrap.plan yet.
    forbidden = (
        "docker",
        "requests",
        "httpx",
        "time",
        "subprocess",
        "orcastra.adapters.engine",
        "orcastra.runtime.executor",
    )
    for module in ("plan.py", "model.py"):
        source = Path(__file__).parents[2] / "src" / "orcastra" / "features" / "bootstrap" / module
        tree = ast.parse(source.read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [m for m in imported if any(m == f or m.startswith(f + ".") for f in forbidden)]
        assert bad == [], f"{module} imports {bad}"


def test_join_tokens_stay_out_of_repr_and_messages() -> None:
    # The executor's side of the token rule (the planner never sees a token at all).
    tokens = JoinTokens(worker="SWMTKN-1-worker-secret", manager="SWMTKN-1-manager-secret")
    assert "secret" not in repr(tokens)
    assert tokens.for_role("manager") == "SWMTKN-1-manager-secret"
    message = "swarm join failed: invalid join token SWMTKN-1-worker-secret"
    assert redact(message, (tokens.worker,)) == "swarm join failed: invalid join token <redacted>"


def test_a_removed_entry_keeps_its_labels_but_not_where_things_ran() -> None:
    down = msgspec.structs.replace(
        member("node3", "worker", state="down", updated_at=NOW - 700),
        labels=frozen_labels({"rack": "r3", "orcastra.owned-labels": "ssd", "ssd": "true",
                              "orcastra.anchor.app_db": "true", "orcastra.place.app_web": "true"}),
    )  # fmt: skip
    observation = BootstrapObservation(
        nodes=(joined("node1", manager=True), joined("node2", manager=False), bare("node3", reachable=False)),
        members=(member("node1", "manager"), member("node2", "worker"), down),
        manager="node1",
        self_node_id="id-node1",
        now=NOW,
    )
    inventory = {n: NodeSettings() for n in ("node1", "node2", "node3")}
    plan = plan_bootstrap(observation, inventory, BootstrapSettings(manager_target=1), remove_down_after_seconds=600)
    (remove,) = plan.actions
    assert isinstance(remove, RemoveNode)
    assert dict(remove.keep_labels) == {"rack": "r3", "orcastra.owned-labels": "ssd", "ssd": "true"}


@pytest.mark.parametrize(
    ("docker", "endpoints", "warned"),
    [
        ({}, ("tcp://10.0.0.1:2375", "tcp://10.0.0.2:2375"), 2),
        ({"tls": {"verify": False}}, ("tcp://10.0.0.1:2376", "tcp://10.0.0.2:2376"), 2),
        ({"tls": {"verify": True}}, ("tcp://10.0.0.1:2376", "tcp://10.0.0.2:2376"), 0),
        ({}, ("ssh://node1", "ssh://node2"), 0),
    ],
    ids=["plain-tcp", "tls-unverified", "tls-verified", "ssh"],
)
def test_a_join_token_over_an_unprotected_endpoint_is_reported(
    docker: dict[str, object], endpoints: tuple[str, str], warned: int
) -> None:
    config = Config.model_validate(
        {"docker": docker, "nodes": {"node1": {"endpoint": endpoints[0]}, "node2": {"endpoint": endpoints[1]}}}
    )
    join = JoinSwarm("node2", "worker", "node1", "10.0.0.2", "10.0.0.1", reason="test")
    found = insecure_token_paths(BootstrapPlan(actions=(join,)), config)
    assert len(found) == warned
    assert all("join token" in f and "TLS" in f for f in found)
