"""Table tests of the memory rebalancing planner over snapshots and memory views built in code.

Every node has 1000 bytes of memory, so bytes read as tenths of a percent: n1 at 900 is at 90%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import pytest

from orcastra.config import Config
from orcastra.domain.labels import MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.domain.usage import MemoryView, NodeMemory, TaskMemory, TaskSource
from orcastra.features.colocation.plan import AnchorGroup, anchor_constraint
from orcastra.features.rebalance import (
    MoveProblem,
    MoveRecord,
    RebalanceHistory,
    RebalanceInput,
    choose_moves,
    evaluate,
    plan_rebalance,
    update_history,
    with_recorded_moves,
)
from orcastra.features.rebalance.settings import RebalanceSettings, ServiceRebalance
from orcastra.runtime.controllers import rebalance_overrides

NOW = 100_000.0
TOTAL = 1000


def node(name: str, *, state: str = "ready", availability: str = "active", role: str = "worker") -> Node:
    return Node(id=f"id-{name}", version=1, hostname=name, role=role, availability=availability, state=state)


def svc(
    name: str,
    *,
    mode: str = "replicated",
    constraints: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
) -> Service:
    return Service(
        id=f"sid-{name}",
        version=1,
        name=name,
        mode=mode,
        replicas=1,
        constraints=constraints,
        labels=frozen_labels(labels),
    )


def task(service: str, host: str, n: int = 0) -> Task:
    return Task(
        id=f"t-{service}-{host}-{n}",
        service_id=f"sid-{service}",
        node_id=f"id-{host}",
        slot=n + 1,
        desired_state="running",
        state="running",
    )


@dataclass(frozen=True)
class Cluster:
    """A scenario: node usage, services with where they run and what they use."""

    used: Mapping[str, int] = field(default_factory=lambda: {"n1": 900, "n2": 400, "n3": 600})
    services: tuple[Service, ...] = (svc("a"), svc("b"))
    placement: tuple[tuple[str, str, int], ...] = (("a", "n1", 150), ("b", "n1", 40))  # service, host, bytes
    nodes: tuple[Node, ...] = ()
    unmeasured: frozenset[str] = frozenset()  # services whose TaskMemory is missing
    task_source: TaskSource = "engine-stats"
    node_sampled_at: float = NOW - 10
    since: Mapping[str, float] = field(default_factory=lambda: {"n1": NOW - 700})
    groups: tuple[AnchorGroup, ...] = ()
    settings: RebalanceSettings = field(default_factory=RebalanceSettings)  # no stack: names are full names
    history: RebalanceHistory | None = None

    def snapshot(self) -> Snapshot:
        nodes = self.nodes or tuple(node(h) for h in sorted(self.used))
        tasks = tuple(task(s, h, i) for i, (s, h, _) in enumerate(self.placement))
        return Snapshot(nodes=nodes, services=self.services, tasks=tasks, taken_at=NOW)

    def memory(self) -> MemoryView:
        nodes = {h: NodeMemory(h, TOTAL, u, self.node_sampled_at, "node-exporter") for h, u in self.used.items()}
        tasks = tuple(
            TaskMemory(s, h, b, NOW - 5, self.task_source) for s, h, b in self.placement if s not in self.unmeasured
        )
        return MemoryView(nodes=MappingProxyType(nodes), tasks=tasks, taken_at=NOW)

    def plan(self) -> tuple[list[tuple[str, str, str]], list[str]]:
        history = self.history or RebalanceHistory(overloaded_since=MappingProxyType(dict(self.since)))
        result = plan_rebalance(
            RebalanceInput(
                self.snapshot(),
                self.memory(),
                self.groups,
                self.settings,
                history,
                NOW,
                overrides=self.settings.services,
            )
        )
        moves = [(m.unit, m.from_node, m.to_node) for m in result.moves]
        findings = [f"{f.subject}: {f.message}" for f in result.findings]
        return moves, findings


BASE = Cluster()
WITH_N4 = replace(BASE, used={**BASE.used, "n4": 300})
GROUP = AnchorGroup("a", ("d",))
GROUPED = replace(
    BASE,
    services=(svc("a"), svc("b"), svc("d", constraints=(anchor_constraint("a"),))),
    placement=(*BASE.placement, ("d", "n1", 30)),
    groups=(GROUP,),
)

SCENARIOS: list[tuple[str, Cluster, list[tuple[str, str, str]], list[str]]] = [
    ("moves-to-qualified-node-with-room", BASE, [("a", "n1", "n2")], ["1 other movable unit(s) not needed"]),
    ("not-sustained-yet", replace(BASE, since={"n1": NOW - 100}), [], []),
    ("all-under-high", replace(BASE, used={"n1": 800, "n2": 400, "n3": 600}, since={}), [], []),
    ("stale-node-data", replace(BASE, node_sampled_at=NOW - 300), [], ["n1: memory data 5 min old"]),
    (
        "missing-task-memory-never-guessed",
        replace(BASE, unmeasured=frozenset({"a"})),
        [("b", "n1", "n2")],
        ["a: not moved off n1: no memory measurement for a on n1", "n1: stays above 85% (86.0%)"],
    ),
    (
        "opted-out-by-label",
        replace(BASE, services=(svc("a", labels={"orcastra.rebalance": "false"}), svc("b"))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: opted out"],
    ),
    (
        "opted-out-by-config",
        replace(BASE, settings=RebalanceSettings(services={"a": ServiceRebalance(rebalance=False)})),
        [("b", "n1", "n2")],
        ["a: not moved off n1: opted out"],
    ),
    (
        "config-wins-over-label",
        replace(
            BASE,
            services=(svc("a", labels={"orcastra.rebalance": "false"}), svc("b")),
            settings=RebalanceSettings(services={"a": ServiceRebalance(rebalance=True)}),
        ),
        [("a", "n1", "n2")],
        [],
    ),
    (
        "global-service-never-moves",
        replace(BASE, services=(svc("a", mode="global"), svc("b"))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: a is a global service"],
    ),
    (
        "job-never-moves",
        replace(BASE, services=(svc("a", mode="replicated-job"), svc("b"))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: a is a replicated-job service"],
    ),
    (
        "lease-never-moves",
        replace(BASE, services=(svc("a", labels={"orcastra.lease": "true"}), svc("b"))),
        [("b", "n1", "n2")],
        ["leader lease: never moved"],
    ),
    (
        "spread-over-nodes",
        replace(BASE, placement=(*BASE.placement, ("a", "n3", 150))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: spread over nodes: a also runs on n3"],
    ),
    (
        "constraint-excludes-the-only-roomy-node",
        replace(BASE, services=(svc("a", constraints=("node.hostname != n2",)), svc("b"))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: no qualified target has room"],
    ),
    (
        "unverifiable-constraint-is-no-target",
        replace(BASE, services=(svc("a", constraints=("engine.labels.os==linux",)), svc("b"))),
        [("b", "n1", "n2")],
        ["cannot be checked against them"],
    ),
    (
        "drained-node-is-no-target",
        replace(BASE, nodes=(node("n1"), node("n2", availability="drain"), node("n3"))),
        [("b", "n1", "n3")],
        ["a: not moved off n1: no qualified target has room"],
    ),
    ("lowest-node-wins", WITH_N4, [("a", "n1", "n4")], []),
    (
        "preferred-node-by-label",
        replace(WITH_N4, services=(svc("a", labels={"orcastra.rebalance.preferred-node": "n2"}), svc("b"))),
        [("a", "n1", "n2")],
        [],
    ),
    (
        "preferred-node-by-config-wins",
        replace(
            WITH_N4,
            services=(svc("a", labels={"orcastra.rebalance.preferred-node": "n4"}), svc("b")),
            settings=RebalanceSettings(services={"a": ServiceRebalance(preferred_node="n2")}),
        ),
        [("a", "n1", "n2")],
        [],
    ),
    (
        "preferred-node-without-room-ignored",
        replace(WITH_N4, services=(svc("a", labels={"orcastra.rebalance.preferred-node": "n3"}), svc("b"))),
        [("a", "n1", "n4")],
        ["a: preferred node n3 does not qualify"],
    ),
    (
        "global-cooldown",
        replace(
            BASE,
            history=RebalanceHistory(overloaded_since=MappingProxyType({"n1": NOW - 700}), last_move_at=NOW - 100),
        ),
        [],
        ["rebalance: global cooldown: last move 100 s ago"],
    ),
    (
        "unit-cooldown",
        replace(
            BASE,
            history=RebalanceHistory(
                overloaded_since=MappingProxyType({"n1": NOW - 700}),
                recent_moves=(MoveRecord("a", "n2", "n1", NOW - 1000),),
                last_move_at=NOW - 1000,
            ),
        ),
        [("b", "n1", "n2")],
        ["a: not moved off n1: cooldown: moved n2 -> n1 17 min ago"],
    ),
    (
        "never-back-to-the-node-it-left",
        replace(
            BASE,
            settings=RebalanceSettings(services={"a": ServiceRebalance(cooldown_seconds=60)}),
            history=RebalanceHistory(
                overloaded_since=MappingProxyType({"n1": NOW - 700}),
                recent_moves=(MoveRecord("a", "n2", "n1", NOW - 1000),),
                last_move_at=NOW - 1000,
            ),
        ),
        [("b", "n1", "n2")],
        ["a: not moved off n1: no qualified target has room", "(n2 excluded: it left them within 30 min)"],
    ),
    ("anchor-group-moves-as-one", GROUPED, [("a", "n1", "n2")], []),
    (
        "earlier-pin-does-not-block-the-next-move",
        replace(BASE, services=(svc("a", constraints=("node.labels.orcastra.place.a == true",)), svc("b"))),
        [("a", "n1", "n2")],
        [],
    ),
    (
        "group-with-dependent-elsewhere-is-spread",
        replace(GROUPED, placement=(*BASE.placement, ("d", "n3", 30))),
        [("b", "n1", "n2")],
        ["a: not moved off n1: spread over nodes: d also runs on n3"],
    ),
    (
        "group-opted-out-on-anchor",
        replace(GROUPED, services=(svc("a", labels={"orcastra.rebalance": "false"}), *GROUPED.services[1:])),
        [("b", "n1", "n2")],
        ["a: not moved off n1: opted out"],
    ),
    (
        "no-room-anywhere",
        replace(BASE, used={"n1": 900, "n2": 660, "n3": 690}),
        [],
        ["a: not moved off n1: no qualified target has room", "n1: stays above 85%"],
    ),
    (
        "down-node-is-left-alone",
        replace(BASE, nodes=(node("n1", state="down"), node("n2"), node("n3"))),
        [],
        [],
    ),
    (
        "two-overloaded-nodes-two-moves",
        replace(
            BASE,
            used={"n1": 900, "n2": 200, "n3": 300, "n5": 880},
            services=(svc("a"), svc("b"), svc("c")),
            placement=(*BASE.placement, ("c", "n5", 100)),
            since={"n1": NOW - 700, "n5": NOW - 700},
            settings=RebalanceSettings(max_moves_per_cycle=2),
        ),
        [("a", "n1", "n2"), ("c", "n5", "n3")],
        [],
    ),
    (
        "move-budget-reported",
        replace(
            BASE,
            used={"n1": 900, "n2": 200, "n3": 300, "n5": 880},
            services=(svc("a"), svc("b"), svc("c")),
            placement=(*BASE.placement, ("c", "n5", 100)),
            since={"n1": NOW - 700, "n5": NOW - 700},
        ),
        [("a", "n1", "n2")],
        ["n5: stays above 85% (88.0%) after this cycle: the move budget"],
    ),
]


@pytest.mark.parametrize(
    ("cluster", "expected_moves", "expected_findings"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_plan(cluster: Cluster, expected_moves: list[tuple[str, str, str]], expected_findings: list[str]) -> None:
    moves, findings = cluster.plan()
    assert moves == expected_moves
    for expected in expected_findings:
        assert any(expected in f for f in findings), (expected, findings)


def test_move_figures_and_reason() -> None:
    result = plan_rebalance(
        RebalanceInput(
            GROUPED.snapshot(),
            GROUPED.memory(),
            GROUPED.groups,
            RebalanceSettings(),
            RebalanceHistory(overloaded_since={"n1": NOW - 700}),
            NOW,
            overrides={},
        )
    )
    (move,) = result.moves
    assert (move.unit, move.services, move.pin_service, move.bytes) == ("a", ("a", "d"), "a", 180)
    assert (move.from_before_percent, move.from_after_percent) == pytest.approx((90.0, 72.0))
    assert (move.to_before_percent, move.to_after_percent) == pytest.approx((40.0, 58.0))
    assert not move.estimated
    assert "group a (a, d)" in move.reason
    assert "n1 90.0% -> 72.0%, n2 40.0% -> 58.0%" in move.reason
    reports = {r.hostname: r for r in result.nodes}
    assert reports["n1"].overloaded
    assert reports["n1"].overloaded_for_seconds == pytest.approx(700)
    assert not reports["n2"].overloaded


def test_estimated_bytes_are_flagged() -> None:
    cluster = replace(BASE, task_source="reservation")
    result = plan_rebalance(
        RebalanceInput(
            cluster.snapshot(),
            cluster.memory(),
            (),
            RebalanceSettings(),
            RebalanceHistory(overloaded_since={"n1": NOW - 700}),
            NOW,
            overrides={},
        )
    )
    assert [m.estimated for m in result.moves] == [True]
    assert "estimated from reservation/limit" in result.moves[0].reason


def sample(host: str, used: int, at: float = NOW) -> NodeMemory:
    return NodeMemory(host, TOTAL, used, at, "prometheus")


HISTORY_CASES = [
    ("newly-above-starts-clock", {}, {"n1": sample("n1", 900)}, {"n1": NOW}),
    ("running-clock-kept", {"n1": NOW - 50}, {"n1": sample("n1", 900)}, {"n1": NOW - 50}),
    ("under-high-drops", {"n1": NOW - 50}, {"n1": sample("n1", 850)}, {}),
    ("stale-drops", {"n1": NOW - 50}, {"n1": sample("n1", 900, NOW - 500)}, {}),
    ("missing-drops", {"n1": NOW - 50}, {}, {}),
]


@pytest.mark.parametrize(
    ("since", "nodes", "expected"), [c[1:] for c in HISTORY_CASES], ids=[c[0] for c in HISTORY_CASES]
)
def test_update_history(since: dict[str, float], nodes: dict[str, NodeMemory], expected: dict[str, float]) -> None:
    history = RebalanceHistory(overloaded_since=since)
    updated = update_history(history, MemoryView(nodes=nodes), RebalanceSettings(), NOW)
    assert dict(updated.overloaded_since) == expected


def test_recent_moves_are_read_back_from_the_services_labels() -> None:
    moved = {MOVED_FROM_LABEL: "n1", MOVED_TO_LABEL: "n2", MOVED_AT_LABEL: f"{NOW - 50:.0f}"}
    snap = Snapshot((node("n1"), node("n2")), (svc("a", labels=moved), svc("b")), ())
    clocks = RebalanceHistory(overloaded_since=MappingProxyType({"n1": NOW - 700}))
    history = with_recorded_moves(clocks, snap)
    assert history.recent_moves == (MoveRecord("a", "n1", "n2", NOW - 50),)
    assert history.last_move_at == NOW - 50
    assert history.overloaded_since == clocks.overloaded_since


def test_overrides_from_config_resolve_short_names_with_the_stack() -> None:
    config = Config.model_validate(
        {
            "stack": "app",
            "rebalance": {
                "high_percent": 90,
                "target_percent": 60,
                "max_moves_per_cycle": 3,
                "services": {"db": {"rebalance": False}, "web": {"preferred_node": "n2", "cooldown_seconds": 60}},
            },
        }
    )
    assert (config.rebalance.high_percent, config.rebalance.target_percent) == (90, 60)
    assert dict(rebalance_overrides(config)) == {
        "app_db": ServiceRebalance(rebalance=False),
        "app_web": ServiceRebalance(preferred_node="n2", cooldown_seconds=60),
    }


def problem(
    used: list[float], cands: list[tuple[int, float]], *, max_moves: int = 1, max_moves_per_node: int = 1
) -> MoveProblem:
    """Nodes of 100 bytes, the default thresholds without a margin; every candidate may go to every node but
    its own."""
    n = len(used)
    defaults = RebalanceSettings()
    return MoveProblem(
        node_used=used,
        node_total=[100.0] * n,
        sources=[i for i, u in enumerate(used) if u > defaults.high_percent],
        cand_source=[s for s, _ in cands],
        cand_bytes=[b for _, b in cands],
        cand_targets=[[t for t in range(n) if t != s] for s, _ in cands],
        cand_preferred=[-1] * len(cands),
        high_percent=defaults.high_percent,
        target_percent=defaults.target_percent,
        safety_margin_percent=0,
        max_moves=max_moves,
        max_moves_per_node=max_moves_per_node,
    )


CORE_CASES = [
    (
        "one-big-beats-two-small",
        problem([95, 10, 10], [(0, 4), (0, 6), (0, 12)], max_moves=3, max_moves_per_node=3),
        {(2, 1)},
    ),
    (
        "two-needed",
        problem([95, 10, 10], [(0, 6), (0, 5), (0, 1)], max_moves=3, max_moves_per_node=3),
        {(0, 1), (1, 2)},
    ),
    ("budget-relieves-the-worst", problem([95, 90, 10, 10], [(0, 5), (0, 5), (1, 8)], max_moves=1), {(2, 2)}),
    ("per-node-limit-spreads-targets", problem([95, 96, 10, 20], [(0, 12), (1, 12)], max_moves=2), {(1, 2), (0, 3)}),
    ("target-band-respected", problem([95, 65, 66], [(0, 12)], max_moves=1), set()),
]


@pytest.mark.parametrize(("prob", "expected"), [c[1:] for c in CORE_CASES], ids=[c[0] for c in CORE_CASES])
def test_choose_moves(prob: MoveProblem, expected: set[tuple[int, int]]) -> None:
    moves = choose_moves(prob)
    assert set(moves) == expected
    assert evaluate(prob, moves).moves == len(expected)
