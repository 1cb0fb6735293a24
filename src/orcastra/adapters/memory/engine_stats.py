"""Per-task memory from Docker Engine container stats, read on each node's own Engine endpoint.

A manager cannot report the memory of tasks on other nodes: only the daemon that runs a container has its
stats. So each node with ``nodes.<host>.endpoint`` is asked for its Swarm task containers (one
``GET /containers/json`` filtered on the ``com.docker.swarm.service.name`` label) and then
``GET /containers/{id}/stats?stream=false&one-shot=true`` per container (one-shot: no second sample for
CPU, so ~ms rather than ~1 s each; API >= 1.41). Memory is computed as ``docker stats`` does: usage minus
inactive page cache (cgroup v1 ``total_inactive_file``, v2 ``inactive_file``), since the kernel drops that
cache before it would OOM anything. Containers are summed per (service, node).

Calls go through ``EngineAdapter._call`` (this is a subclass) so Engine failures map onto the same
orcastra.errors types as everywhere else; the reader turns them into MemoryProblems.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from orcastra.adapters.engine.adapter import EngineAdapter, EngineSettings
from orcastra.adapters.memory.reading import SourceReading
from orcastra.domain.usage import MemoryProblem, TaskMemory
from orcastra.errors import EngineError, EngineNotFoundError, EngineUnreachableError, cut

SOURCE = "engine-stats"
SERVICE_LABEL = "com.docker.swarm.service.name"
NODE_ID_LABEL = "com.docker.swarm.node.id"
MAX_PARALLEL_NODES = 16
STATS_WORKERS_PER_NODE = 4


@dataclass(frozen=True)
class ContainerMemory:
    """One task container's memory as its node's Engine reports it."""

    container_id: str
    service: str
    node_id: str
    used_bytes: int


def used_memory(stats: Mapping[str, Any]) -> int | None:
    """usage - inactive_file, as the docker CLI's calculateMemUsageUnixNoCache; None when there is no usage
    (a container that stopped between the list and the stats call reports empty memory_stats)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int) or isinstance(usage, bool) or usage < 0:
        return None
    detail = memory.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):  # cgroup v1, then v2
        inactive = detail.get(key)
        if isinstance(inactive, int) and 0 <= inactive < usage:
            return usage - inactive
    return usage


class StatsEngine(EngineAdapter):
    """The two reads this source needs, on one node's Engine, with the adapter's error mapping."""

    def probe(self) -> None:
        """For a unix:// endpoint, check that something listens before the docker SDK connects.

        docker-py's UnixHTTPConnection does not close a socket whose connect() failed (no such file,
        refused): under pytest's warnings-as-errors that leak is a failing ResourceWarning, and in a daemon
        it is one leaked descriptor per pass over a dead node. Our own probe socket is always closed.
        """
        host = self.settings.host
        if not host.startswith("unix://"):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(self.settings.timeout_seconds)
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError as e:
                raise EngineUnreachableError(
                    f"cannot reach the Docker Engine at {host}: {cut(e.strerror or str(e))}", endpoint=host
                ) from e

    def task_containers(self) -> list[dict[str, Any]]:
        raw: list[dict[str, Any]] = self._call(
            "list task containers", lambda c: c.containers(filters={"label": [SERVICE_LABEL]})
        )
        return raw

    def container_stats(self, container_id: str) -> dict[str, Any]:
        raw: dict[str, Any] = self._call(
            f"stats of container {container_id[:12]}",
            lambda c: c.stats(container_id, stream=False, one_shot=True),
        )
        return raw

    def container_memory(self) -> list[ContainerMemory]:
        """Every running task container with its memory; a container gone meanwhile (404) is skipped.

        Stats are one call per container, so a busy node's containers are read by a few workers at once,
        each on its own connection (the adapter serialises the calls made through one instance).
        """
        self.probe()
        containers = self.task_containers()
        if not containers:
            return []
        workers = min(STATS_WORKERS_PER_NODE, len(containers))
        chunks = [containers[i::workers] for i in range(workers)]

        def read(index: int) -> list[ContainerMemory]:
            engine = self if index == 0 else StatsEngine(self.settings)
            try:
                return [m for c in chunks[index] if (m := engine.one_container(c)) is not None]
            finally:
                if engine is not self:
                    engine.close()

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [m for part in pool.map(read, range(workers)) for m in part]

    def one_container(self, container: Mapping[str, Any]) -> ContainerMemory | None:
        labels = container.get("Labels") or {}
        container_id = str(container.get("Id") or "")
        try:
            stats = self.container_stats(container_id)
        except EngineNotFoundError:
            return None  # the task ended between the two calls: it uses nothing any more
        used = used_memory(stats)
        if used is None:
            return None
        return ContainerMemory(
            container_id=container_id,
            service=str(labels.get(SERVICE_LABEL) or ""),
            node_id=str(labels.get(NODE_ID_LABEL) or ""),
            used_bytes=used,
        )


def read_node(
    hostname: str, settings: EngineSettings, now: float, expected_node_id: str | None = None
) -> SourceReading:
    """One node's task memory summed per service, or a problem naming the node and its endpoint."""
    engine = StatsEngine(settings)
    try:
        containers = engine.container_memory()
    except EngineError as e:
        return SourceReading(problems=(MemoryProblem(SOURCE, f"node {hostname} ({settings.host}): {e}"),))
    finally:
        engine.close()
    if expected_node_id:
        # An endpoint pointing at the wrong daemon would book its tasks' memory on this node: refuse.
        foreign = {c.node_id for c in containers if c.node_id and c.node_id != expected_node_id}
        if foreign:
            return SourceReading(
                problems=(
                    MemoryProblem(
                        SOURCE,
                        f"node {hostname}: endpoint {settings.host} runs tasks of node(s) {', '.join(sorted(foreign))}"
                        f", not of {hostname} ({expected_node_id}): check nodes.{hostname}.endpoint",
                    ),
                )
            )
    sums: dict[str, int] = {}
    for c in containers:
        sums[c.service] = sums.get(c.service, 0) + c.used_bytes
    tasks = tuple(
        TaskMemory(service=service, hostname=hostname, used_bytes=used, sampled_at=now, source="engine-stats")
        for service, used in sorted(sums.items())
        if service
    )
    return SourceReading(tasks=tasks)


def read_engine_stats(
    endpoints: Mapping[str, str],
    now: float,
    *,
    base: EngineSettings | None = None,
    node_ids: Mapping[str, str] | None = None,
) -> SourceReading:
    """Task memory from every node's Engine (hostname -> endpoint), nodes in parallel.

    ``base`` gives the timeout and TLS files (each endpoint replaces its host; TLS only for tcp://, as
    for the other per-node engines); ``node_ids`` (hostname -> Swarm node ID) lets each node's answer be
    checked to come from that node.
    """
    if not endpoints:
        return SourceReading()
    settings = base or EngineSettings()
    ids = node_ids or {}

    def one(item: tuple[str, str]) -> SourceReading:
        hostname, endpoint = item
        node_settings = replace(settings, host=endpoint, tls=settings.tls and endpoint.startswith("tcp://"))
        return read_node(hostname, node_settings, now, ids.get(hostname))

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_NODES, len(endpoints))) as pool:
        readings = list(pool.map(one, sorted(endpoints.items())))
    tasks = tuple(t for r in readings for t in r.tasks)
    problems = tuple(p for r in readings for p in r.problems)
    return SourceReading(tasks=tasks, problems=problems)
