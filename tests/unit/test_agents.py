"""The node agent's report as the controller reads it (bounded, validated), where the agent's tasks run (the
view from a snapshot built in code), the controller's table of agents (a fake fetcher), and their rendering."""

from __future__ import annotations

import json

import msgspec
import pytest

from orcastra.adapters.agent_client import AgentReportError, fetch_report
from orcastra.adapters.engine.parse import parse_task
from orcastra.cli.render import render_agents, render_status
from orcastra.config import Config
from orcastra.domain.labels import AGENT_ROLE, ROLE_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot, Task
from orcastra.features.agents.facts import SwarmFacts, decode_facts
from orcastra.features.agents.report import MAX_REPORT_BYTES, AgentReport, decode_report, decode_table, encode
from orcastra.features.agents.view import agent_targets
from orcastra.runtime.agents import AgentPoller, AgentTableState
from orcastra.runtime.triggers import Trigger

GOOD = {
    "node_id": "n1",
    "hostname": "node1",
    "version": "0.1.0",
    "started_at": 1.7e9,
    "uptime_seconds": 12.5,
    "engine": {"reachable": True, "last_contact_at": 1.7e9, "api_version": "1.45", "swarm_state": "active"},
    "process": {"rss_bytes": 25_000_000, "cpu_seconds": 0.5},
    "features": [],
    "from_a_newer_agent": {"ignored": True},
}


def test_a_good_report_decodes_and_unknown_fields_are_skipped() -> None:
    r = decode_report(json.dumps(GOOD).encode())
    assert (r.node_id, r.engine.api_version, r.process.rss_bytes) == ("n1", "1.45", 25_000_000)
    assert decode_report(encode(r)) == r


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps(GOOD | {"uptime_seconds": -1}).encode(),
        json.dumps(GOOD | {"uptime_seconds": 1e400}).encode().replace(b"Infinity", b"1e400"),
        json.dumps(GOOD | {"hostname": "x" * 10_000}).encode(),
        json.dumps(GOOD | {"features": ["f"] * 65}).encode(),
        json.dumps(GOOD | {"process": {"rss_bytes": "many"}}).encode(),
        b" " * (MAX_REPORT_BYTES + 1) + b"{}",
    ],
    ids=[
        "empty",
        "not-json",
        "not-object",
        "negative",
        "infinite",
        "huge-hostname",
        "many-features",
        "wrong-type",
        "too-big",
    ],
)
def test_a_bad_report_is_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        decode_report(body)


def test_a_report_is_fetched_only_from_an_ip_address() -> None:
    with pytest.raises(AgentReportError, match="not an IP address"):
        fetch_report("evil.example/../x", 9181, 0.1)


def test_task_addresses_come_from_the_network_attachments_without_ingress() -> None:
    raw = {
        "ID": "t1",
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "ingress", "Ingress": True}}, "Addresses": ["10.0.0.9/24"]},
            {"Network": {"Spec": {"Name": "orcastra_default"}}, "Addresses": ["10.0.1.5/24", "fd00::5/64"]},
            {"Network": None, "Addresses": None},
        ],
    }
    assert parse_task(raw).addresses == ("10.0.1.5", "fd00::5")
    assert parse_task({"ID": "t2"}).addresses == ()


def _node(i: int, state: str = "ready") -> Node:
    return Node(id=f"n{i}", version=1, hostname=f"node{i}", role="worker", availability="active", state=state)


def _task(tid: str, node: str, state: str, updated: float, address: str = "", *, desired: str = "running") -> Task:
    return Task(
        id=tid,
        service_id="agent",
        node_id=node,
        slot=None,
        desired_state=desired,
        state=state,
        updated_at=updated,
        addresses=(address,) if address else (),
    )


AGENT = Service(id="agent", version=1, name="orcastra_agent", labels={ROLE_LABEL: AGENT_ROLE}, mode="global")


def _snapshot(*tasks: Task, services: tuple[Service, ...] = (AGENT,)) -> Snapshot:
    return Snapshot(nodes=(_node(1), _node(2), _node(3, "down")), services=services, tasks=tasks, taken_at=1000.0)


def test_one_target_per_node_from_the_current_task_and_none_without_the_service() -> None:
    snap = _snapshot(
        _task("old", "n1", "failed", 10, desired="shutdown"),
        _task("new", "n1", "running", 20, "10.0.1.5"),
        _task("t2", "n2", "starting", 30, "10.0.1.6"),
    )
    targets = {t.hostname: t for t in agent_targets(snap)}
    assert (targets["node1"].task_state, targets["node1"].address) == ("running", "10.0.1.5")
    # Asked while it starts: its process answers before its first healthy probe.
    assert (targets["node2"].task_state, targets["node2"].address) == ("starting", "10.0.1.6")
    assert (targets["node3"].task_state, targets["node3"].address) == ("", "")
    assert agent_targets(_snapshot(services=(msgspec.structs.replace(AGENT, labels={}),))) == ()


def _report(node_id: str) -> AgentReport:
    return decode_report(json.dumps(GOOD | {"node_id": node_id}).encode())


def test_the_table_keeps_reports_marks_failures_and_refuses_a_report_from_another_node() -> None:
    snap = _snapshot(
        _task("a", "n1", "running", 1, "10.0.1.5"),
        _task("b", "n2", "running", 1, "10.0.1.6"),
        _task("c", "n3", "running", 1, "10.0.1.7"),
    )
    answers: dict[str, AgentReport | Exception] = {
        "10.0.1.5": _report("n1"),
        "10.0.1.6": AgentReportError("no answer from 10.0.1.6:9181: ConnectionRefusedError"),
        "10.0.1.7": _report("n1"),  # an address reused by another node's task
    }
    asked: list[tuple[str, int, float]] = []
    handed: list[tuple[bytes | None, str]] = []

    def fetch(address: str, port: int, timeout: float, facts: bytes | None, token: str) -> AgentReport:
        asked.append((address, port, timeout))
        handed.append((facts, token))
        answer = answers[address]
        if isinstance(answer, Exception):
            raise answer
        return answer

    state = AgentTableState(30.0)
    poller = AgentPoller(Trigger(), state, 9181, 0.5, fetch=fetch, token="s3cret")
    poller.watch(agent_targets(snap), SwarmFacts(generated_at=5.0, image_refs=("reg/app:1",)))
    poller.poll_once(now=100.0)
    assert sorted(asked) == [("10.0.1.5", 9181, 0.5), ("10.0.1.6", 9181, 0.5), ("10.0.1.7", 9181, 0.5)]
    # Every agent is handed the Swarm's facts, with the token.
    assert {(decode_facts(f).image_refs if f else None, t) for f, t in handed} == {(("reg/app:1",), "s3cret")}
    entries = {e.hostname: e for e in state.table().agents}
    assert entries["node1"].up
    assert entries["node1"].report is not None
    assert not entries["node2"].up
    assert "ConnectionRefused" in entries["node2"].error
    assert not entries["node3"].up
    assert "not this one" in entries["node3"].error
    assert state.up_by_node() == {"node1": True, "node2": False, "node3": False}
    # Node1's agent goes away: it is down, its last report and last good time kept.
    answers["10.0.1.5"] = AgentReportError("timed out")
    poller.poll_once(now=130.0)
    node1 = next(e for e in state.table().agents if e.hostname == "node1")
    assert (node1.up, node1.last_ok_at, node1.report is not None) == (False, 100.0, True)
    assert decode_table(encode(state.table())) == state.table()


def test_status_shows_an_agents_section_only_when_the_agent_service_exists() -> None:
    snap = _snapshot(_task("a", "n1", "running", 1, "10.0.1.5"), _task("b", "n2", "failed", 1, desired="shutdown"))
    state = AgentTableState(30.0)
    state.update(agent_targets(snap), {"n1": _report("n1")}, 990.0)
    entries = {e.node_id: e for e in state.table().agents}
    rows = [(t, entries.get(t.node_id)) for t in agent_targets(snap)]
    text = render_status(snap, [], as_json=False, agents=rows)
    assert "AGENT ON NODE" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("node")}
    assert "up 12s, v0.1.0, 23.8 MiB, engine ok" in lines["node1"]
    assert "failed" in lines["node2"]
    assert "no task" in render_agents(rows, 1000.0)
    assert "AGENT ON NODE" not in render_status(snap, [], as_json=False)
    as_json = json.loads(render_status(snap, [], as_json=True, agents=rows))
    assert as_json["agents"][0]["entry"]["report"]["node_id"] == "n1"


def test_report_text_is_made_safe_for_a_terminal() -> None:
    snap = _snapshot(_task("a", "n1", "running", 1, "10.0.1.5"))
    evil = decode_report(json.dumps(GOOD | {"version": "1\x1b[2J\x07"}).encode())
    state = AgentTableState(30.0)
    state.update(agent_targets(snap), {"n1": evil}, 990.0)
    rows = [(t, state.table().agents[0] if t.node_id == "n1" else None) for t in agent_targets(snap)]
    assert "\x1b" not in render_agents(rows, 1000.0)


def test_the_agent_section_of_the_config_is_validated_with_the_others() -> None:
    config = Config.model_validate({"agent": {"listen": "0.0.0.0:9999", "docker_host": "unix:///run/d.sock"}})
    assert config.agent.listen == "0.0.0.0:9999"
    with pytest.raises(ValueError, match="unix:// or tcp://") as err:
        Config.model_validate({"agent": {"docker_host": "ssh://node1", "engine_check_interval_seconds": 0}})
    assert "engine_check_interval_seconds" in str(err.value)
