"""Engine JSON -> snapshot parsing, on payloads shaped like the Engine API reference examples."""

from __future__ import annotations

from orcastra.adapters.engine.parse import parse_node, parse_service, parse_task
from orcastra.domain.snapshot import Snapshot

NODE = {
    "ID": "n1id",
    "Version": {"Index": 42},
    "Spec": {"Labels": {"ssd": "true"}, "Role": "manager", "Availability": "active"},
    "Description": {"Hostname": "node1", "Engine": {"EngineVersion": "20.10.24"}, "Resources": {"MemoryBytes": 8}},
    "Status": {"State": "ready", "Addr": "192.168.213.11"},
    "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "192.168.213.11:2377"},
}
DOWN_NODE = {
    "ID": "n2id",
    "Version": {"Index": 5},
    "Spec": {"Role": "worker", "Availability": "active"},
    "Description": {"Hostname": "node2"},
    "Status": {"State": "down"},
}
SERVICE = {
    "ID": "s1",
    "Version": {"Index": 9},
    "Spec": {
        "Name": "app_db",
        "Labels": {"com.docker.stack.namespace": "app"},
        "Mode": {"Replicated": {"Replicas": 2}},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "reg/img:1"},
            "Placement": {"Constraints": ["node.labels.x==true"]},
            "Resources": {"Reservations": {"MemoryBytes": 1024}},
            "ForceUpdate": 3,
        },
    },
}


def task(tid: str, node_id: str, desired: str = "running", state: str = "running") -> dict[str, object]:
    return {
        "ID": tid,
        "ServiceID": "s1",
        "NodeID": node_id,
        "Slot": 1,
        "DesiredState": desired,
        "Status": {
            "State": state,
            "Timestamp": "2026-11-24T00:00:00.123456789Z",
            "ContainerStatus": {"ContainerID": "c"},
        },
    }


def test_parse_node_and_service() -> None:
    n = parse_node(NODE)
    assert (n.hostname, n.version, n.role, n.state, n.leader) == ("node1", 42, "manager", "ready", True)
    assert (n.addr, n.manager_addr) == ("192.168.213.11", "192.168.213.11:2377")
    assert parse_node(DOWN_NODE).manager_addr == ""
    assert dict(n.labels) == {"ssd": "true"}
    s = parse_service(SERVICE)
    assert (s.name, s.version, s.mode, s.replicas, s.stack) == ("app_db", 9, "replicated", 2, "app")
    assert s.constraints == ("node.labels.x==true",)
    assert s.memory_reservation_bytes == 1024
    g = parse_service({"ID": "g", "Version": {"Index": 1}, "Spec": {"Name": "g", "Mode": {"Global": {}}}})
    assert (g.mode, g.replicas) == ("global", None)


def test_running_tasks_ignores_tasks_on_down_nodes_and_not_running() -> None:
    # A task on a node whose daemon died keeps saying "running": it must not count.
    snap = Snapshot(
        nodes=(parse_node(NODE), parse_node(DOWN_NODE)),
        services=(parse_service(SERVICE),),
        tasks=(
            parse_task(task("t1", "n1id")),
            parse_task(task("t2", "n2id")),
            parse_task(task("t3", "n1id", desired="shutdown")),
            parse_task(task("t4", "n1id", state="preparing")),
        ),
    )
    assert [t.id for t in snap.running_tasks("s1")] == ["t1"]


def test_parse_time_handles_nanoseconds_and_garbage() -> None:
    from orcastra.adapters.engine.parse import parse_time

    assert parse_time("1970-01-01T00:00:10.5Z") == 10.5
    assert parse_time("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert parse_time("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_time("nonsense") == 0.0
    assert parse_time(None) == 0.0


# --- list bodies decoded from bytes (msgspec) -------------------------------------------------------------


def test_decode_lists_take_nulls_missing_and_unknown_fields() -> None:
    import json

    from orcastra.adapters.engine.parse import decode_nodes, decode_services, decode_task_states, decode_tasks

    nodes = decode_nodes(json.dumps([NODE, {"ID": "bare", "Spec": None, "Status": None, "NewField": [1]}]).encode())
    assert (nodes[0].hostname, nodes[0].engine_version, nodes[0].memory_bytes) == ("node1", "20.10.24", 8)
    assert (nodes[1].id, nodes[1].state, nodes[1].hostname, dict(nodes[1].labels)) == ("bare", "unknown", "", {})
    services = decode_services(
        json.dumps([SERVICE, {"ID": "s2", "Spec": {"Name": "x", "Labels": None, "TaskTemplate": None}}]).encode()
    )
    assert services[0] == parse_service(SERVICE)
    assert (services[1].name, services[1].mode, services[1].replicas, services[1].constraints) == (
        "x",
        "replicated",
        1,
        (),
    )
    raw = [task("t1", "n1id"), {"ID": "t2", "Status": None, "Slot": None}, {**task("t3", ""), "Spec": {"big": 1}}]
    tasks = decode_tasks(json.dumps(raw).encode())
    assert tasks[0] == parse_task(task("t1", "n1id"))
    assert abs(tasks[0].updated_at - 1795478400.123457) < 1e-6  # 2026-11-24T00:00:00.123456789Z, to the microsecond
    assert (tasks[1].state, tasks[1].slot, tasks[1].updated_at) == ("", None, 0.0)
    assert decode_task_states(json.dumps(raw[:1]).encode()) == frozenset({("t1", "n1id", "running", "running")})


def test_decode_errors_name_the_call_and_the_place() -> None:
    import pytest

    from orcastra.adapters.engine.parse import decode_services, decode_tasks
    from orcastra.errors import EngineError

    with pytest.raises(EngineError, match=r"list services: unexpected answer.*\$\[0\]\.Spec\.Name"):
        decode_services(b'[{"ID": "s", "Spec": {"Name": 7}}]')
    with pytest.raises(EngineError, match=r"list tasks: the Engine's answer is not valid JSON"):
        decode_tasks(b'[{"ID": ')
    with pytest.raises(EngineError, match=r"[Ee]xpected `array`"):
        decode_tasks(b'{"message": "oops"}')


def test_a_services_docker_mods_is_read_from_its_env_the_last_one_winning() -> None:
    spec = {"Image": "lscr.io/linuxserver/swag", "Env": ["PUID=1000", "DOCKER_MODS=a/b:1", "DOCKER_MODS=c/d:2|e/f"]}
    raw = {"ID": "s2", "Version": {"Index": 1}, "Spec": {"Name": "swag", "TaskTemplate": {"ContainerSpec": spec}}}
    assert parse_service(raw).mods == "c/d:2|e/f"
    assert parse_service(SERVICE).mods == ""
    long = dict(raw, Spec={"Name": "x", "TaskTemplate": {"ContainerSpec": {"Env": ["DOCKER_MODS=" + "a" * 9000]}}})
    assert len(parse_service(long).mods) == 4097  # cut one past the mod manager's limit, which reports it
