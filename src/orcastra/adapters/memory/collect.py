"""One pass over every configured memory source, merged into the ``MemoryView`` the rebalancer plans from.

Precedence: node memory from Prometheus first, then node_exporter scrapes for nodes Prometheus did not
give (a node's configured URL, else the one discovered from the snapshot: a task of the service labelled
``orcastra.role=node-exporter`` on it, see ``features.rebalance.discovery``; no Engine call); task memory
from Engine stats first, then Prometheus' ``task_query``. A running task of a replicated service that no
source measured is estimated from its service's memory reservation (else its limit), and
says so in its ``source``; a task with neither is left out, for the planner to report.

Nothing here raises for a source that fails: every failure (unreachable, HTTP error, bad data, a sample
older than ``rebalance.stale_after_seconds``, a Ready node nobody reports) becomes a MemoryProblem, and the
node or task it concerns gets no number rather than a guessed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import httpx

from orcastra.adapters.engine.adapter import EngineSettings
from orcastra.adapters.engine.connect import engine_settings
from orcastra.adapters.memory import engine_stats, node_exporter, prometheus
from orcastra.adapters.memory.reading import SourceReading
from orcastra.config import Config
from orcastra.domain.labels import NODE_EXPORTER_ROLE, ROLE_LABEL
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryProblem, MemoryView, NodeMemory, TaskMemory
from orcastra.features.rebalance.discovery import discover_node_exporters

REPLICATED = "replicated"
_ROLE = f"{ROLE_LABEL}={NODE_EXPORTER_ROLE}"


def collect_memory(
    config: Config,
    snapshot: Snapshot,
    now: float,
    *,
    http: httpx.Client | None = None,
    engine: EngineSettings | None = None,
) -> MemoryView:
    """Read every configured source once and merge them (see the module docstring).

    ``http``: the client for Prometheus and node_exporter (else one is made and closed here). ``engine``:
    the settings (timeout, TLS files) each node endpoint's client starts from (else the config's
    ``docker`` section's, as for the other per-node engines).
    """
    urls, problems = node_exporter_urls(config, snapshot)
    prom, scraped = _read_http_sources(config, urls, now, http)
    stats = _read_engine_stats(config, snapshot, now, engine, problems)
    problems += prom.problems + scraped.problems + stats.problems
    stale_before = now - config.rebalance.stale_after_seconds
    # Prometheus first: node_exporter scrapes only fill its gaps.
    nodes = _pick_nodes((*prom.nodes, *scraped.nodes), snapshot, stale_before, now, problems)
    ready = {n.hostname for n in snapshot.nodes if n.ready}
    for hostname in sorted(ready - set(nodes)):
        problems.append(
            MemoryProblem(hostname, f"no memory source reports node {hostname}: {_configured(config, len(urls))}")
        )
    # Engine stats first: measured on the node itself.
    tasks = _pick_tasks((*stats.tasks, *prom.tasks), stale_before, now, problems)
    for t in _estimates(snapshot, set(tasks), now):
        tasks[(t.service, t.hostname)] = t
    return MemoryView(
        nodes=MappingProxyType(nodes),
        tasks=tuple(sorted(tasks.values(), key=lambda t: (t.service, t.hostname))),
        problems=tuple(problems),
        taken_at=now,
    )


def node_exporter_urls(config: Config, snapshot: Snapshot) -> tuple[dict[str, str], list[MemoryProblem]]:
    """The node_exporter URL of each node: configured, else discovered (when ``discover_node_exporter``);
    the discovery's problems, but those of nodes with a configured URL."""
    sources = config.rebalance.sources
    configured = {h: str(u) for h, u in sources.node_exporter.items()}
    if not sources.discover_node_exporter:
        return configured, []
    found = discover_node_exporters(snapshot)
    problems = [p for p in found.problems if p.subject not in configured]
    return {**found.urls, **configured}, problems


def _read_http_sources(
    config: Config, urls: Mapping[str, str], now: float, http: httpx.Client | None
) -> tuple[SourceReading, SourceReading]:
    """Prometheus' reading (empty when none is configured) and the node_exporter scrapes' reading."""
    sources = config.rebalance.sources
    client = http if http is not None else httpx.Client(timeout=sources.timeout_seconds)
    try:
        prom = SourceReading()
        if sources.prometheus is not None:
            prom = prometheus.read_prometheus(sources.prometheus, client)
        scraped = node_exporter.read_node_exporters(urls, client, now, sources.timeout_seconds)
    finally:
        if http is None:
            client.close()
    return prom, scraped


def _pick_nodes(
    readings: Iterable[NodeMemory], snapshot: Snapshot, stale_before: float, now: float, problems: list[MemoryProblem]
) -> dict[str, NodeMemory]:
    """The first fresh reading of each Ready node (earlier sources win); nodes not in the Swarm and stale
    samples become problems."""
    ready = {n.hostname for n in snapshot.nodes if n.ready}
    nodes: dict[str, NodeMemory] = {}
    for n in readings:
        if n.hostname in nodes:
            continue
        if n.hostname not in ready:
            if snapshot.node_by_hostname(n.hostname) is None:
                problems.append(MemoryProblem(n.source, f"reports node {n.hostname}, which is not in the Swarm"))
            continue
        if n.sampled_at < stale_before:
            problems.append(
                MemoryProblem(n.hostname, f"{n.source} sample is {now - n.sampled_at:.0f} s old (stale): ignored")
            )
            continue
        nodes[n.hostname] = n
    return nodes


def _pick_tasks(
    readings: Iterable[TaskMemory], stale_before: float, now: float, problems: list[MemoryProblem]
) -> dict[tuple[str, str], TaskMemory]:
    """The first fresh reading per (service, node) (earlier sources win); stale samples become problems."""
    tasks: dict[tuple[str, str], TaskMemory] = {}
    for t in readings:
        key = (t.service, t.hostname)
        if key in tasks:
            continue
        if t.sampled_at < stale_before:
            problems.append(
                MemoryProblem(
                    t.service, f"{t.source} sample on {t.hostname} is {now - t.sampled_at:.0f} s old (stale): ignored"
                )
            )
            continue
        tasks[key] = t
    return tasks


def _read_engine_stats(
    config: Config, snapshot: Snapshot, now: float, engine: EngineSettings | None, problems: list[MemoryProblem]
) -> SourceReading:
    """Engine stats of every Ready node with a configured endpoint; nodes running tasks without one are
    reported once (their tasks fall back to reservations)."""
    if not config.rebalance.sources.engine_stats:
        return SourceReading()
    ready = {n.hostname: n for n in snapshot.nodes if n.ready}
    endpoints = {h: s.endpoint for h, s in config.nodes.items() if s.endpoint and h in ready}
    busy = {
        node.hostname
        for s in snapshot.services
        for t in snapshot.running_tasks(s.id)
        if (node := snapshot.node(t.node_id))
    }
    without = sorted(busy - set(endpoints))
    if without:
        problems.append(
            MemoryProblem(
                engine_stats.SOURCE,
                f"no nodes.<host>.endpoint for {', '.join(without)}: their tasks' memory is not measured",
            )
        )
    base = engine if engine is not None else _engine_base(config)
    node_ids = {h: ready[h].id for h in endpoints}
    return engine_stats.read_engine_stats(endpoints, now, base=base, node_ids=node_ids)


def _engine_base(config: Config) -> EngineSettings:
    return engine_settings(config, {})


def _estimates(snapshot: Snapshot, measured: set[tuple[str, str]], now: float) -> Iterable[TaskMemory]:
    """Reservation (else limit) x running tasks, per (service, node) that no source measured."""
    for service in snapshot.services:
        if service.mode != REPLICATED:
            continue
        per_task, source = (
            (service.memory_reservation_bytes, "reservation")
            if service.memory_reservation_bytes > 0
            else (service.memory_limit_bytes, "limit")
        )
        if per_task <= 0:
            continue
        counts: dict[str, int] = {}
        for task in snapshot.running_tasks(service.id):
            node = snapshot.node(task.node_id)
            if node is not None:
                counts[node.hostname] = counts.get(node.hostname, 0) + 1
        for hostname, count in sorted(counts.items()):
            if (service.name, hostname) in measured:
                continue
            yield TaskMemory(
                service=service.name,
                hostname=hostname,
                used_bytes=per_task * count,
                sampled_at=snapshot.taken_at or now,
                source="reservation" if source == "reservation" else "limit",
            )


def _configured(config: Config, exporter_urls: int) -> str:
    sources = config.rebalance.sources
    named = []
    if sources.prometheus is not None:
        named.append(f"prometheus ({len(sources.prometheus.instances)} instances mapped)")
    if exporter_urls:
        discovered = exporter_urls - len(sources.node_exporter)
        named.append(f"node_exporter ({exporter_urls} URLs" + (f", {discovered} discovered)" if discovered else ")"))
    if named:
        return "configured: " + ", ".join(named)
    if sources.discover_node_exporter:
        return f"no node memory source is configured and none was discovered (a task of a service labelled {_ROLE})"
    return "no node memory source is configured"
