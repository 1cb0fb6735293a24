"""Table tests of level-based move follow-through (features.rebalance.tracking) over snapshots built in code.

A move of the group app_db (anchor) + app_web (dependent) from n1 to n2 is recorded in app_db's labels; the
pin is the node label orcastra.place.app_db. Nothing but the snapshot is needed to follow it: no memory of
who made the move.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from orcastra.config import Config
from orcastra.domain.actions import UpdateNodeLabels, UpdateService
from orcastra.domain.labels import MOVE_STATE_LABEL, MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.features.colocation.plan import AnchorGroup, anchor_constraint
from orcastra.features.rebalance.labels import CONVERGED, MOVING, ROLLED_BACK, pin_label_key
from orcastra.features.rebalance.pins import pin_constraint, plan_move
from orcastra.features.rebalance.settings import RebalanceSettings
from orcastra.features.rebalance.tracking import track_moves
from orcastra.runtime.controllers import Pins

NOW = 100_000.0
TIMEOUT = RebalanceSettings().move_timeout_seconds
DB, WEB = "app_db", "app_web"
KEY = pin_label_key(DB)
PIN = pin_constraint(DB)
GROUPS = (AnchorGroup(DB, (WEB,)),)


@dataclass(frozen=True)
class Swarm:
    """Where the pin is, where the group's tasks run, and what app_db's labels record."""

    pin_on: tuple[str, ...] = ("n2",)
    db_on: tuple[str, ...] = ("n2",)
    web_on: tuple[str, ...] = ("n2",)
    moved_to: str = "n2"
    moved_at: float = NOW - 60
    state: str | None = MOVING  # None: recorded before move states existed
    down: tuple[str, ...] = ()

    def snapshot(self) -> Snapshot:
        nodes = tuple(
            Node(
                id=h, version=5, hostname=h, role="worker", availability="active",
                state="down" if h in self.down else "ready",
                labels=frozen_labels({KEY: "true"} if h in self.pin_on else None), updated_at=NOW - 1000,
            )
            for h in ("n1", "n2", "n3")
        )  # fmt: skip
        labels = {MOVED_FROM_LABEL: "n1", MOVED_TO_LABEL: self.moved_to, MOVED_AT_LABEL: f"{self.moved_at:.0f}"}
        if self.state is not None:
            labels[MOVE_STATE_LABEL] = self.state
        services = (
            Service(id="db", version=7, name=DB, constraints=(PIN,), labels=frozen_labels(labels)),
            Service(id="web", version=7, name=WEB, constraints=(anchor_constraint(DB),)),
        )
        tasks = tuple(
            Task(id=f"{sid}-{h}", service_id=sid, node_id=h, slot=i + 1, desired_state="running", state="running")
            for sid, hosts in (("db", self.db_on), ("web", self.web_on))
            for i, h in enumerate(hosts)
        )
        return Snapshot(nodes, services, tasks, taken_at=NOW)


def summary(actions: tuple[object, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for a in actions:
        if isinstance(a, UpdateNodeLabels):
            out.append(("node", a.hostname, *sorted(a.set_labels), *(f"-{k}" for k in a.remove_labels)))
        elif isinstance(a, UpdateService):
            labels = (f"{k}={v}" for k, v in sorted(a.set_labels.items()))
            out.append(("service", a.service_name, *(f"-{c}" for c in a.remove_constraints), *labels))
    return out


MARK_CONVERGED: list[tuple[str, ...]] = [("service", DB, f"{MOVE_STATE_LABEL}={CONVERGED}")]
ROLL_BACK: list[tuple[str, ...]] = [
    ("node", "n2", f"-{KEY}"),
    ("service", DB, f"-{PIN}", f"{MOVE_STATE_LABEL}={ROLLED_BACK}"),
]

CASES: list[tuple[str, Swarm, list[str], list[tuple[str, ...]], float | None]] = [
    # id, swarm, states of the moves followed, actions, wake_at
    ("converged", Swarm(), ["converged"], MARK_CONVERGED, None),
    ("in-flight-within-timeout", Swarm(db_on=("n1",), web_on=("n1",)), ["in-flight"], [], NOW - 60 + TIMEOUT),
    ("dependent-not-there-yet", Swarm(web_on=("n1",)), ["in-flight"], [], NOW - 60 + TIMEOUT),
    ("dependent-not-running", Swarm(web_on=()), ["in-flight"], [], NOW - 60 + TIMEOUT),
    ("timed-out-rolled-back", Swarm(db_on=("n1",), moved_at=NOW - TIMEOUT - 1), ["rolled-back"], ROLL_BACK, None),
    ("timed-out-at-the-deadline", Swarm(web_on=("n1",), moved_at=NOW - TIMEOUT), ["rolled-back"], ROLL_BACK, None),
    ("rollback-already-done", Swarm(pin_on=(), db_on=("n1",), moved_at=NOW - 500, state=ROLLED_BACK), [], [], None),
    ("pin-released-move-not-yet-marked", Swarm(pin_on=(), db_on=("n1",), moved_at=NOW - 500), [], [], None),
    (
        "moved-by-a-previous-leader-rolled-back",
        Swarm(db_on=("n1",), web_on=("n1",), moved_at=NOW - 3600),
        ["rolled-back"],
        ROLL_BACK,
        None,
    ),
    ("moved-by-a-previous-leader-converged", Swarm(moved_at=NOW - 3600), ["converged"], MARK_CONVERGED, None),
    ("pin-moved-by-a-later-move", Swarm(pin_on=("n3",), db_on=("n3",), web_on=("n3",)), [], [], None),
    (
        "converged-then-disrupted-is-not-rolled-back",
        Swarm(web_on=(), moved_at=NOW - 3600, state=CONVERGED),
        [],
        [],
        None,
    ),
    ("recorded-before-move-states", Swarm(db_on=("n1",), moved_at=NOW - 3600, state=None), [], [], None),
]


@pytest.mark.parametrize(("swarm", "states", "actions", "wake_at"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_track_moves(swarm: Swarm, states: list[str], actions: list[tuple[str, ...]], wake_at: float | None) -> None:
    tracking = track_moves(swarm.snapshot(), GROUPS, RebalanceSettings(), NOW)
    assert [m.state for m in tracking.moves] == states
    assert summary(tracking.plan.actions) == actions
    assert tracking.plan.wake_at == wake_at
    assert len(tracking.plan.findings) == len(states)  # each move followed says where it stands
    for m in tracking.moves:
        assert (m.service, m.services, m.from_node, m.to_node) == (DB, (DB, WEB), "n1", "n2")
        assert m.deadline == m.moved_at + TIMEOUT


def test_status_says_what_is_missing_and_the_result_to_count() -> None:
    in_flight = track_moves(Swarm(web_on=("n1",)).snapshot(), GROUPS, RebalanceSettings(), NOW)
    (move,) = in_flight.moves
    assert (move.detail, move.result) == (f"{WEB} runs on n1", None)
    assert "rolled back in 60 s unless it converges" in in_flight.plan.findings[0].message
    late = Swarm(web_on=("n1",), moved_at=NOW - 500)
    (finding,) = track_moves(late.snapshot(), GROUPS, RebalanceSettings(), NOW).plan.findings
    assert finding.level == "warning"
    assert "moved n1 -> n2 8 min ago and did not converge within 2 min (app_web runs on n1)" in finding.message
    assert [m.result for m in track_moves(Swarm().snapshot(), GROUPS, RebalanceSettings(), NOW).moves] == ["ok"]
    assert [m.result for m in track_moves(late.snapshot(), GROUPS, RebalanceSettings(), NOW).moves] == ["rolled-back"]


def test_after_the_rollback_nothing_is_followed_or_reported_again() -> None:
    """Apply the rollback's changes by hand: the next snapshot has no pin and a rolled-back record."""
    before = Swarm(db_on=("n1",), moved_at=NOW - 500)
    assert summary(track_moves(before.snapshot(), GROUPS, RebalanceSettings(), NOW).plan.actions) == ROLL_BACK
    after = Swarm(pin_on=(), db_on=("n1",), moved_at=NOW - 500, state=ROLLED_BACK)
    tracking = track_moves(after.snapshot(), GROUPS, RebalanceSettings(), NOW + 30)
    assert (tracking.moves, tracking.plan.actions, tracking.plan.findings) == ((), (), ())


def test_timeout_comes_from_the_settings() -> None:
    swarm = Swarm(db_on=("n1",), moved_at=NOW - 200)
    assert [m.state for m in track_moves(swarm.snapshot(), GROUPS, RebalanceSettings(), NOW).moves] == ["rolled-back"]
    longer = RebalanceSettings(move_timeout_seconds=300)
    assert [m.state for m in track_moves(swarm.snapshot(), GROUPS, longer, NOW).moves] == ["in-flight"]


def test_pins_controller_rolls_back_once_when_the_target_is_also_down() -> None:
    """The move tracking and the down-node rule would both release the pin: one release only."""
    swarm = Swarm(db_on=("n1",), web_on=("n1",), moved_at=NOW - 500, down=("n2",))
    plan = Pins().plan(swarm.snapshot(), Config())
    assert summary(plan.actions) == ROLL_BACK


def test_pins_controller_follows_moves_every_cycle() -> None:
    config = Config.model_validate({"anchors": {DB: {"dependents": [WEB]}}})
    in_flight = Pins().plan(Swarm(web_on=("n1",)).snapshot(), config)
    assert in_flight.actions == ()
    assert in_flight.wake_at == NOW - 60 + TIMEOUT
    assert summary(Pins().plan(Swarm().snapshot(), config).actions) == MARK_CONVERGED


def test_group_membership_comes_from_the_groups() -> None:
    """Without the group, app_web is not part of the unit: app_db on n2 alone is converged."""
    tracking = track_moves(Swarm(web_on=("n1",)).snapshot(), (), RebalanceSettings(), NOW)
    assert [(m.services, m.state) for m in tracking.moves] == [((DB,), "converged")]


def apply(snapshot: Snapshot, actions: tuple[object, ...], *, tasks: tuple[Task, ...] | None = None) -> Snapshot:
    """The Swarm after ``actions`` (what the executor would write), with the tasks where Swarm put them."""
    nodes = {n.hostname: n for n in snapshot.nodes}
    services = {s.name: s for s in snapshot.services}
    for a in actions:
        if isinstance(a, UpdateNodeLabels):
            n = nodes[a.hostname]
            labels = {k: v for k, v in {**n.labels, **a.set_labels}.items() if k not in a.remove_labels}
            nodes[a.hostname] = msgspec.structs.replace(n, labels=frozen_labels(labels), version=n.version + 1)
        elif isinstance(a, UpdateService):
            s = services[a.service_name]
            labels = {k: v for k, v in {**s.labels, **a.set_labels}.items() if k not in a.remove_labels}
            constraints = tuple(c for c in s.constraints if c not in a.remove_constraints) + a.add_constraints
            services[a.service_name] = msgspec.structs.replace(
                s, labels=frozen_labels(labels), constraints=constraints, version=s.version + 1
            )
    return Snapshot(
        tuple(nodes.values()), tuple(services.values()), snapshot.tasks if tasks is None else tasks, snapshot.taken_at
    )


def at(snapshot: Snapshot, now: float) -> Snapshot:
    return Snapshot(snapshot.nodes, snapshot.services, snapshot.tasks, taken_at=now)


def test_a_move_from_start_to_finish_by_level() -> None:
    """plan_move, in flight, converged (recorded), then nothing more: every step read from the Swarm only."""
    config = Config.model_validate({"anchors": {DB: {"dependents": [WEB]}}})
    start = Swarm(pin_on=(), moved_at=NOW - 10_000, state=CONVERGED, db_on=("n1",), web_on=("n1",)).snapshot()
    moved = apply(start, tuple(plan_move(start, DB, "n2", "n1", now=NOW, reason="n1 above high")))
    assert [m.state for m in track_moves(moved, GROUPS, RebalanceSettings(), NOW).moves] == ["in-flight"]
    there = Swarm(db_on=("n2",), web_on=("n2",)).snapshot().tasks
    plan = Pins().plan(at(apply(moved, (), tasks=there), NOW + 20), config)
    assert summary(plan.actions) == MARK_CONVERGED
    settled = at(apply(moved, plan.actions, tasks=there), NOW + 30)
    assert Pins().plan(settled, config) == Plan()
    # Much later a dependent restarts: a settled move is never rolled back.
    assert Pins().plan(at(apply(settled, (), tasks=there[:1]), NOW + 5000), config).actions == ()


def test_a_new_leader_rolls_back_a_move_that_never_converged() -> None:
    config = Config.model_validate({"anchors": {DB: {"dependents": [WEB]}}})
    start = Swarm(pin_on=(), moved_at=NOW - 10_000, state=CONVERGED, db_on=("n1",), web_on=("n1",)).snapshot()
    moved = apply(start, tuple(plan_move(start, DB, "n2", "n1", now=NOW, reason="n1 above high")))
    # The leader that made the move is gone; its successor knows nothing but the Swarm.
    plan = Pins().plan(at(moved, NOW + TIMEOUT + 5), config)
    assert summary(plan.actions) == ROLL_BACK
    after = at(apply(moved, plan.actions), NOW + TIMEOUT + 10)
    assert Pins().plan(after, config) == Plan()
    db = after.service(DB)
    assert db is not None
    assert (db.constraints, db.labels[MOVE_STATE_LABEL]) == ((), ROLLED_BACK)
