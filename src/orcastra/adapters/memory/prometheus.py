"""Node and task memory from a Prometheus server, by instant queries over its HTTP API (``GET /api/v1/query``).

Node memory comes from node_exporter's ``node_memory_MemTotal_bytes`` and ``node_memory_MemAvailable_bytes``,
one series per ``instance`` label, mapped to Swarm hostnames by ``PrometheusSource.instances``. Both are
read in ONE query with a range selector over the lookback window (``{__name__=~"..."}[300s]``): an instant
query for a plain selector stamps every value with the evaluation time, even a value last scraped minutes
ago, while the range selector returns the raw samples with their real scrape timestamps, which is what a
staleness bound must be checked against.

Task memory comes from the user's ``task_query`` (cAdvisor-style: one series per container, the Swarm service
name in ``task_service_label``, the node in ``task_node_label``), summed per (service, node).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from orcastra.adapters.memory.reading import SourceReading
from orcastra.domain.usage import MemoryProblem, NodeMemory, TaskMemory
from orcastra.errors import cut
from orcastra.features.rebalance.settings import PrometheusSource

SOURCE = "prometheus"
MEM_TOTAL = "node_memory_MemTotal_bytes"
MEM_AVAILABLE = "node_memory_MemAvailable_bytes"
# Prometheus' own default lookback delta: a series with no sample for this long is gone for PromQL too.
NODE_LOOKBACK_SECONDS = 300


class QueryFailed(Exception):
    """One query could not be answered (unreachable, HTTP error, error status, unreadable body)."""


@dataclass(frozen=True)
class Sample:
    """The newest sample of one series."""

    labels: Mapping[str, str]
    value: float
    timestamp: float  # epoch seconds


def node_query(lookback_seconds: int = NODE_LOOKBACK_SECONDS) -> str:
    return f'{{__name__=~"{MEM_TOTAL}|{MEM_AVAILABLE}"}}[{lookback_seconds}s]'


def query(client: httpx.Client, base_url: str, promql: str, timeout: float) -> list[Sample]:
    """One instant query; the newest sample of each series (vector or matrix result). QueryFailed otherwise."""
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        response = client.get(url, params={"query": promql}, timeout=timeout)
    except httpx.HTTPError as e:
        raise QueryFailed(f"cannot reach Prometheus at {url}: {cut(str(e) or type(e).__name__)}") from e
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        # Prometheus answers 400/422/503 with {"status": "error", "error": "..."} when the query is bad.
        detail = body.get("error") if isinstance(body, dict) else None
        raise QueryFailed(
            f"Prometheus at {url} answered HTTP {response.status_code} to {promql!r}: "
            + cut(str(detail) if detail else response.text)
        )
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        raise QueryFailed(f"Prometheus at {url} sent an unreadable answer to {promql!r}: {cut(response.text)}")
    return parse_result(body["data"], url)


def parse_result(data: Mapping[str, Any], url: str) -> list[Sample]:
    """The newest sample per series of a ``vector`` (``value``: [ts, "v"]) or ``matrix`` (``values``) answer."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind not in ("vector", "matrix") or not isinstance(result, list):
        raise QueryFailed(f"Prometheus at {url} returned a {kind} result; the query must return series")
    samples: list[Sample] = []
    for series in result:
        try:
            labels = {str(k): str(v) for k, v in series["metric"].items()}
            pair = series["value"] if kind == "vector" else max(series["values"], key=lambda p: float(p[0]))
            samples.append(Sample(labels=labels, value=float(pair[1]), timestamp=float(pair[0])))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise QueryFailed(f"Prometheus at {url} returned a malformed series: {cut(repr(series))}") from e
    return samples


def read_nodes(
    source: PrometheusSource, client: httpx.Client, lookback_seconds: int = NODE_LOOKBACK_SECONDS
) -> SourceReading:
    """Each configured instance's MemTotal/MemAvailable as its node's NodeMemory, or a problem naming both."""
    try:
        samples = query(client, source.url, node_query(lookback_seconds), source.timeout_seconds)
    except QueryFailed as e:
        hosts = ", ".join(sorted(set(source.instances.values())))
        return SourceReading(problems=(MemoryProblem(SOURCE, f"{e} (no node memory for {hosts})"),))
    newest: dict[tuple[str, str], Sample] = {}
    for s in samples:
        key = (s.labels.get("instance", ""), s.labels.get("__name__", ""))
        # The same instance scraped by two jobs gives two series: the newest sample wins.
        if key not in newest or s.timestamp > newest[key].timestamp:
            newest[key] = s
    nodes: list[NodeMemory] = []
    problems: list[MemoryProblem] = []
    for instance, hostname in source.instances.items():
        total, available = newest.get((instance, MEM_TOTAL)), newest.get((instance, MEM_AVAILABLE))
        if total is None or available is None:
            missing = " and ".join(n for n, s in ((MEM_TOTAL, total), (MEM_AVAILABLE, available)) if s is None)
            problems.append(
                MemoryProblem(
                    SOURCE,
                    f"Prometheus at {source.url} has no {missing} for instance {instance!r} (node {hostname}) "
                    f"in the last {lookback_seconds} s",
                )
            )
            continue
        if not (_is_size(total.value) and _is_size(available.value) and total.value > 0):
            problems.append(
                MemoryProblem(
                    SOURCE,
                    f"Prometheus at {source.url}: instance {instance!r} (node {hostname}) reports MemTotal "
                    f"{total.value} and MemAvailable {available.value}",
                )
            )
            continue
        nodes.append(
            NodeMemory(
                hostname=hostname,
                total_bytes=int(total.value),
                used_bytes=max(0, int(total.value) - int(available.value)),
                sampled_at=min(total.timestamp, available.timestamp),
                source="prometheus",
            )
        )
    return SourceReading(nodes=tuple(nodes), problems=tuple(problems))


def read_tasks(source: PrometheusSource, client: httpx.Client) -> SourceReading:
    """The ``task_query`` series summed per (service, node); series without a service label are not tasks."""
    if not source.task_query:
        return SourceReading()
    try:
        samples = query(client, source.url, source.task_query, source.timeout_seconds)
    except QueryFailed as e:
        return SourceReading(problems=(MemoryProblem(SOURCE, f"task_query: {e}"),))
    sums: dict[tuple[str, str], tuple[float, float]] = {}
    problems: list[MemoryProblem] = []
    unplaced: set[str] = set()
    for s in samples:
        service = s.labels.get(source.task_service_label, "")
        if not service:
            continue
        where = s.labels.get(source.task_node_label, "")
        if not where:
            unplaced.add(service)
            continue
        if not _is_size(s.value):
            problems.append(MemoryProblem(SOURCE, f"task_query: service {service} on {where} reports {s.value}"))
            continue
        # The node label is mapped like node_exporter instances; a value that is not an instance is taken
        # to be the hostname itself (e.g. a relabelled ``node`` label).
        hostname = source.instances.get(where, where)
        used, oldest = sums.get((service, hostname), (0.0, s.timestamp))
        sums[(service, hostname)] = (used + s.value, min(oldest, s.timestamp))
    if unplaced:
        problems.append(
            MemoryProblem(
                SOURCE,
                f"task_query: series of {', '.join(sorted(unplaced))} carry no {source.task_node_label!r} label",
            )
        )
    tasks = tuple(
        TaskMemory(service=service, hostname=hostname, used_bytes=int(used), sampled_at=ts, source="prometheus")
        for (service, hostname), (used, ts) in sorted(sums.items())
    )
    return SourceReading(tasks=tasks, problems=tuple(problems))


def read_prometheus(
    source: PrometheusSource, client: httpx.Client, lookback_seconds: int = NODE_LOOKBACK_SECONDS
) -> SourceReading:
    """Node memory (always) and task memory (when ``task_query`` is set) from one Prometheus server."""
    nodes = read_nodes(source, client, lookback_seconds)
    tasks = read_tasks(source, client)
    return SourceReading(nodes=nodes.nodes, tasks=tasks.tasks, problems=nodes.problems + tasks.problems)


def _is_size(value: float) -> bool:
    return math.isfinite(value) and value >= 0
