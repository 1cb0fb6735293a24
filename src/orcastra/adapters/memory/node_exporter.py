"""Node memory by scraping each node's node_exporter ``/metrics`` directly (``MemorySources.node_exporter``).

No Prometheus needed: one GET per node, the text exposition parsed with prometheus_client's own parser,
used = MemTotal - MemAvailable. The exposition carries no timestamps, so a sample's time is the time of
this pass (``now``), which is when the exporter read /proc/meminfo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orcastra.adapters.memory.reading import SourceReading
from orcastra.domain.usage import MemoryProblem, NodeMemory
from orcastra.errors import cut

SOURCE = "node-exporter"
MEM_TOTAL = "node_memory_MemTotal_bytes"
MEM_AVAILABLE = "node_memory_MemAvailable_bytes"
MAX_PARALLEL_SCRAPES = 16


def parse_meminfo_metrics(text: str) -> dict[str, float]:
    """MemTotal and MemAvailable from an exposition (those present); ValueError when it is not one."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (MEM_TOTAL, MEM_AVAILABLE):
            continue
        for sample in family.samples:
            if sample.name == family.name and not sample.labels:
                found[family.name] = float(sample.value)
    return found


def scrape_node(
    hostname: str, url: str, client: httpx.Client, *, now: float, timeout: float
) -> NodeMemory | MemoryProblem:
    """One node's memory from its exporter, or a problem naming the node and the URL."""

    def problem(message: str) -> MemoryProblem:
        return MemoryProblem(SOURCE, f"node {hostname}: {url}: {message}")

    try:
        response = client.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return problem(f"unreachable: {cut(str(e) or type(e).__name__)}")
    if response.status_code != 200:
        return problem(f"HTTP {response.status_code}: {cut(response.text)}")
    try:
        values = parse_meminfo_metrics(response.text)
    except ValueError as e:
        return problem(f"not a metrics exposition: {cut(str(e))}")
    total, available = values.get(MEM_TOTAL), values.get(MEM_AVAILABLE)
    if total is None or available is None:
        missing = " and ".join(n for n, v in ((MEM_TOTAL, total), (MEM_AVAILABLE, available)) if v is None)
        return problem(f"no {missing} (is the meminfo collector enabled?)")
    if not (math.isfinite(total) and math.isfinite(available) and total > 0 and available >= 0):
        return problem(f"MemTotal {total} and MemAvailable {available} are not sizes")
    return NodeMemory(
        hostname=hostname,
        total_bytes=int(total),
        used_bytes=max(0, int(total) - int(available)),
        sampled_at=now,
        source="node-exporter",
    )


def read_node_exporters(
    urls: Mapping[str, str], client: httpx.Client, now: float, timeout: float = 5.0
) -> SourceReading:
    """Scrape every node's exporter (in parallel: one dead node costs one timeout, not one per node)."""
    if not urls:
        return SourceReading()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SCRAPES, len(urls))) as pool:
        results = list(
            pool.map(lambda item: scrape_node(item[0], item[1], client, now=now, timeout=timeout), sorted(urls.items()))
        )
    return SourceReading(
        nodes=tuple(r for r in results if isinstance(r, NodeMemory)),
        problems=tuple(r for r in results if isinstance(r, MemoryProblem)),
    )
