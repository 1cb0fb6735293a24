"""The rebalancing driver (runtime.rebalancer): what it keeps between cycles, over snapshots built in code.

The moves themselves are followed by level (test_move_tracking); the driver only reports each outcome once
and never starts a second move of a unit still moving.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from orcastra.config import Config
from orcastra.domain.actions import UpdateNodeLabels
from orcastra.domain.labels import MOVE_STATE_LABEL, MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.domain.usage import MemoryView, NodeMemory, TaskMemory
from orcastra.features.rebalance.labels import CONVERGED, MOVING, pin_label_key
from orcastra.features.rebalance.pins import pin_constraint
from orcastra.runtime.rebalancer import Rebalancer

NOW = 100_000.0
KEY = pin_label_key("app_db")


def node(name: str, labels: Mapping[str, str] | None = None) -> Node:
    return Node(id=name, version=1, hostname=name, role="worker", availability="active", state="ready",
                labels=frozen_labels(labels))  # fmt: skip


def snap(db_on: str, *, moved_at: float = NOW - 60, state: str = MOVING, at: float = NOW) -> Snapshot:
    """app_db moved n1 -> n2 (pin on n2), its task on ``db_on``; app_a runs on n1."""
    moved = {MOVED_FROM_LABEL: "n1", MOVED_TO_LABEL: "n2", MOVED_AT_LABEL: f"{moved_at:.0f}", MOVE_STATE_LABEL: state}
    return Snapshot(
        nodes=(node("n1"), node("n2", {KEY: "true"}), node("n3")),
        services=(
            Service(
                id="db", version=3, name="app_db", constraints=(pin_constraint("app_db"),), labels=frozen_labels(moved)
            ),
            Service(id="a", version=3, name="app_a"),
        ),
        tasks=(
            Task(id="t1", service_id="db", node_id=db_on, slot=1, desired_state="running", state="running"),
            Task(id="t2", service_id="a", node_id="n1", slot=1, desired_state="running", state="running"),
        ),
        taken_at=at,
    )


def test_each_outcome_is_reported_once() -> None:
    """A dry run never records the outcome: the same converged move comes back every cycle."""
    r = Rebalancer()
    config = Config()
    assert r.finished_moves(snap("n1"), config) == ()  # in flight: nothing to count yet
    ((move, result),) = r.finished_moves(snap("n2"), config)
    assert (move.service, move.to_node, result) == ("app_db", "n2", "ok")
    assert r.finished_moves(snap("n2", at=NOW + 5), config) == ()
    assert r.finished_moves(snap("n2", state=CONVERGED, at=NOW + 10), config) == ()  # recorded: settled


def test_a_rollback_is_reported_once_and_a_new_leader_reports_it_too() -> None:
    late = snap("n1", moved_at=NOW - 500)
    r = Rebalancer()
    assert [res for _, res in r.finished_moves(late, Config())] == ["rolled-back"]
    assert r.finished_moves(late, Config()) == ()
    # A new leader (a fresh Rebalancer) that finds the same unfinished rollback does it and counts it.
    assert [res for _, res in Rebalancer().finished_moves(late, Config())] == ["rolled-back"]


def memory() -> MemoryView:
    used = {"n1": 990, "n2": 300, "n3": 300}  # n1 needs both of its units moved to get under high
    nodes = {h: NodeMemory(h, 1000, u, NOW - 5, "node-exporter") for h, u in used.items()}
    tasks = tuple(TaskMemory(s, "n1", 100, NOW - 5, "engine-stats") for s in ("app_db", "app_a"))
    return MemoryView(nodes=MappingProxyType(nodes), tasks=tasks, taken_at=NOW)


def memory_at(t: float) -> MemoryView:
    m = memory()
    nodes = {h: NodeMemory(h, n.total_bytes, n.used_bytes, t - 5, n.source) for h, n in m.nodes.items()}
    tasks = tuple(TaskMemory(x.service, x.hostname, x.used_bytes, t - 5, x.source) for x in m.tasks)
    return MemoryView(nodes=MappingProxyType(nodes), tasks=tasks, taken_at=t)


def eager() -> Config:
    """No sustained period, no cooldowns, two moves per cycle: only the move in flight holds app_db back."""
    return Config.model_validate(
        {
            "rebalance": {
                "sustained_seconds": 0,
                "global_cooldown_seconds": 0,
                "service_cooldown_seconds": 0,
                "max_moves_per_cycle": 2,
                "max_moves_per_node": 2,
            }
        }
    )


def test_step_never_starts_a_second_move_of_a_unit_in_flight() -> None:
    step = Rebalancer().step(snap("n1"), eager(), NOW, memory())
    assert sorted(m.unit for m in step.plan.moves) == ["app_a", "app_db"]
    assert [m.unit for m in step.started] == ["app_a"]
    pinned = {a.hostname for a in step.actions if isinstance(a, UpdateNodeLabels)}
    assert pinned == {step.started[0].to_node}
    assert step.wake_at == NOW + eager().rebalance.move_timeout_seconds


def test_step_keeps_the_above_high_clock_between_readings() -> None:
    config = Config.model_validate({"rebalance": {"sustained_seconds": 600}})
    r = Rebalancer()
    first = r.step(snap("n2", state=CONVERGED), config, NOW, memory())
    assert first.started == ()  # n1 just went above high
    later = r.step(snap("n2", state=CONVERGED), config, NOW + 601, memory_at(NOW + 601))
    assert [m.unit for m in later.started] == ["app_a"]  # app_db is in its cooldown (moved 60 s ago)
