"""Engine JSON -> snapshot parsing, on payloads shaped like the Engine API reference examples."""

from __future__ import annotations

from orcastra.engine.parse import parse_node, parse_service, parse_task
from orcastra.snapshot import Snapshot

NODE = {
    "ID": "n1id",
    "Version": {"Index": 42},
    "Spec": {"Labels": {"ssd": "true"}, "Role": "manager", "Availability": "active"},
    "Description": {"Hostname": "node1", "Engine": {"EngineVersion": "20.10.24"}, "Resources": {"MemoryBytes": 8}},
    "Status": {"State": "ready", "Addr": "192.168.213.11"},
    "ManagerStatus": {"Leader": True, "Reachability": "reachable"},
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
    from orcastra.engine.parse import parse_time

    assert parse_time("1970-01-01T00:00:10.5Z") == 10.5
    assert parse_time("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert parse_time("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_time("nonsense") == 0.0
    assert parse_time(None) == 0.0
