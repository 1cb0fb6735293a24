"""What the rebalancing planner takes (``RebalanceInput``) and returns: the moves, a report per node, and the
findings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from orcastra.domain.plan import Finding
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.features.colocation.groups import AnchorGroup
from orcastra.features.rebalance.history import RebalanceHistory
from orcastra.features.rebalance.settings import RebalanceSettings, ServiceRebalance


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


@dataclass(frozen=True)
class RebalanceInput:
    """Everything one rebalancing plan is made from. ``overrides`` are ``settings.services`` keyed by full
    service name (the config's keys are short names, resolved with its ``stack``); they win over the services'
    labels. ``now`` is a parameter: the planner has no clock."""

    snapshot: Snapshot
    memory: MemoryView
    groups: Sequence[AnchorGroup]
    settings: RebalanceSettings
    history: RebalanceHistory
    now: float
    overrides: Mapping[str, ServiceRebalance] = field(default_factory=lambda: MappingProxyType({}))
