"""Table tests of placement pins (rebalancing moves) over snapshots built in code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from orcastra.domain.actions import UpdateNodeLabels, UpdateService
from orcastra.domain.labels import MOVE_STATE_LABEL, MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot, frozen_labels
from orcastra.features.rebalance.history import recorded_moves
from orcastra.features.rebalance.labels import CONVERGED, MOVING, ROLLED_BACK, pin_label_key
from orcastra.features.rebalance.pins import pin_constraint, plan_move, plan_pins, plan_release

NOW = 5000.0
KEY = pin_label_key("app_db")
PIN = pin_constraint("app_db")


def node(
    name: str, labels: Mapping[str, str] | None = None, state: str = "ready", availability: str = "active"
) -> Node:
    return Node(
        id=name, version=3, hostname=name, role="worker", availability=availability, state=state,
        labels=frozen_labels(labels), updated_at=NOW - 100,
    )  # fmt: skip


def svc(constraints: tuple[str, ...] = (), labels: Mapping[str, str] | None = None) -> Service:
    return Service(id="s1", version=9, name="app_db", constraints=constraints, labels=frozen_labels(labels))


def summary(actions: Sequence[object]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for a in actions:
        if isinstance(a, UpdateNodeLabels):
            out.append(("node", a.hostname, *sorted(a.set_labels), *(f"-{k}" for k in a.remove_labels)))
        elif isinstance(a, UpdateService):
            state = (
                (f"{MOVE_STATE_LABEL}={a.set_labels[MOVE_STATE_LABEL]}",) if MOVE_STATE_LABEL in a.set_labels else ()
            )
            out.append(
                ("service", a.service_name, *a.add_constraints, *(f"-{c}" for c in a.remove_constraints), *state)
            )
    return out


def test_first_move_labels_target_and_adds_constraint() -> None:
    s = Snapshot((node("n1"), node("n2")), (svc(),), ())
    actions = plan_move(s, "app_db", "n2", "n1", now=NOW, reason="n1 at 92%")
    assert summary(actions) == [("node", "n2", KEY), ("service", "app_db", PIN, f"{MOVE_STATE_LABEL}={MOVING}")]
    moved = actions[-1]
    assert isinstance(moved, UpdateService)
    assert moved.set_labels[MOVED_FROM_LABEL] == "n1"
    assert moved.set_labels[MOVED_AT_LABEL] == "5000"
    assert moved.set_labels[MOVE_STATE_LABEL] == MOVING  # followed through by tracking.track_moves


def test_next_move_only_moves_the_label() -> None:
    s = Snapshot((node("n1", {KEY: "true"}), node("n2")), (svc((PIN,)),), ())
    actions = plan_move(s, "app_db", "n2", "n1", now=NOW, reason="x")
    assert summary(actions) == [
        ("node", "n2", KEY),
        ("node", "n1", f"-{KEY}"),
        ("service", "app_db", f"{MOVE_STATE_LABEL}={MOVING}"),
    ]


@pytest.mark.parametrize(
    ("nodes", "service", "want"),
    [
        ((node("n1", {KEY: "true"}),), svc((PIN,)), []),
        ((node("n1", {KEY: "true"}),), svc(), [("service", "app_db", PIN)]),  # stripped by a stack deploy
        (
            (node("n1", {KEY: "true"}, state="down"),),
            svc((PIN,)),
            [("node", "n1", f"-{KEY}"), ("service", "app_db", f"-{PIN}")],
        ),
        (
            (node("n1", {KEY: "true"}, availability="drain"),),
            svc((PIN,)),
            [("node", "n1", f"-{KEY}"), ("service", "app_db", f"-{PIN}")],
        ),
        ((node("n1"),), svc((PIN,)), [("service", "app_db", f"-{PIN}")]),  # dangling constraint
        ((node("n1", {KEY: "true"}),), None, [("node", "n1", f"-{KEY}")]),  # service gone
    ],
    ids=["healthy", "restore-after-deploy", "release-down-node", "release-drained", "dangling-constraint", "gone"],
)
def test_plan_pins(nodes: tuple[Node, ...], service: Service | None, want: list[tuple[str, ...]]) -> None:
    s = Snapshot(nodes, (service,) if service else (), ())
    assert summary(plan_pins(s, NOW).actions) == want


MOVING_LABELS = {MOVE_STATE_LABEL: MOVING}
ROLLED = f"{MOVE_STATE_LABEL}={ROLLED_BACK}"


@pytest.mark.parametrize(
    ("nodes", "service", "want"),
    [
        (
            (node("n1", {KEY: "true"}, state="down"),),
            svc((PIN,), MOVING_LABELS),
            [("node", "n1", f"-{KEY}"), ("service", "app_db", f"-{PIN}", ROLLED)],
        ),
        ((node("n1"),), svc((PIN,), MOVING_LABELS), [("service", "app_db", f"-{PIN}", ROLLED)]),
        ((node("n1"),), svc((PIN,), {MOVE_STATE_LABEL: CONVERGED}), [("service", "app_db", f"-{PIN}")]),
    ],
    ids=["released-while-moving", "dangling-constraint-while-moving", "converged-move-stays-converged"],
)
def test_a_release_marks_a_move_still_moving_rolled_back(
    nodes: tuple[Node, ...], service: Service, want: list[tuple[str, ...]]
) -> None:
    assert summary(plan_pins(Snapshot(nodes, (service,), ()), NOW).actions) == want


def test_release_of_a_moving_move_without_constraint_still_records_it() -> None:
    s = Snapshot((node("n1", {KEY: "true"}),), (svc((), MOVING_LABELS),), ())
    assert summary(plan_release(s, "app_db", "x")) == [("node", "n1", f"-{KEY}"), ("service", "app_db", ROLLED)]


def test_skipped_pins_are_left_to_the_move_tracking() -> None:
    s = Snapshot((node("n1", {KEY: "true"}, state="down"),), (svc(),), ())
    assert plan_pins(s, NOW, skip={"app_db"}).actions == ()
    assert plan_pins(Snapshot((node("n1"),), (svc((PIN,)),), ()), NOW, skip={"app_db"}).actions == ()


def test_release_waits_for_the_grace_period() -> None:
    down = Node(
        id="n1", version=3, hostname="n1", role="worker", availability="active", state="down",
        labels=frozen_labels({KEY: "true"}), updated_at=NOW - 5,
    )  # fmt: skip
    plan = plan_pins(Snapshot((down,), (svc((PIN,)),), ()), NOW)
    assert plan.actions == ()
    assert plan.wake_at == NOW + 25


def test_recorded_moves_are_read_back_from_service_labels() -> None:
    s = Snapshot((), (svc(labels={MOVED_FROM_LABEL: "n1", MOVED_TO_LABEL: "n2", MOVED_AT_LABEL: "42"}),), ())
    (m,) = recorded_moves(s)
    assert (m.service, m.from_node, m.to_node, m.at) == ("app_db", "n1", "n2", 42.0)
