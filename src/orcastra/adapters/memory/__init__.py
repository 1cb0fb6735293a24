"""Where the rebalancer's memory numbers come from: real programs, read as a user would read them.

- ``prometheus``: instant queries over a Prometheus server's HTTP API (node_exporter metrics per instance,
  optionally a cAdvisor-style per-task query);
- ``node_exporter``: direct scrapes of each node's node_exporter ``/metrics``;
- ``engine_stats``: container stats from each node's own Docker Engine endpoint;
- ``collect``: ``collect_memory`` runs the configured ones, merges them, falls back to service
  reservations/limits, and turns every failure into a MemoryProblem (``orcastra.domain.usage``).
"""

from orcastra.adapters.memory.collect import collect_memory
from orcastra.adapters.memory.reading import SourceReading

__all__ = ["SourceReading", "collect_memory"]
