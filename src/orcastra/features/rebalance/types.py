"""What the rebalancing planner returns: the moves, a report per node, and the findings."""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.plan import Finding


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
