"""What the planner knows of the past: since when each node has been above ``high``, and the recent moves.

The above-high clocks cannot be read back from the Swarm: the runtime keeps them in memory and advances
them with ``update_history`` at every memory reading (after a restart they start again, which only delays
a move). The moves can: each move is recorded in the moved service's labels (``pins.plan_move``), and
``with_recorded_moves`` reads them back every cycle, so the anti-flap rules survive a restart or a change of
leader. Pure: ``now`` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from orcastra.domain.labels import MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.features.rebalance.settings import RebalanceSettings


@dataclass(frozen=True)
class MoveRecord:
    """A move as recorded in the moved service's labels: ``service`` (the pinned one: an anchor, or a plain
    service) left ``from_node`` for ``to_node`` at ``at``."""

    service: str
    from_node: str
    to_node: str
    at: float


def recorded_moves(snapshot: Snapshot) -> tuple[MoveRecord, ...]:
    """The last move of every service that records one (an unreadable time is no record)."""
    out = []
    for s in snapshot.services:
        if MOVED_AT_LABEL in s.labels:
            try:
                at = float(s.labels[MOVED_AT_LABEL])
            except ValueError:
                continue
            out.append(MoveRecord(s.name, s.labels.get(MOVED_FROM_LABEL, ""), s.labels.get(MOVED_TO_LABEL, ""), at))
    return tuple(out)


def _no_times() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RebalanceHistory:
    """What the planner must know of earlier cycles (it is otherwise a pure function of one snapshot)."""

    overloaded_since: Mapping[str, float] = field(default_factory=_no_times)  # hostname -> first seen above high
    recent_moves: tuple[MoveRecord, ...] = ()
    last_move_at: float | None = None


def update_history(
    history: RebalanceHistory, memory: MemoryView, settings: RebalanceSettings, now: float
) -> RebalanceHistory:
    """Advance the above-high clocks: start one for a node newly above ``high``, keep a running one, and drop
    nodes that went back under ``high`` or have no fresh data (a gap in the data restarts the clock: the
    node was not *seen* above high for the whole period)."""
    since: dict[str, float] = {}
    for hostname, sample in memory.nodes.items():
        if settings.fresh(sample, now) and sample.used_percent > settings.high_percent:
            since[hostname] = history.overloaded_since.get(hostname, now)
    return replace(history, overloaded_since=MappingProxyType(since))


def assume_sustained(memory: MemoryView, settings: RebalanceSettings, now: float) -> RebalanceHistory:
    """Clocks for a one-shot plan: a single reading cannot tell for how long a node has been above ``high``,
    so every node above it counts as if the sustained period had passed (the operator asked)."""
    return update_history(RebalanceHistory(), memory, settings, now - settings.sustained_seconds)


def with_recorded_moves(history: RebalanceHistory, snapshot: Snapshot) -> RebalanceHistory:
    """``history`` with the moves recorded in the services' labels (the anti-flap memory)."""
    recorded = recorded_moves(snapshot)
    return replace(history, recent_moves=recorded, last_move_at=max((m.at for m in recorded), default=None))
