"""The rebalancing driver: the stateful side of the pure planner (``orcastra.features.rebalance``).

Every ``monitor_interval_seconds`` the daemon's memory watcher reads memory (``orcastra.adapters.memory``, in
its own thread: container stats are one call per container and must not hold up reconcile cycles). With each
new reading the leader's ``Rebalancer.step`` advances since-when each node has been above ``high`` and asks
the pure planner for moves; a planned move becomes pin actions (``pins.plan_move``) for the one executor. A
move in flight is checked every cycle: it is done when the moved service's tasks (and its dependents') run
on the chosen node; if that has not happened within ``move_timeout_seconds`` the pin is released (rolled
back), the failure is reported and counted, and the per-service cooldown (recorded in the service's labels)
keeps it from being retried at once.

``plan_now`` is the one-shot plan of ``orcastra plan`` and of the ``rebalance`` command: memory read now,
cooldowns honoured, the sustained period not waited for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orcastra.adapters.memory import collect_memory
from orcastra.config import Config
from orcastra.domain.actions import Action
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.features.colocation.plan import resolve_groups
from orcastra.features.rebalance import (
    PlannedMove,
    RebalanceHistory,
    RebalancePlan,
    assume_sustained,
    plan_rebalance,
    update_history,
    with_recorded_moves,
)
from orcastra.features.rebalance.pins import plan_move, plan_release
from orcastra.runtime.controllers import colocation_settings, rebalance_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveInFlight:
    move: PlannedMove
    started_at: float
    deadline: float


@dataclass(frozen=True)
class RebalanceStep:
    """A rebalancing plan made from one memory reading, and the pin actions of the moves it starts."""

    actions: tuple[Action, ...]
    plan: RebalancePlan
    memory: MemoryView


def unit_converged(snapshot: Snapshot, move: PlannedMove) -> bool:
    """Every service of the unit runs (only) on the chosen node."""
    target = snapshot.node_by_hostname(move.to_node)
    if target is None:
        return False
    for name in move.services:
        svc = snapshot.service(name)
        if svc is None:
            return False
        running = snapshot.running_tasks(svc.id)
        if not running or any(t.node_id != target.id for t in running):
            return False
    return True


def _plan(
    config: Config, snapshot: Snapshot, memory: MemoryView, history: RebalanceHistory, now: float
) -> RebalancePlan:
    groups, _ = resolve_groups(snapshot, colocation_settings(config))
    return plan_rebalance(
        snapshot,
        memory,
        groups,
        config.rebalance,
        with_recorded_moves(history, snapshot),
        now,
        overrides=rebalance_overrides(config),
    )


def _move_actions(snapshot: Snapshot, moves: tuple[PlannedMove, ...], now: float) -> list[Action]:
    actions: list[Action] = []
    for move in moves:
        actions += plan_move(snapshot, move.pin_service, move.to_node, move.from_node, now=now, reason=move.reason)
    return actions


def plan_now(config: Config, snapshot: Snapshot, now: float) -> RebalanceStep:
    """Read memory now and plan, for ``orcastra plan`` and the ``rebalance`` command: the plan, the memory it
    read and the pin actions of its moves. A single read cannot know for how long a node has been above
    `high`, so nodes above it count as if the sustained period had passed (the daemon's own loop does wait
    for it); cooldowns and every other rule apply as usual."""
    memory = collect_memory(config, snapshot, now)
    plan = _plan(config, snapshot, memory, assume_sustained(memory, config.rebalance, now), now)
    return RebalanceStep(tuple(_move_actions(snapshot, plan.moves, now)), plan, memory)


class Rebalancer:
    """Holds what must outlive one cycle: the above-high clocks, moves in flight, the findings logged."""

    def __init__(self) -> None:
        self.history = RebalanceHistory()
        self.in_flight: dict[str, MoveInFlight] = {}
        self._logged: frozenset[tuple[str, str]] = frozenset()

    def follow_moves(
        self, snapshot: Snapshot, config: Config, now: float
    ) -> tuple[list[Action], list[tuple[PlannedMove, str]]]:
        actions: list[Action] = []
        finished: list[tuple[PlannedMove, str]] = []
        for unit, flight in list(self.in_flight.items()):
            if unit_converged(snapshot, flight.move):
                log.info("rebalance: %s now runs on %s (%.0f s)", unit, flight.move.to_node, now - flight.started_at)
                finished.append((flight.move, "ok"))
                del self.in_flight[unit]
            elif now >= flight.deadline:
                log.warning(
                    "rebalance: %s did not converge on %s within %.0f s; rolling back (pin released)",
                    unit,
                    flight.move.to_node,
                    config.rebalance.move_timeout_seconds,
                )
                actions += plan_release(snapshot, flight.move.pin_service, "the move did not converge in time")
                finished.append((flight.move, "rolled-back"))
                del self.in_flight[unit]
        return actions, finished

    def step(self, snapshot: Snapshot, config: Config, now: float, memory: MemoryView) -> RebalanceStep:
        """Plan new moves with a new memory reading."""
        self.history = update_history(self.history, memory, config.rebalance, now)
        plan = _plan(config, snapshot, memory, self.history, now)
        # The same findings come back every monitor interval: log a finding when it appears, not each time.
        current = frozenset((f.subject, f.message) for f in plan.findings)
        for f in plan.findings:
            if (f.subject, f.message) not in self._logged:
                (log.warning if f.level == "warning" else log.info)("rebalance: %s: %s", f.subject, f.message)
        self._logged = current
        moves = tuple(m for m in plan.moves if m.unit not in self.in_flight)
        actions = _move_actions(snapshot, moves, now)
        for move in moves:
            self.in_flight[move.unit] = MoveInFlight(move, now, now + config.rebalance.move_timeout_seconds)
        if moves:
            self.history = RebalanceHistory(self.history.overloaded_since, self.history.recent_moves, now)
        return RebalanceStep(tuple(actions), plan, memory)
