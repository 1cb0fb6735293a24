"""node_exporter discovered as a memory source: the pure discovery over snapshots built in code (which nodes,
which address, which port, what is a problem), the setting, and ``collect_memory`` scraping the discovered
URLs (configured ones win) through a fake HTTP transport."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest

from orcastra.adapters.memory import collect_memory
from orcastra.config import Config
from orcastra.domain.labels import AGENT_ROLE, NODE_EXPORTER_PORT_LABEL, NODE_EXPORTER_ROLE, ROLE_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot, Task
from orcastra.features.rebalance import RebalanceHistory, RebalanceInput, RebalanceSettings, plan_rebalance
from orcastra.features.rebalance.discovery import discover_node_exporters

NOW = 1_800_000_000.0
EXPORTER = {ROLE_LABEL: NODE_EXPORTER_ROLE}
METRICS = "node_memory_MemTotal_bytes 1000\nnode_memory_MemAvailable_bytes 250\n"


def node(name: str, addr: str, *, state: str = "ready", role: str = "worker", manager_addr: str = "") -> Node:
    return Node(
        id=f"id-{name}",
        version=1,
        hostname=name,
        role=role,
        availability="active",
        state=state,
        addr=addr,
        manager_addr=manager_addr,
    )


def exporter(name: str = "orcastra_node-exporter", labels: Mapping[str, str] = EXPORTER) -> Service:
    return Service(id=f"sid-{name}", version=1, name=name, labels=dict(labels), mode="global")


def task(service: Service, on: Node, state: str = "running") -> Task:
    return Task(
        id=f"t-{service.name}-{on.hostname}",
        service_id=service.id,
        node_id=on.id,
        slot=None,
        desired_state="running",
        state=state,
    )


def swarm(nodes: list[Node], services: list[Service], tasks: list[Task] | None = None) -> Snapshot:
    """Every service runs a task on every node unless ``tasks`` says otherwise."""
    if tasks is None:
        tasks = [task(s, n) for s in services for n in nodes]
    return Snapshot(nodes=tuple(nodes), services=tuple(services), tasks=tuple(tasks), taken_at=NOW)


N1 = node("node1", "10.0.0.1")
N2 = node("node2", "10.0.0.2")


@pytest.mark.parametrize(
    ("snapshot", "urls", "problems"),
    [
        (
            swarm([N1, N2], [exporter()]),
            {"node1": "http://10.0.0.1:9100/metrics", "node2": "http://10.0.0.2:9100/metrics"},
            [],
        ),
        (
            swarm([N1], [exporter(labels=EXPORTER | {NODE_EXPORTER_PORT_LABEL: " 9110 "})]),
            {"node1": "http://10.0.0.1:9110/metrics"},
            [],
        ),
        (
            swarm([N1, node("node2", "10.0.0.2", state="down")], [exporter()]),
            {"node1": "http://10.0.0.1:9100/metrics"},
            [],
        ),
        (
            swarm([N1, N2], [s := exporter()], [task(s, N1), task(s, N2, state="preparing")]),
            {"node1": "http://10.0.0.1:9100/metrics"},
            [],
        ),
        (
            swarm([N1], [exporter(labels={}), exporter("mon_agent", {ROLE_LABEL: AGENT_ROLE})]),
            {},
            [],
        ),
        (
            swarm([N1], [exporter(labels=EXPORTER | {NODE_EXPORTER_PORT_LABEL: "http"})]),
            {},
            ["orcastra_node-exporter: label orcastra.node-exporter.port='http' is not a port number (1-65535)"],
        ),
        (
            swarm(
                [N1],
                [
                    exporter("a_bad", EXPORTER | {NODE_EXPORTER_PORT_LABEL: "70000"}),
                    exporter("b_good", EXPORTER | {NODE_EXPORTER_PORT_LABEL: "9111"}),
                ],
            ),
            {"node1": "http://10.0.0.1:9111/metrics"},
            ["a_bad: label orcastra.node-exporter.port='70000' is not a port number"],
        ),
        (
            swarm([N1], [exporter(labels=EXPORTER | {NODE_EXPORTER_PORT_LABEL: "9" * 5000})]),
            {},
            ["orcastra_node-exporter: label orcastra.node-exporter.port='" + "9" * 40 + "...' is not"],
        ),
        (
            swarm([node("node1", "0.0.0.0", role="manager", manager_addr="10.0.0.1:2377")], [exporter()]),
            {"node1": "http://10.0.0.1:9100/metrics"},
            [],
        ),
        (
            swarm([node("node1", "fd00::1", role="manager", manager_addr="[fd00::1]:2377")], [exporter()]),
            {"node1": "http://[fd00::1]:9100/metrics"},
            [],
        ),
        (
            swarm([node("node1", "127.0.0.1"), node("node2", "not-an-ip"), node("node3", "")], [exporter()]),
            {},
            [
                "node1: runs orcastra_node-exporter (node_exporter) but the Swarm gives no usable address",
                "node2: runs orcastra_node-exporter",
                "node3: runs orcastra_node-exporter",
            ],
        ),
    ],
    ids=[
        "every-node-default-port",
        "port-label",
        "node-down-skipped",
        "task-not-running-skipped",
        "without-the-role-label-ignored",
        "bad-port-label-is-a-problem",
        "bad-service-does-not-hide-a-good-one",
        "long-label-cut",
        "manager-address-from-manager-status",
        "ipv6-in-brackets",
        "no-usable-address-is-a-problem",
    ],
)
def test_discovery(snapshot: Snapshot, urls: dict[str, str], problems: list[str]) -> None:
    found = discover_node_exporters(snapshot)
    assert dict(found.urls) == urls
    said = [f"{p.subject}: {p.message}" for p in found.problems]
    assert len(said) == len(problems), said
    for text, expected in zip(said, problems, strict=True):
        assert text.startswith(expected), (text, expected)


def test_the_setting_defaults_to_on_and_can_be_turned_off() -> None:
    assert Config.model_validate({}).rebalance.sources.discover_node_exporter is True
    off = Config.model_validate({"rebalance": {"sources": {"discover_node_exporter": False}}})
    assert off.rebalance.sources.discover_node_exporter is False


class Exporters:
    """A fake HTTP transport: every scraped URL is recorded and answers METRICS."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def client(self) -> httpx.Client:
        def answer(request: httpx.Request) -> httpx.Response:
            self.asked.append(str(request.url))
            return httpx.Response(200, text=METRICS)

        return httpx.Client(transport=httpx.MockTransport(answer))


def _config(sources: dict[str, object]) -> Config:
    return Config.model_validate({"rebalance": {"enabled": True, "sources": {"engine_stats": False, **sources}}})


def test_collect_scrapes_discovered_urls_and_a_configured_one_wins() -> None:
    fake = Exporters()
    snapshot = swarm([N1, N2], [exporter()])
    config = _config({"node_exporter": {"node2": "http://exporter.example:9100/metrics"}})
    view = collect_memory(config, snapshot, NOW, http=fake.client())
    assert sorted(fake.asked) == ["http://10.0.0.1:9100/metrics", "http://exporter.example:9100/metrics"]
    assert {h: (m.used_bytes, m.source) for h, m in view.nodes.items()} == {
        "node1": (750, "node-exporter"),
        "node2": (750, "node-exporter"),
    }
    assert view.problems == ()


def test_collect_without_discovery_scrapes_nothing_and_says_so() -> None:
    fake = Exporters()
    view = collect_memory(
        _config({"discover_node_exporter": False}), swarm([N1], [exporter()]), NOW, http=fake.client()
    )
    assert fake.asked == []
    assert [p.message for p in view.problems] == [
        "no memory source reports node node1: no node memory source is configured"
    ]


def test_a_bad_label_reaches_the_plan_as_a_warning_and_the_node_is_left_alone() -> None:
    fake = Exporters()
    snapshot = swarm([N1], [exporter(labels=EXPORTER | {NODE_EXPORTER_PORT_LABEL: "-1"})])
    view = collect_memory(_config({}), snapshot, NOW, http=fake.client())
    assert fake.asked == []
    assert "node1" not in view.nodes
    plan = plan_rebalance(RebalanceInput(snapshot, view, (), RebalanceSettings(), RebalanceHistory(), NOW))
    warnings = [f"{f.subject}: {f.message}" for f in plan.findings if f.level == "warning"]
    assert any(w.startswith("orcastra_node-exporter: label orcastra.node-exporter.port='-1'") for w in warnings)
    assert any(
        w.startswith("node1: no memory source reports node node1: no node memory source is configured and none was")
        for w in warnings
    ), warnings
