"""The ``rebalance:`` section: thresholds, anti-flap limits, memory sources and per-service overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from orcastra.domain.fields import (
    DAY_SECONDS,
    CooldownSeconds,
    Hostname,
    IntervalSeconds,
    Loc,
    Section,
    ServiceName,
    fail,
    number,
)
from orcastra.domain.usage import NodeMemory


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise fail(f"expected an http:// or https:// URL, found {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
# One HTTP request to an exporter or Prometheus.
SourceTimeoutSeconds = Annotated[float, Field(ge=0.1, le=300)]
MAX_MOVES = 100


class PrometheusSource(Section):
    """Node (and optionally task) memory from a Prometheus server's HTTP API (instant queries)."""

    url: HttpUrl
    # node_exporter `instance` label -> Swarm node hostname (e.g. "10.0.0.5:9100": node1).
    instances: dict[str, Hostname] = Field(default_factory=dict)
    # Optional cAdvisor-style per-task memory: a query returning one series per container, with the label
    # below holding the Swarm service name (cAdvisor: container_label_com_docker_swarm_service_name).
    task_query: str | None = None
    task_service_label: str = "container_label_com_docker_swarm_service_name"
    task_node_label: str = "instance"
    timeout_seconds: SourceTimeoutSeconds = 5.0


class MemorySources(Section):
    """Where memory numbers come from. Node memory: prometheus and/or node_exporter URLs, configured or
    discovered (a service labelled ``orcastra.role=node-exporter``, see ``discovery``). Task memory: Engine
    container stats through each node's endpoint (``nodes.<host>.endpoint``) and/or prometheus' task_query;
    service reservations/limits are the fallback estimate."""

    prometheus: PrometheusSource | None = None
    node_exporter: dict[Hostname, HttpUrl] = Field(default_factory=dict)
    # Scrape the node_exporter deployed with Orcastra (deploy/node-exporter.yml) on every node that runs one of
    # its tasks and has no URL in node_exporter (a configured URL wins).
    discover_node_exporter: bool = True
    engine_stats: bool = True
    timeout_seconds: SourceTimeoutSeconds = 5.0


class ServiceRebalance(Section):
    """Per-service overrides (also settable by the service labels orcastra.rebalance / .preferred-node); they
    win over the labels. Keys in the config are short names, resolved with the config's ``stack`` before the
    planner reads them."""

    rebalance: bool = True
    preferred_node: Hostname | None = None
    cooldown_seconds: CooldownSeconds | None = None


class RebalanceSettings(Section):
    """Memory-pressure rebalancing: move groups off nodes that stay above `high`, to a chosen node."""

    enabled: bool = False
    high_percent: Annotated[float, Field(gt=0, le=100)] = 85.0
    target_percent: Annotated[float, Field(gt=0, le=100)] = 70.0
    sustained_seconds: Annotated[float, Field(ge=0, le=DAY_SECONDS)] = 600.0
    monitor_interval_seconds: IntervalSeconds = 30.0
    global_cooldown_seconds: CooldownSeconds = 600.0
    service_cooldown_seconds: CooldownSeconds = 1800.0
    max_moves_per_cycle: Annotated[int, Field(ge=1, le=MAX_MOVES)] = 1
    max_moves_per_node: Annotated[int, Field(ge=1, le=MAX_MOVES)] = 1
    # A group's measured memory is counted this much larger when checking that the target stays under
    # target_percent: measurements lag, and a process grows after a restart.
    safety_margin_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    stale_after_seconds: IntervalSeconds = 120.0
    # A move restarts tasks on another node: it cannot converge in less than a few seconds.
    move_timeout_seconds: Annotated[float, Field(ge=10, le=DAY_SECONDS)] = 120.0
    sources: MemorySources = Field(default_factory=MemorySources)
    services: dict[ServiceName, ServiceRebalance] = Field(default_factory=dict)

    def fresh(self, sample: NodeMemory | None, now: float) -> bool:
        """A usable node sample: present, with a total, and not older than ``stale_after_seconds``."""
        return sample is not None and sample.total_bytes > 0 and now - sample.sampled_at <= self.stale_after_seconds

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        fields = cls.model_fields
        target = number(values.get("target_percent", fields["target_percent"].default))
        high = number(values.get("high_percent", fields["high_percent"].default))
        if target is not None and high is not None and not target < high:
            return [
                (
                    (),
                    f"target_percent ({target:g}) must be below high_percent ({high:g}): rebalancing "
                    "moves tasks until memory use drops to the target, which must be under the trigger",
                )
            ]
        return []
