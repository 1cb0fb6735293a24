"""The memory sources against real programs: a real ``prometheus-node-exporter`` reading a crafted meminfo
(``--path.procfs``) and a textfile of cAdvisor-style task series, and a real ``prometheus`` scraping it
every second. No Docker daemon is involved (Engine stats are covered by the lab test); the exporter and
Prometheus are started here, on free loopback ports, and terminated at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orcastra.adapters.memory import collect_memory
from orcastra.adapters.memory.engine_stats import used_memory
from orcastra.adapters.memory.node_exporter import read_node_exporters
from orcastra.adapters.memory.prometheus import read_prometheus
from orcastra.config.model import Config
from orcastra.domain.snapshot import Node, Service, Snapshot, Task
from orcastra.domain.usage import MemoryProblem
from orcastra.features.rebalance.settings import PrometheusSource

from .util import free_port

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMETHEUS = "/usr/bin/prometheus"
START_TIMEOUT_SECONDS = 15.0
GIB = 1 << 30
MIB = 1 << 20

TOTAL_BYTES = 8 * GIB
AVAILABLE_BYTES = 2 * GIB
MEMINFO = f"""MemTotal:       {TOTAL_BYTES // 1024} kB
MemFree:        {AVAILABLE_BYTES // 2048} kB
MemAvailable:   {AVAILABLE_BYTES // 1024} kB
Buffers:               0 kB
Cached:          1048576 kB
SwapTotal:             0 kB
SwapFree:              0 kB
"""
# cAdvisor-style series through node_exporter's textfile collector: two containers of shop_web, one of
# shop_db, one that is no Swarm task (no service label) and must be ignored.
TASK_SERIES = """# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container_label_com_docker_swarm_service_name="shop_web",name="w1"} 104857600
container_memory_working_set_bytes{container_label_com_docker_swarm_service_name="shop_web",name="w2"} 52428800
container_memory_working_set_bytes{container_label_com_docker_swarm_service_name="shop_db",name="d1"} 314572800
container_memory_working_set_bytes{name="not-a-task"} 999
"""


@dataclass
class Program:
    """A real program started by a fixture; ``stop`` terminates and reaps it and closes its log."""

    process: subprocess.Popen[bytes]
    log: Any
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def start(argv: list[str], log_path: Path, url: str) -> Program:
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed (apt-get install prometheus prometheus-node-exporter)")
    log = log_path.open("wb")
    return Program(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log, url)


def wait_until(what: str, fn: Any, program: Program, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if program.process.poll() is not None:
            raise AssertionError(f"{what}: the program exited with {program.process.returncode}")
        try:
            if fn():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-sources")


@pytest.fixture(scope="module")
def exporter(workdir: Path) -> Iterator[Program]:
    """node_exporter on 127.0.0.1:<free port>, reading the crafted meminfo and the task textfile."""
    (workdir / "proc").mkdir()
    (workdir / "proc" / "meminfo").write_text(MEMINFO)
    (workdir / "textfile").mkdir()
    (workdir / "textfile" / "tasks.prom").write_text(TASK_SERIES)
    address = f"127.0.0.1:{free_port()}"
    program = start(
        [
            NODE_EXPORTER,
            f"--web.listen-address={address}",
            f"--path.procfs={workdir / 'proc'}",
            "--collector.disable-defaults",
            "--collector.meminfo",
            "--collector.textfile",
            f"--collector.textfile.directory={workdir / 'textfile'}",
        ],
        workdir / "node-exporter.log",
        f"http://{address}/metrics",
    )
    try:
        wait_until("node_exporter to answer", lambda: httpx.get(program.url, timeout=1).status_code == 200, program)
        yield program
    finally:
        program.stop()


@pytest.fixture(scope="module")
def prometheus(workdir: Path, exporter: Program) -> Iterator[Program]:
    """Prometheus on 127.0.0.1:<free port>, scraping the exporter every second, storage in a temp dir."""
    target = exporter.url.removeprefix("http://").removesuffix("/metrics")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\n"
    )
    address = f"127.0.0.1:{free_port()}"
    program = start(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        workdir / "prometheus.log",
        f"http://{address}",
    )

    def scraped() -> bool:
        answer = httpx.get(
            f"{program.url}/api/v1/query", params={"query": f'node_memory_MemTotal_bytes{{instance="{target}"}}'}
        )
        return answer.status_code == 200 and bool(answer.json()["data"]["result"])

    try:
        wait_until("Prometheus to have scraped the exporter", scraped, program)
        yield program
    finally:
        program.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def instance_of(exporter: Program) -> str:
    return exporter.url.removeprefix("http://").removesuffix("/metrics")


def closed_url(path: str = "/metrics") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


# --- node_exporter ----------------------------------------------------------------------------------------


def test_node_exporter_gives_the_crafted_meminfo_for_its_node(exporter: Program, http: httpx.Client) -> None:
    reading = read_node_exporters({"node1": exporter.url}, http, now=1000.0)
    assert reading.problems == ()
    (node,) = reading.nodes
    assert (node.hostname, node.total_bytes, node.used_bytes) == ("node1", TOTAL_BYTES, TOTAL_BYTES - AVAILABLE_BYTES)
    assert (node.source, node.sampled_at) == ("node-exporter", 1000.0)
    assert node.used_percent == pytest.approx(75.0)


def test_node_exporter_unreachable_or_not_an_exporter_is_a_problem(
    exporter: Program, prometheus: Program, http: httpx.Client
) -> None:
    dead, not_metrics = closed_url(), f"{prometheus.url}/-/ready"
    reading = read_node_exporters(
        {"node1": exporter.url, "node2": dead, "node3": not_metrics}, http, now=1.0, timeout=2.0
    )
    assert [n.hostname for n in reading.nodes] == ["node1"]
    assert len(reading.problems) == 2
    by_node = {p.message.split(":")[0]: p for p in reading.problems}
    assert by_node["node node2"].subject == "node-exporter"
    assert dead in by_node["node node2"].message
    assert "unreachable" in by_node["node node2"].message
    assert not_metrics in by_node["node node3"].message


# --- Prometheus -------------------------------------------------------------------------------------------


def test_prometheus_maps_instances_to_nodes_with_real_sample_times(
    exporter: Program, prometheus: Program, http: httpx.Client
) -> None:
    source = PrometheusSource(
        url=prometheus.url,
        instances={instance_of(exporter): "node1", "10.9.9.9:9100": "node2"},
        task_query="container_memory_working_set_bytes",
    )
    before = time.time()
    reading = read_prometheus(source, http)
    (node,) = reading.nodes
    assert (node.hostname, node.total_bytes, node.used_bytes, node.source) == (
        "node1",
        TOTAL_BYTES,
        TOTAL_BYTES - AVAILABLE_BYTES,
        "prometheus",
    )
    # A real scrape time (scrape_interval 1 s), not the query's evaluation time.
    assert before - 5 < node.sampled_at <= time.time()
    # An instance Prometheus does not know: a problem naming it and its node, no number.
    (problem,) = reading.problems
    assert problem.subject == "prometheus"
    assert "'10.9.9.9:9100'" in problem.message
    assert "node2" in problem.message
    tasks = {(t.service, t.hostname): t.used_bytes for t in reading.tasks}
    assert tasks == {("shop_db", "node1"): 300 * MIB, ("shop_web", "node1"): 150 * MIB}


@pytest.mark.parametrize(
    ("url_of", "task_query", "expected"),
    [
        (lambda p: closed_url(""), None, "cannot reach Prometheus"),
        (lambda p: p.url, "sum(", "HTTP 400"),
        (lambda p: p.url + "/nothing-here", None, "HTTP 404"),
    ],
    ids=["unreachable", "bad-task-query", "not-prometheus"],
)
def test_prometheus_failures_are_problems_not_exceptions(
    prometheus: Program, exporter: Program, http: httpx.Client, *, url_of: Any, task_query: str | None, expected: str
) -> None:
    source = PrometheusSource(url=url_of(prometheus), instances={instance_of(exporter): "node1"}, task_query=task_query)
    reading = read_prometheus(source, http)
    assert reading.tasks == ()
    assert any(expected in p.message for p in reading.problems), reading.problems
    assert all(p.subject == "prometheus" for p in reading.problems)


# --- collect_memory ---------------------------------------------------------------------------------------


def node(n: int, state: str = "ready") -> Node:
    return Node(id=f"id{n}", version=1, hostname=f"node{n}", role="worker", availability="active", state=state)


def task(tid: str, service_id: str, node_id: str, state: str = "running") -> Task:
    return Task(id=tid, service_id=service_id, node_id=node_id, slot=1, desired_state="running", state=state)


SNAPSHOT = Snapshot(
    nodes=(node(1), node(2), node(3), node(4, state="down")),
    services=(
        Service(id="s-web", version=1, name="shop_web", memory_reservation_bytes=200 * MIB),
        Service(id="s-api", version=1, name="shop_api", memory_limit_bytes=64 * MIB, memory_reservation_bytes=0),
        Service(id="s-free", version=1, name="shop_free"),
        Service(id="s-mon", version=1, name="mon", mode="global", memory_reservation_bytes=10 * MIB),
    ),
    tasks=(
        task("t1", "s-web", "id1"),  # measured by Prometheus' task_query
        task("t2", "s-web", "id2"),  # not measured: 2 x reservation on node2
        task("t3", "s-web", "id2"),
        task("t4", "s-web", "id3", state="preparing"),  # not running: no estimate
        task("t5", "s-api", "id3"),  # limit only
        task("t6", "s-free", "id3"),  # neither: absent
        task("t7", "s-mon", "id1"),  # global: never estimated
        task("t8", "s-web", "id4"),  # on a Down node: not running for us
    ),
    taken_at=500.0,
)


def collect_config(prometheus: Program, exporter: Program, dead: str) -> Config:
    return Config.model_validate(
        {
            "rebalance": {
                "sources": {
                    "prometheus": {
                        "url": prometheus.url,
                        "instances": {instance_of(exporter): "node1"},
                        "task_query": "container_memory_working_set_bytes",
                    },
                    # node1 also has an exporter URL: Prometheus comes first; node3's exporter is dead.
                    "node_exporter": {"node1": exporter.url, "node2": exporter.url, "node3": dead},
                    "engine_stats": False,
                    "timeout_seconds": 2,
                }
            }
        }
    )


def test_collect_memory_merges_sources_and_falls_back_to_reservations(
    prometheus: Program, exporter: Program, http: httpx.Client
) -> None:
    dead = closed_url()
    now = time.time()
    view = collect_memory(collect_config(prometheus, exporter, dead), SNAPSHOT, now, http=http)

    assert {h: n.source for h, n in view.nodes.items()} == {"node1": "prometheus", "node2": "node-exporter"}
    assert view.nodes["node2"].used_bytes == TOTAL_BYTES - AVAILABLE_BYTES
    tasks = {(t.service, t.hostname): (t.used_bytes, t.source) for t in view.tasks}
    assert tasks == {
        ("shop_db", "node1"): (300 * MIB, "prometheus"),
        ("shop_web", "node1"): (150 * MIB, "prometheus"),
        ("shop_web", "node2"): (400 * MIB, "reservation"),
        ("shop_api", "node3"): (64 * MIB, "limit"),
    }
    assert view.taken_at == now
    subjects = {p.subject for p in view.problems}
    # node3: its exporter is unreachable (source problem naming the URL) and so nobody reports it.
    assert "node3" in subjects
    assert any(p.subject == "node-exporter" and dead in p.message for p in view.problems)
    assert "node4" not in view.nodes
    assert "node4" not in subjects


def test_collect_memory_drops_stale_samples_and_reports_them(
    prometheus: Program, exporter: Program, http: httpx.Client
) -> None:
    config = collect_config(prometheus, exporter, closed_url())
    # Ten minutes after Prometheus' samples (stale_after_seconds defaults to 120): node1's Prometheus
    # figure is stale, its node_exporter scrape (stamped with this pass) fills in.
    view = collect_memory(config, SNAPSHOT, time.time() + 600, http=http)
    assert view.nodes["node1"].source == "node-exporter"
    assert any(p.subject == "node1" and "stale" in p.message for p in view.problems)
    # The stale task_query figure is not used either: node1's shop_web task falls back to its reservation.
    usage = view.task_usage("shop_web", "node1")
    assert any(p.subject == "shop_web" and "stale" in p.message for p in view.problems)
    assert usage is not None
    assert (usage.source, usage.used_bytes) == ("reservation", 200 * MIB)


def test_collect_memory_never_raises_when_every_source_fails(http: httpx.Client) -> None:
    config = Config.model_validate(
        {
            "nodes": {"node1": {"endpoint": "unix:///nonexistent/docker.sock"}},
            "rebalance": {
                "sources": {
                    "prometheus": {"url": closed_url(""), "instances": {"x:9100": "node1"}},
                    "node_exporter": {"node2": closed_url()},
                    "timeout_seconds": 1,
                }
            },
        }
    )
    view = collect_memory(config, SNAPSHOT, time.time(), http=http)
    assert dict(view.nodes) == {}
    assert {"prometheus", "node-exporter", "engine-stats", "node1", "node2", "node3"} <= {
        p.subject for p in view.problems
    }
    assert all(isinstance(p, MemoryProblem) for p in view.problems)
    # Only estimates remain, each saying so.
    assert {t.source for t in view.tasks} == {"reservation", "limit"}


# --- pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        ({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300}}}, 700),
        ({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}}, 900),
        ({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 2000}}}, 1000),
        ({"memory_stats": {"usage": 1000}}, 1000),
        ({"memory_stats": {}}, None),
        ({}, None),
    ],
    ids=["cgroup-v1", "cgroup-v2", "inactive-above-usage", "no-detail", "stopped", "empty"],
)
def test_engine_stats_memory_is_usage_minus_inactive_file(stats: dict[str, Any], expected: int | None) -> None:
    assert used_memory(stats) == expected
