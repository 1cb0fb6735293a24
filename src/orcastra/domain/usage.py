"""Memory usage as the rebalancer sees it: what each node and each service's tasks really use.

Plain frozen data, filled by the memory sources (``orcastra.adapters.memory``: Prometheus, node_exporter, Engine
container stats, service reservations as the fallback) and read by the pure rebalancing planner. A value
that is missing or older than the planner's staleness bound is never guessed: that node or service is
left alone and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

NodeSource = Literal["prometheus", "node-exporter", "lab-cgroup"]
TaskSource = Literal["engine-stats", "prometheus", "reservation", "limit"]


@dataclass(frozen=True)
class NodeMemory:
    """One node's memory: total and used bytes (used = total - MemAvailable), when and where sampled."""

    hostname: str
    total_bytes: int
    used_bytes: int
    sampled_at: float  # epoch seconds
    source: NodeSource

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


@dataclass(frozen=True)
class TaskMemory:
    """What one service's task(s) on one node use. ``source`` says whether it was measured (engine-stats,
    prometheus) or estimated from the service spec (reservation, limit): ``plan`` shows which."""

    service: str  # full Swarm service name
    hostname: str
    used_bytes: int
    sampled_at: float
    source: TaskSource


@dataclass(frozen=True)
class MemoryProblem:
    """Why some data is missing: a source that failed, a node nobody reports, a stale sample."""

    subject: str  # a node hostname, a service name, or a source name
    message: str


@dataclass(frozen=True)
class MemoryView:
    """Everything the sources could read in one pass."""

    nodes: Mapping[str, NodeMemory] = field(default_factory=lambda: MappingProxyType({}))
    tasks: tuple[TaskMemory, ...] = ()
    problems: tuple[MemoryProblem, ...] = ()
    taken_at: float = 0.0

    def task_usage(self, service: str, hostname: str) -> TaskMemory | None:
        for t in self.tasks:
            if t.service == service and t.hostname == hostname:
                return t
        return None
