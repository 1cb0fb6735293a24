"""The rebalancer's label keys, its memory between cycles, and its output.

All frozen data: the daemon keeps one ``RebalanceHistory`` between cycles, advances it with
``update_history`` every time it reads memory, and records each executed move with ``record_move``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from orcastra.domain.plan import Finding
from orcastra.domain.usage import MemoryView
from orcastra.features.rebalance.settings import RebalanceSettings

REBALANCE_LABEL = "orcastra.rebalance"
PREFERRED_NODE_LABEL = "orcastra.rebalance.preferred-node"
LEASE_LABEL = "orcastra.lease"  # runtime.leadership.LEASE_MARKER_LABEL; that module does I/O, so not imported
FALSE_VALUES = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class MoveRecord:
    """A move that was carried out: ``unit`` (anchor or service name) left ``from_node`` at ``at``."""

    unit: str
    from_node: str
    to_node: str
    at: float


def _no_times() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RebalanceHistory:
    """What the planner must remember between cycles (it is otherwise a pure function of one snapshot)."""

    overloaded_since: Mapping[str, float] = field(default_factory=_no_times)  # hostname -> first seen above high
    recent_moves: tuple[MoveRecord, ...] = ()
    last_move_at: float | None = None


def update_history(
    history: RebalanceHistory, memory: MemoryView, settings: RebalanceSettings, now: float
) -> RebalanceHistory:
    """Advance the above-high clocks: start one for a node newly above ``high``, keep a running one, and drop
    nodes that went back under ``high`` or have no fresh data (a gap in the data restarts the clock: the
    node was not *seen* above high for the whole period). Moves older than every cooldown are forgotten."""
    since: dict[str, float] = {}
    for hostname, sample in memory.nodes.items():
        if settings.fresh(sample, now) and sample.used_percent > settings.high_percent:
            since[hostname] = history.overloaded_since.get(hostname, now)
    cooldowns = [o.cooldown_seconds for o in settings.services.values() if o.cooldown_seconds is not None]
    horizon = now - max([settings.service_cooldown_seconds, settings.global_cooldown_seconds, *cooldowns])
    recent = tuple(m for m in history.recent_moves if m.at >= horizon)
    return RebalanceHistory(MappingProxyType(since), recent, history.last_move_at)


def record_move(history: RebalanceHistory, record: MoveRecord) -> RebalanceHistory:
    """The history after a move was carried out (the daemon calls this when the executor applied it)."""
    last = record.at if history.last_move_at is None else max(history.last_move_at, record.at)
    return replace(history, recent_moves=(*history.recent_moves, record), last_move_at=last)


@dataclass(frozen=True)
class PlannedMove:
    """One unit to move, where, and what the planner expects it to do to both nodes."""

    unit: str  # the anchor name for a group, else the service name
    services: tuple[str, ...]  # everything that moves (anchor + dependents, or the one service)
    pin_service: str  # the service that gets the placement pin (the anchor, or the service itself)
    from_node: str
    to_node: str
    bytes: int
    from_before_percent: float
    from_after_percent: float
    to_before_percent: float
    to_after_percent: float
    estimated: bool  # some of `bytes` came from a reservation/limit, not a measurement
    reason: str


@dataclass(frozen=True)
class NodeReport:
    hostname: str
    used_percent: float | None  # None: no fresh data
    overloaded: bool  # above high for at least sustained_seconds
    overloaded_for_seconds: float
    note: str


@dataclass(frozen=True)
class RebalancePlan:
    moves: tuple[PlannedMove, ...]
    nodes: tuple[NodeReport, ...]
    findings: tuple[Finding, ...]
