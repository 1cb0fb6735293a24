"""The rebalancing driver: the stateful side of the pure feature (``orcastra.features.rebalance``).

Every ``monitor_interval_seconds`` the daemon's memory watcher reads memory (``orcastra.adapters.memory``, in
its own thread: container stats are one call per container and must not hold up reconcile cycles). With each
new reading the leader's ``Rebalancer.step`` advances since-when each node has been above ``high`` and asks
the pure planner for moves; a planned move becomes pin actions (``pins.plan_move``) for the one executor.

Moves are followed through by level, not here: the Pins controller runs ``tracking.track_moves`` every
cycle on whatever the Swarm shows (the move recorded in the service's labels, the pin on the target node),
so any leader, a new one included, marks a move converged or rolls it back. ``Rebalancer.finished_moves``
reads the same outcomes from the cycle's snapshot to log and count each one once.

What lives here, in memory, is only what cannot live in the Swarm: the above-high clocks (a restart starts
them again, which only delays a move), the findings already logged and the outcomes already reported.

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
    RebalanceInput,
    RebalancePlan,
    assume_sustained,
    plan_rebalance,
    update_history,
    with_recorded_moves,
)
from orcastra.features.rebalance.pins import plan_move
from orcastra.features.rebalance.tracking import MoveResult, TrackedMove
from orcastra.runtime.controllers import colocation_settings, move_tracking, rebalance_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebalanceStep:
    """A rebalancing plan made from one memory reading, and what it starts."""

    actions: tuple[Action, ...]  # the pin actions of the moves started, for the executor
    plan: RebalancePlan
    memory: MemoryView
    started: tuple[PlannedMove, ...]  # the plan's moves but those of units with a move still in flight
    wake_at: float | None  # when the moves started must have converged (the Pins controller rolls back then)


def _step(
    config: Config, snapshot: Snapshot, memory: MemoryView, history: RebalanceHistory, now: float
) -> RebalanceStep:
    """Plan from ``memory``, and the pin actions of every move whose unit has no move in flight."""
    groups, _ = resolve_groups(snapshot, colocation_settings(config))
    plan = plan_rebalance(
        RebalanceInput(
            snapshot,
            memory,
            groups,
            config.rebalance,
            with_recorded_moves(history, snapshot),
            now,
            overrides=rebalance_overrides(config),
        )
    )
    # A cooldown normally keeps a moving unit from being planned again; a cooldown of 0 must not either.
    moving = {m.service for m in move_tracking(snapshot, config).moves if m.state == "in-flight"}
    started = tuple(m for m in plan.moves if m.pin_service not in moving)
    actions: list[Action] = []
    for move in started:
        actions += plan_move(snapshot, move.pin_service, move.to_node, move.from_node, now=now, reason=move.reason)
    wake_at = now + config.rebalance.move_timeout_seconds if started else None
    return RebalanceStep(tuple(actions), plan, memory, started, wake_at)


def plan_now(config: Config, snapshot: Snapshot, now: float) -> RebalanceStep:
    """Read memory now and plan, for ``orcastra plan`` and the ``rebalance`` command: the plan, the memory it
    read and the pin actions of its moves. A single read cannot know for how long a node has been above
    `high`, so nodes above it count as if the sustained period had passed (the daemon's own loop does wait
    for it); cooldowns and every other rule apply as usual."""
    memory = collect_memory(config, snapshot, now)
    return _step(config, snapshot, memory, assume_sustained(memory, config.rebalance, now), now)


class Rebalancer:
    """The rebalancing loop's memory: the above-high clocks, the findings logged, the outcomes reported."""

    def __init__(self) -> None:
        self.history = RebalanceHistory()  # only its above-high clocks: the moves are read from the Swarm
        self._logged: frozenset[tuple[str, str]] = frozenset()
        self._reported: frozenset[tuple[str, float]] = frozenset()

    def finished_moves(self, snapshot: Snapshot, config: Config) -> tuple[tuple[TrackedMove, MoveResult], ...]:
        """The moves that reached an outcome on ``snapshot`` (the one the cycle's Pins controller planned
        from), each returned once with its result: "ok" (converged) or "rolled-back". An outcome comes back
        until its record is written (a dry run never writes it); it is logged and returned the first time."""
        finished = [(m, r) for m in move_tracking(snapshot, config).moves if (r := m.result) is not None]
        new = tuple((m, r) for m, r in finished if m.key not in self._reported)
        self._reported = frozenset(m.key for m, _ in finished)
        for m, r in new:
            if r == "ok":
                log.info("rebalance: %s now runs on %s (%.0f s)", m.service, m.to_node, snapshot.taken_at - m.moved_at)
            else:
                log.warning(
                    "rebalance: %s did not converge on %s within %.0f s (%s); rolling back (pin released)",
                    m.service,
                    m.to_node,
                    config.rebalance.move_timeout_seconds,
                    m.detail,
                )
        return new

    def step(self, snapshot: Snapshot, config: Config, now: float, memory: MemoryView) -> RebalanceStep:
        """Plan new moves with a new memory reading (the leader, once per reading)."""
        self.history = update_history(self.history, memory, config.rebalance, now)
        step = _step(config, snapshot, memory, self.history, now)
        # The same findings come back every monitor interval: log a finding when it appears, not each time.
        current = frozenset((f.subject, f.message) for f in step.plan.findings)
        for f in step.plan.findings:
            if (f.subject, f.message) not in self._logged:
                (log.warning if f.level == "warning" else log.info)("rebalance: %s: %s", f.subject, f.message)
        self._logged = current
        return step
