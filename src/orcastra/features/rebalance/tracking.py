"""Moves followed through by level: from one snapshot, which moves are in flight, which converged, and which
did not converge in time and are rolled back.

A move of service ``S`` (an anchor with its dependents, or a plain service: the unit) from ``A`` to ``B`` is
recorded in ``S``'s labels (``moved-from``/``moved-to``/``moved-at``, ``move-state=moving``) and carried out
by the pin label ``orcastra.place.S`` on ``B`` (``pins.plan_move``). Everything needed to follow it is in the
Swarm, so any leader, a new one included, follows it from any snapshot:

- only a move ``moving`` whose recorded target ``B`` still carries the pin is followed. A pin gone from
  ``B`` means the move was rolled back, or released because ``B`` failed (``pins.plan_pins``), or a later
  move re-pointed it: nothing to follow, nothing to report again;
- **converged**: every service of the unit runs, and only on ``B``. The move is marked ``converged`` (a
  label-only update: no task restarts), so it is reported once and a later disruption is never taken for a
  failed move;
- **in flight**: not converged yet, before ``moved-at + move_timeout_seconds``; the plan asks to be woken
  at that deadline;
- **rolled back**: not converged by the deadline. The pin is released (``pins.plan_release``: label and
  constraint removed, the move marked ``rolled-back``) so Swarm runs the unit where it can; the cooldowns
  (``moved-at``) keep it from being tried again at once.

Pure: no I/O, no clock (``now`` is a parameter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from orcastra.domain.actions import Action, UpdateService
from orcastra.domain.labels import MOVE_STATE_LABEL
from orcastra.domain.plan import Finding, Plan
from orcastra.domain.snapshot import Node, Service, Snapshot
from orcastra.features.colocation.plan import AnchorGroup
from orcastra.features.rebalance.explain import format_seconds
from orcastra.features.rebalance.history import MoveRecord, recorded_moves
from orcastra.features.rebalance.labels import CONVERGED, MOVING, pin_label_key
from orcastra.features.rebalance.pins import CONTROLLER, plan_release
from orcastra.features.rebalance.settings import RebalanceSettings

MoveState = Literal["in-flight", "converged", "rolled-back"]
MoveResult = Literal["ok", "rolled-back"]  # the result label of orcastra_rebalance_moves_total


@dataclass(frozen=True)
class TrackedMove:
    """A move followed through, as one snapshot shows it."""

    service: str  # the pinned service: the anchor of a group, or the plain service
    services: tuple[str, ...]  # the unit: the service and its dependents
    from_node: str
    to_node: str
    moved_at: float
    deadline: float  # moved_at + move_timeout_seconds
    state: MoveState  # "converged" and "rolled-back": this plan records the outcome
    detail: str  # what is still missing ("" once converged)

    @property
    def key(self) -> tuple[str, float]:
        """Identifies the move (a later move of the same service has a later ``moved_at``)."""
        return self.service, self.moved_at

    @property
    def result(self) -> MoveResult | None:
        """The outcome to count (``orcastra_rebalance_moves_total{result=...}``); None while in flight."""
        if self.state == "in-flight":
            return None
        return "ok" if self.state == "converged" else "rolled-back"


@dataclass(frozen=True)
class MoveTracking:
    """The moves followed on one snapshot, and the plan that records their outcomes (rollback, converged)."""

    moves: tuple[TrackedMove, ...]
    plan: Plan

    @property
    def changed_services(self) -> frozenset[str]:
        """The services this plan changes: ``plan_pins`` leaves their pins alone for this cycle."""
        return frozenset(m.service for m in self.moves if m.state != "in-flight")


def _missing(snapshot: Snapshot, services: Sequence[Service], target: Node) -> list[str]:
    """What keeps the unit from running (only) on ``target``, one entry per service."""
    out = []
    for svc in services:
        running = snapshot.running_tasks(svc.id)
        elsewhere = sorted({t.node_id for t in running} - {target.id})
        if elsewhere:
            hosts = [n.hostname if (n := snapshot.node(x)) is not None else x for x in elsewhere]
            out.append(f"{svc.name} runs on {', '.join(sorted(hosts))}")
        elif not running:
            out.append(f"{svc.name} does not run")
    return out


def _mark_converged(svc: Service, record: MoveRecord) -> UpdateService:
    return UpdateService(
        service_id=svc.id,
        service_name=svc.name,
        service_version=svc.version,
        set_labels=MappingProxyType({MOVE_STATE_LABEL: CONVERGED}),
        reason=f"rebalance: {svc.name} runs on {record.to_node} as moved from {record.from_node}: move converged",
        controller=CONTROLLER,
    )


def _follow(  # noqa: PLR0913 - one recorded move with its unit and target, and the clock
    snapshot: Snapshot, record: MoveRecord, unit: Sequence[Service], target: Node, *, timeout: float, now: float
) -> tuple[TrackedMove, list[Action], Finding]:
    """One move ``moving`` whose pin is on its target: converged, in flight, or rolled back now."""
    missing = _missing(snapshot, unit, target)
    deadline = record.at + timeout
    moved = f"moved {record.from_node} -> {record.to_node} {format_seconds(now - record.at)} ago"
    state: MoveState
    actions: list[Action] = []
    if not missing:
        state = "converged"
        actions.append(_mark_converged(unit[0], record))
        finding = Finding(record.service, f"{moved}: runs there now (converged)")
    elif now < deadline:
        state = "in-flight"
        finding = Finding(
            record.service,
            f"{moved}, not converged yet ({'; '.join(missing)}): rolled back in "
            f"{format_seconds(deadline - now)} unless it converges",
        )
    else:
        state = "rolled-back"
        why = f"did not converge within {format_seconds(timeout)} ({'; '.join(missing)})"
        actions += plan_release(snapshot, record.service, f"rebalance: the move to {record.to_node} {why}")
        finding = Finding(record.service, f"{moved} and {why}: rolled back (pin released)", "warning")
    tracked = TrackedMove(
        service=record.service,
        services=tuple(s.name for s in unit),
        from_node=record.from_node,
        to_node=record.to_node,
        moved_at=record.at,
        deadline=deadline,
        state=state,
        detail="; ".join(missing),
    )
    return tracked, actions, finding


def track_moves(
    snapshot: Snapshot, groups: Sequence[AnchorGroup], settings: RebalanceSettings, now: float
) -> MoveTracking:
    """Every move followed through on ``snapshot`` (see the module docstring), with the actions that record
    the outcomes reached, a finding per move, and ``wake_at`` at the earliest deadline of a move in flight.
    ``groups`` give the dependents that move with an anchor (``colocation.resolve_groups``)."""
    dependents = {g.anchor: g.dependents for g in groups}
    moves: list[TrackedMove] = []
    actions: list[Action] = []
    findings: list[Finding] = []
    for record in recorded_moves(snapshot):
        svc = snapshot.service(record.service)
        target = snapshot.node_by_hostname(record.to_node)
        if svc is None or svc.labels.get(MOVE_STATE_LABEL) != MOVING:
            continue  # settled (converged, rolled back) or recorded before move states existed
        if target is None or target.labels.get(pin_label_key(svc.name)) != "true":
            continue  # the pin was released or re-pointed: nothing to follow
        unit = [svc, *(s for d in dependents.get(svc.name, ()) if (s := snapshot.service(d)) is not None)]
        tracked, planned, finding = _follow(
            snapshot, record, unit, target, timeout=settings.move_timeout_seconds, now=now
        )
        moves.append(tracked)
        actions += planned
        findings.append(finding)
    wake_at = min((m.deadline for m in moves if m.state == "in-flight"), default=None)
    return MoveTracking(tuple(moves), Plan(tuple(actions), tuple(findings), wake_at))
