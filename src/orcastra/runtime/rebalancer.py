"""The rebalancing loop's stateful side: keep the overload history, plan, and follow moves through.

Every ``monitor_interval_seconds`` the daemon's memory watcher reads memory (``orcastra.adapters.memory``, in its own
thread: container stats are one call per container and must not hold up reconcile cycles). With each new
reading the leader updates since-when each node has been above ``high`` and asks the pure planner for moves. A
planned move becomes pin actions (``controllers.pins.plan_move``) for the one executor. A move in flight is
checked every cycle: it is done when the moved service's tasks (and its dependents') run on the chosen node;
if that has not happened within ``move_timeout_seconds`` the pin is released (rolled back), the failure is
reported and counted, and the per-service cooldown (recorded in the service's labels) keeps it from being
retried at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from orcastra.config import Config
from orcastra.domain.actions import Action
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.features.colocation.plan import resolve_groups
from orcastra.features.rebalance import (
    MoveRecord,
    PlannedMove,
    RebalanceHistory,
    RebalancePlan,
    plan_rebalance,
    update_history,
)
from orcastra.features.rebalance.pins import plan_move, plan_release, recorded_moves
from orcastra.runtime.controllers import colocation_settings, rebalance_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveInFlight:
    move: PlannedMove
    started_at: float
    deadline: float


@dataclass(frozen=True)
class RebalanceStep:
    actions: tuple[Action, ...] = ()
    plan: RebalancePlan | None = None
    memory: MemoryView | None = None
    finished: tuple[tuple[PlannedMove, str], ...] = ()  # (move, "ok" | "rolled-back")


def history_with_recorded_moves(history: RebalanceHistory, snapshot: Snapshot) -> RebalanceHistory:
    """The anti-flap memory: moves recorded in the services' labels (they survive an Orcastra restart)."""
    recorded = tuple(MoveRecord(m.service, m.from_node, m.to_node, m.at) for m in recorded_moves(snapshot))
    last = max((m.at for m in recorded), default=None)
    if history.last_move_at is not None:
        last = history.last_move_at if last is None else max(last, history.last_move_at)
    return RebalanceHistory(history.overloaded_since, recorded, last)


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


class Rebalancer:
    """Holds what must outlive one cycle: overload history, the last plan, moves in flight."""

    def __init__(self) -> None:
        self.history = RebalanceHistory()
        self.in_flight: dict[str, MoveInFlight] = {}
        self.last_plan: RebalancePlan | None = None
        self.last_memory: MemoryView | None = None
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

    def step(self, snapshot: Snapshot, config: Config, now: float, memory: MemoryView | None) -> RebalanceStep:
        """Follow moves in flight; with a new memory reading, plan new moves."""
        actions, finished = self.follow_moves(snapshot, config, now)
        if memory is None:
            return RebalanceStep(tuple(actions), None, None, tuple(finished))
        settings = config.rebalance
        self.history = update_history(self.history, memory, settings, now)
        groups, _ = resolve_groups(snapshot, colocation_settings(config))
        history = history_with_recorded_moves(self.history, snapshot)
        plan = plan_rebalance(snapshot, memory, groups, settings, history, now, overrides=rebalance_overrides(config))
        self.last_plan, self.last_memory = plan, memory
        # The same findings come back every monitor interval: log a finding when it appears, not each time.
        current = frozenset((f.subject, f.message) for f in plan.findings)
        for f in plan.findings:
            if (f.subject, f.message) not in self._logged:
                (log.warning if f.level == "warning" else log.info)("rebalance: %s: %s", f.subject, f.message)
        self._logged = current
        for move in plan.moves:
            if move.unit in self.in_flight:
                continue
            actions += plan_move(snapshot, move.pin_service, move.to_node, move.from_node, now=now, reason=move.reason)
            self.in_flight[move.unit] = MoveInFlight(move, now, now + config.rebalance.move_timeout_seconds)
            self.history = RebalanceHistory(self.history.overloaded_since, self.history.recent_moves, now)
        return RebalanceStep(tuple(actions), plan, memory, tuple(finished))


def moves_table(moves: Sequence[PlannedMove]) -> list[list[str]]:
    return [
        [
            m.unit,
            f"{m.from_node} -> {m.to_node}",
            f"{m.bytes / 2**20:.0f} MiB" + (" (estimated)" if m.estimated else ""),
            f"{m.from_before_percent:.0f}% -> {m.from_after_percent:.0f}%",
            f"{m.to_before_percent:.0f}% -> {m.to_after_percent:.0f}%",
            m.reason,
        ]
        for m in moves
    ]
