"""Memory sources on the real lab: node2 limited to 512 MiB, a task filling 300 MiB of tmpfs on it.

What is checked is what the real programs report: node2's own node_exporter (its procfs view follows its
cgroup) shows the pressure, node1/node3 look like the host, node2's Engine stats give the task its 300
MiB, ``collect_memory`` returns all of it, and node2's use drops again once the service is gone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from orcastra.adapters.engine.adapter import EngineAdapter, EngineSettings
from orcastra.adapters.memory import collect_memory
from orcastra.adapters.memory.engine_stats import read_engine_stats
from orcastra.adapters.memory.node_exporter import read_node_exporters
from orcastra.config.model import Config
from orcastra.domain.usage import NodeMemory
from orcastra_lab import Lab, LabEnv

from .util import wait_for

pytestmark = pytest.mark.lab

MIB = 1 << 20
NODE2_LIMIT_BYTES = 512 * MIB
FILL_MIB = 300
FILL_COMMAND = f'dd if=/dev/zero of=/fill/x bs=1M count={FILL_MIB}; trap "exit 0" TERM; sleep infinity & wait'
PRESSURE_TIMEOUT_SECONDS = 60.0


def host_mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def scrape(env: LabEnv) -> dict[str, NodeMemory]:
    with httpx.Client() as client:
        reading = read_node_exporters(env.node_exporters, client, now=time.time())
    assert reading.problems == (), reading.problems
    return {n.hostname: n for n in reading.nodes}


@pytest.fixture
def node2_limited(lab: Lab, lab_env: LabEnv) -> Iterator[None]:
    """node2 at 512 MiB for the test, unlimited again afterwards (the lab is shared)."""
    lab.set_node_memory("node2", NODE2_LIMIT_BYTES)
    try:
        yield
    finally:
        lab.set_node_memory("node2", None)


def create_fill_service(api: docker.APIClient, image: str) -> str:
    """One task on node2 that writes FILL_MIB MiB into a tmpfs (charged to its memory cgroup) and holds it."""
    spec = docker.types.TaskTemplate(
        container_spec=docker.types.ContainerSpec(
            image=image,
            command=["sh", "-c", FILL_COMMAND],
            mounts=[docker.types.Mount(target="/fill", source=None, type="tmpfs")],
        ),
        placement=docker.types.Placement(constraints=["node.hostname==node2"]),
    )
    service = api.create_service(spec, name=f"memtest-{uuid.uuid4().hex[:8]}")
    return str(service["ID"])


def test_node_pressure_is_seen_by_node_exporter_engine_stats_and_collect_memory(
    lab_env: LabEnv, docker_api: docker.APIClient, node2_limited: None
) -> None:
    assert set(lab_env.node_exporters) == {"node1", "node2", "node3"}
    assert f"ORCASTRA_LAB_NODE_NODE2_EXPORTER={lab_env.node_exporters['node2']}" in lab_env.exports()
    before = scrape(lab_env)
    assert before["node2"].total_bytes == NODE2_LIMIT_BYTES
    assert before["node2"].used_percent < 40, before["node2"]

    service_id = create_fill_service(docker_api, lab_env.image)
    name = docker_api.inspect_service(service_id)["Spec"]["Name"]
    try:
        pressed = wait_for(
            "node2's node_exporter to show >= 55% used",
            lambda: (m := scrape(lab_env)) and m["node2"].used_percent >= 55 and m,
            timeout=PRESSURE_TIMEOUT_SECONDS,
        )
        node2 = pressed["node2"]
        print(f"node2 under the {FILL_MIB} MiB fill: {node2.used_percent:.1f}% of {node2.total_bytes // MIB} MiB")
        assert node2.total_bytes == NODE2_LIMIT_BYTES
        for other in ("node1", "node3"):  # unlimited: the host's memory, their own (small) use
            assert pressed[other].total_bytes == host_mem_total()
            assert pressed[other].used_bytes < pressed[other].total_bytes // 2

        stats = read_engine_stats({"node2": lab_env.node_hosts["node2"]}, time.time())
        assert stats.problems == (), stats.problems
        measured = {t.service: t.used_bytes for t in stats.tasks}
        print(f"engine stats of {name} on node2: {measured[name] / MIB:.1f} MiB for {FILL_MIB} MiB written")
        assert measured[name] >= 290 * MIB

        config = Config.model_validate(
            {
                "nodes": {host: {"endpoint": endpoint} for host, endpoint in lab_env.node_hosts.items()},
                "rebalance": {"sources": {"node_exporter": lab_env.node_exporters, "engine_stats": True}},
            }
        )
        with EngineAdapter(EngineSettings(host=lab_env.docker_host)) as engine:
            snapshot = engine.snapshot()
        view = collect_memory(config, snapshot, time.time())
        assert {h: n.source for h, n in view.nodes.items()} == dict.fromkeys(
            ("node1", "node2", "node3"), "node-exporter"
        )
        assert view.nodes["node2"].used_percent >= 55
        task = view.task_usage(name, "node2")
        assert task is not None
        assert task.source == "engine-stats"
        assert task.used_bytes >= 290 * MIB
        assert not [p for p in view.problems if p.subject in ("node1", "node2", "node3", "engine-stats")], view.problems
    finally:
        docker_api.remove_service(service_id)

    relieved = wait_for(
        "node2's use to drop after the service is removed",
        lambda: (m := scrape(lab_env)) and m["node2"].used_percent < 20 and m,
        timeout=PRESSURE_TIMEOUT_SECONDS,
    )
    assert relieved["node2"].used_bytes < node2.used_bytes - 250 * MIB
