"""The rebalancer's move follow-through: verified when the unit runs on the chosen node, rolled back
(pin released) when it does not within the timeout. Snapshots built in code, no daemon."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orcastra.config import load_config
from orcastra.domain.actions import UpdateNodeLabels, UpdateService
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.features.rebalance import PlannedMove
from orcastra.features.rebalance.labels import pin_label_key
from orcastra.features.rebalance.pins import pin_constraint
from orcastra.runtime.rebalancer import MoveInFlight, Rebalancer, unit_converged

MOVE = PlannedMove(
    unit="app_db", services=("app_db", "app_web"), pin_service="app_db", from_node="n1", to_node="n2",
    bytes=100, from_before_percent=90, from_after_percent=60, to_before_percent=10, to_after_percent=40,
    estimated=False, reason="test",
)  # fmt: skip


def node(name: str, labels: Mapping[str, str] | None = None) -> Node:
    return Node(id=name, version=1, hostname=name, role="worker", availability="active", state="ready",
                labels=frozen_labels(labels))  # fmt: skip


def snap(db_on: str, web_on: str) -> Snapshot:
    key = pin_label_key("app_db")
    return Snapshot(
        nodes=(node("n1"), node("n2", {key: "true"})),
        services=(
            Service(id="db", version=3, name="app_db", constraints=(pin_constraint("app_db"),)),
            Service(id="web", version=3, name="app_web"),
        ),
        tasks=(
            Task(id="t1", service_id="db", node_id=db_on, slot=1, desired_state="running", state="running"),
            Task(id="t2", service_id="web", node_id=web_on, slot=1, desired_state="running", state="running"),
        ),
    )


def test_unit_converged_needs_every_service_on_the_target() -> None:
    assert unit_converged(snap("n2", "n2"), MOVE)
    assert not unit_converged(snap("n2", "n1"), MOVE)


def test_converged_move_is_finished_ok(tmp_path: Path) -> None:
    config = load_config(None, {})
    r = Rebalancer()
    r.in_flight["app_db"] = MoveInFlight(MOVE, started_at=100, deadline=220)
    actions, finished = r.follow_moves(snap("n2", "n2"), config, now=150)
    assert actions == []
    assert finished == [(MOVE, "ok")]
    assert r.in_flight == {}


def test_move_not_converged_in_time_is_rolled_back(tmp_path: Path) -> None:
    config = load_config(None, {})
    r = Rebalancer()
    r.in_flight["app_db"] = MoveInFlight(MOVE, started_at=100, deadline=220)
    actions, finished = r.follow_moves(snap("n1", "n1"), config, now=150)
    assert (actions, finished) == ([], [])  # still in time: wait
    actions, finished = r.follow_moves(snap("n1", "n1"), config, now=221)
    assert finished == [(MOVE, "rolled-back")]
    assert r.in_flight == {}
    removed = [a for a in actions if isinstance(a, UpdateNodeLabels)]
    assert [(a.hostname, a.remove_labels) for a in removed] == [("n2", (pin_label_key("app_db"),))]
    (svc,) = [a for a in actions if isinstance(a, UpdateService)]
    assert svc.remove_constraints == (pin_constraint("app_db"),)
