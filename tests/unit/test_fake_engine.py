"""The fake Engine (orcastra_lab/fake_engine.py) answers docker-py's low-level client as a Swarm manager does:
writes at a version (optimistic concurrency), what the orchestrator does after them, events, and the test hooks."""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import docker
import pytest

TIMEOUT = 2.0  # the longest any test waits for an event (they arrive in milliseconds)
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"

JSON = dict[str, Any]


@pytest.fixture(scope="module")
def fe() -> ModuleType:
    return importlib.import_module("orcastra_lab.fake_engine")


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    for t in set(threading.enumerate()) - before:
        t.join(TIMEOUT)
        assert not t.is_alive(), f"thread left running: {t.name}"


@pytest.fixture
def fake(fe: ModuleType) -> Iterator[Any]:
    # node1: leader manager; node2, node3: workers. bench_anchor0000 (+ -dep0, -dep1) on node1; bench_svc00000..4
    # (node.role == worker) round the workers. 3 replicas each.
    with fe.FakeEngine(fe.Cluster(nodes=3, services=8, groups=1)) as engine:
        yield engine


@pytest.fixture
def client(fake: Any) -> Iterator[Any]:
    c = docker.APIClient(base_url=fake.docker_host, version="1.41", timeout=5)
    yield c
    c.close()


class EventReader:
    """A docker-py event stream read by a thread into a queue: ``take`` waits at most TIMEOUT per event."""

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.stream = client.events(decode=True, **kwargs)  # answered once the fake has subscribed it
        self.events: queue.Queue[JSON] = queue.Queue()
        self.thread = threading.Thread(target=self._read, name="test-event-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except Exception:  # the stream closed under the reader: the end
            pass

    def take(self, n: int) -> list[JSON]:
        return [self.events.get(timeout=TIMEOUT) for _ in range(n)]

    def close(self) -> None:
        self.stream.close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def readers(client: Any) -> Iterator[Callable[..., EventReader]]:
    opened: list[EventReader] = []

    def open_reader(**kwargs: Any) -> EventReader:
        opened.append(EventReader(client, **kwargs))
        return opened[-1]

    yield open_reader
    for r in opened:
        r.close()


def ts(ns: int) -> str:
    """A ``since``/``until`` value with every nanosecond (a float would round)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def update_node(client: Any, ref: str, version: Any = None, **changes: Any) -> None:
    node = client.inspect_node(ref)
    spec = {**node["Spec"], **changes}
    client.update_node(node["ID"], node["Version"]["Index"] if version is None else version, spec)


def update_service(client: Any, name: str, change: Callable[[JSON], None], version: Any = None) -> None:
    svc = client.inspect_service(name)
    spec = svc["Spec"]
    change(spec)
    client.update_service(
        svc["ID"],
        svc["Version"]["Index"] if version is None else version,
        task_template=spec["TaskTemplate"],
        name=spec["Name"],
        labels=spec["Labels"],
        mode=spec["Mode"],
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def running(client: Any, service: str) -> list[JSON]:
    tasks = client.tasks(filters={"service": service, "desired-state": "running"})
    return sorted(tasks, key=lambda t: t["Slot"])


def hostname(client: Any, node_id: str) -> str:
    return str(client.inspect_node(node_id)["Description"]["Hostname"])


def api_error(call: Callable[[], object]) -> docker.errors.APIError:
    with pytest.raises(docker.errors.APIError) as info:
        call()
    return info.value


# --- nodes ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One row of a write table: at the object's version plus ``shift`` (or that literal), and what comes back."""

    name: str
    shift: int | str = 0
    ref: str = ""  # the object itself when empty
    status: int = 200
    message: str = ""

    def version(self, current: int) -> int | str:
        return current + self.shift if isinstance(self.shift, int) else self.shift


def names(case: Write) -> str:
    return case.name


@pytest.mark.parametrize(
    "case",
    [
        Write("current version"),
        Write("by ID prefix", ref="<prefix>"),
        Write("stale version", -1, status=500, message=OUT_OF_SEQUENCE),
        Write("version ahead", +1, status=500, message=OUT_OF_SEQUENCE),
        Write("not a version", "x", status=400, message="invalid node version 'x'"),
        Write("unknown node", ref="nope", status=404, message="node nope not found"),
    ],
    ids=names,
)
def test_node_update_at_a_version(fake: Any, client: Any, case: Write) -> None:
    before = fake.node("node2")
    ref = {"": "node2", "<prefix>": before["ID"][:8]}.get(case.ref, case.ref)
    labels = {**before["Spec"]["Labels"], "orcastra.test": "yes"}
    spec = {**before["Spec"], "Labels": labels}
    at = case.version(before["Version"]["Index"])
    if case.status == 200:
        assert client.update_node(ref, at, spec) is True
        after = fake.node("node2")
        assert after["Spec"]["Labels"] == labels
        assert after["Version"]["Index"] > before["Version"]["Index"]
        assert after["Version"]["Index"] > max(s["Version"]["Index"] for s in client.services())  # one index
        assert after["UpdatedAt"] != before["UpdatedAt"]
    else:
        err = api_error(lambda: client.update_node(ref, at, spec))
        assert err.status_code == case.status
        assert case.message in str(err.explanation)
        assert fake.node("node2") == before  # nothing written
    [write] = fake.writes()
    assert (write.method, write.status, write.query["version"]) == ("POST", case.status, str(at))
    assert write.path == f"/nodes/{ref}/update"
    assert write.body["Labels"] == labels


def test_draining_a_node_moves_its_tasks_and_the_last_manager_stays_one(fake: Any, client: Any) -> None:
    on_node3 = {t["ID"] for t in client.tasks(filters={"node": "node3", "desired-state": "running"})}
    assert on_node3
    update_node(client, "node3", Availability="drain")
    assert client.tasks(filters={"node": "node3", "desired-state": "running"}) == []
    for t in fake.tasks(desired_state="shutdown"):
        if t["ID"] in on_node3:
            assert t["Status"]["State"] == "shutdown"
    for svc in ("bench_svc00000", "bench_svc00001"):
        assert {hostname(client, t["NodeID"]) for t in running(client, svc)} == {"node2"}
    err = api_error(lambda: update_node(client, "node1", Role="worker"))
    assert (err.status_code, "attempting to demote the last manager" in str(err.explanation)) == (400, True)


# --- services ---------------------------------------------------------------------------------------------


def force(spec: JSON) -> None:
    spec["TaskTemplate"]["ForceUpdate"] += 1


def pin_to_label(spec: JSON) -> None:
    spec["TaskTemplate"]["Placement"]["Constraints"] = ["node.labels.pin == yes"]


def pin_nowhere(spec: JSON) -> None:
    spec["TaskTemplate"]["Placement"]["Constraints"] = ["node.labels.nowhere == true"]


def relabel(spec: JSON) -> None:
    spec["Labels"]["orcastra.test"] = "1"


@dataclass(frozen=True)
class Change:
    name: str
    change: Callable[[JSON], None]
    kept: str  # the running tasks that stay: "none", "all", or those on that node
    placed_on: set[str]  # where the running tasks are afterwards (empty: pending)
    updatestates: list[str] = field(default_factory=lambda: ["updating", "completed"])


@pytest.mark.parametrize(
    "case",
    [
        Change("force update replaces every task", force, "none", {"node2", "node3"}),
        Change("constraint moves the tasks to the labelled node", pin_to_label, "node3", {"node3"}),
        Change("labels only: the tasks stay", relabel, "all", {"node2", "node3"}, []),
        Change("no node fits: pending", pin_nowhere, "none", set()),
    ],
    ids=lambda c: c.name,
)
def test_service_update_and_what_the_manager_does(fake: Any, client: Any, case: Change) -> None:
    update_node(client, "node3", Labels={"pin": "yes"})
    before = client.inspect_service("bench_svc00001")
    old = running(client, "bench_svc00001")
    kept = {t["ID"] for t in old if case.kept in ("all", hostname(client, t["NodeID"]))}
    fake.clear_writes()
    update_service(client, "bench_svc00001", case.change)

    after = client.inspect_service("bench_svc00001")
    assert after["Version"]["Index"] > before["Version"]["Index"]
    assert after["PreviousSpec"] == before["Spec"]
    assert after.get("UpdateStatus", {}).get("State") == (case.updatestates[-1] if case.updatestates else None)
    new = running(client, "bench_svc00001")
    assert [t["Slot"] for t in new] == [1, 2, 3]
    assert {t["ID"] for t in new} & {t["ID"] for t in old} == kept  # swarmkit: a node still fitting keeps its task
    for t in fake.tasks("bench_svc00001", desired_state="shutdown"):
        if t["ID"] in {o["ID"] for o in old}:
            assert t["Status"]["State"] == "shutdown"
    if case.placed_on:
        assert {t["Status"]["State"] for t in new} == {"running"}
        assert {hostname(client, t["NodeID"]) for t in new} == case.placed_on
    else:
        assert {t["Status"]["State"] for t in new} == {"pending"}
        assert all(t["Status"]["Err"].startswith("no suitable node (") for t in new)
        assert "NodeID" not in new[0]
        update_node(client, "node2", Labels={"nowhere": "true"})  # a node fits now: the scheduler places them
        assert {hostname(client, t["NodeID"]) for t in running(client, "bench_svc00001")} == {"node2"}
    service_events = [e for e in fake.events() if e["Type"] == "service"]
    assert [e["Actor"]["Attributes"].get("updatestate.new") for e in service_events] == [None, *case.updatestates]
    write = fake.writes()[0]
    assert (write.path, write.query["version"]) == (f"/services/{before['ID']}/update", str(before["Version"]["Index"]))


@pytest.mark.parametrize(
    "case",
    [
        Write("stale version", -1, status=500, message=OUT_OF_SEQUENCE),
        Write("version ahead", +1, status=500, message=OUT_OF_SEQUENCE),
        Write("rename", ref="bench_other", status=501, message="renaming services is not supported"),
        Write("unknown service", ref="nope", status=404, message="service nope not found"),
    ],
    ids=names,
)
def test_service_update_refused(client: Any, case: Write) -> None:
    svc = client.inspect_service("bench_svc00002")
    err = api_error(
        lambda: client.update_service(
            "nope" if case.ref == "nope" else svc["ID"],
            case.version(svc["Version"]["Index"]),
            task_template=svc["Spec"]["TaskTemplate"],
            name=case.ref if case.ref == "bench_other" else svc["Spec"]["Name"],
            labels={},
            mode=svc["Spec"]["Mode"],
        )
    )
    assert err.status_code == case.status
    assert case.message in str(err.explanation)
    assert client.inspect_service("bench_svc00002") == svc


@dataclass(frozen=True)
class Create:
    name: str
    mode: JSON
    constraints: list[str]
    nodes: list[str]  # where its tasks run, sorted


@pytest.mark.parametrize(
    "case",
    [
        Create("replicated, spread", {"Replicated": {"Replicas": 2}}, [], ["node2", "node3"]),
        Create("replicated, on the manager", {"Replicated": {"Replicas": 2}}, ["node.role==manager"], ["node1"] * 2),
        Create("global: one per node", {"Global": {}}, ["node.role!=manager"], ["node2", "node3"]),
        Create("no replica (a lease holder)", {"Replicated": {"Replicas": 0}}, [], []),
    ],
    ids=lambda c: c.name,
)
def test_create_then_delete_a_service(fake: Any, client: Any, case: Create) -> None:
    template = {"ContainerSpec": {"Image": "busybox:1.36"}, "Placement": {"Constraints": case.constraints}}
    created = client.create_service(template, name="app_new", labels={"k": "v"}, mode=case.mode)
    svc = client.inspect_service("app_new")
    assert svc["ID"] == created["ID"]
    assert (svc["Spec"]["Labels"], svc["Spec"]["Mode"]) == ({"k": "v"}, case.mode)
    tasks = client.tasks(filters={"service": "app_new"})
    assert sorted(hostname(client, t["NodeID"]) for t in tasks) == case.nodes
    assert {t["Status"]["State"] for t in tasks} <= {"running"}

    err = api_error(lambda: client.create_service(template, name="app_new"))
    assert err.status_code == 409
    assert "name conflicts with an existing object: service app_new already exists" in str(err.explanation)

    assert client.remove_service(created["ID"]) is True
    assert api_error(lambda: client.inspect_service("app_new")).status_code == 404
    assert api_error(lambda: client.tasks(filters={"service": created["ID"]})).status_code == 404
    assert api_error(lambda: client.remove_service("app_new")).status_code == 404
    actions = [e["Action"] for e in fake.events() if e["Type"] == "service"]
    assert actions == ["create", "remove"]


# --- the swarm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        Write("current version"),
        Write("stale version", -1, status=500, message=OUT_OF_SEQUENCE),
        Write("version ahead", +1, status=500, message=OUT_OF_SEQUENCE),
        Write("not named default", ref="other", status=400, message='swarm spec must be named "default"'),
    ],
    ids=names,
)
def test_swarm_labels_at_a_version(fake: Any, client: Any, case: Write) -> None:
    before = client.inspect_swarm()
    assert before["JoinTokens"]["Worker"].startswith("SWMTKN-1-")
    spec = {**before["Spec"], "Labels": {"orcastra.paused": "true"}}
    if case.ref:
        spec["Name"] = case.ref
    at = case.version(before["Version"]["Index"])
    if case.status == 200:
        assert client.update_swarm(at, spec) is True
        after = client.inspect_swarm()
        assert after["Spec"]["Labels"] == {"orcastra.paused": "true"}
        assert after["Spec"]["Raft"] == before["Spec"]["Raft"]
        assert after["Version"]["Index"] > before["Version"]["Index"]
        assert after["JoinTokens"] == before["JoinTokens"]
        assert fake.swarm == after
    else:
        err = api_error(lambda: client.update_swarm(at, spec))
        assert err.status_code == case.status
        assert case.message in str(err.explanation)
        assert client.inspect_swarm() == before


# --- events -------------------------------------------------------------------------------------------------


def test_every_subscriber_gets_node_and_service_updates_as_they_happen(
    client: Any, readers: Callable[..., EventReader]
) -> None:
    both = [readers(filters={"type": ["node", "service"]}) for _ in range(2)]
    nodes_only = readers(filters={"type": "node"})
    update_node(client, "node2", Labels={"zone": "z9"})
    update_service(client, "bench_svc00000", relabel)
    for r in both:
        node, service = r.take(2)
        assert (node["Type"], node["Action"], node["Actor"]["Attributes"]) == ("node", "update", {"name": "node2"})
        assert node["Actor"]["ID"] == client.inspect_node("node2")["ID"]
        assert (service["Type"], service["Action"]) == ("service", "update")
        assert service["Actor"]["Attributes"] == {"name": "bench_svc00000"}  # no updatestate: nothing to roll
        assert (service["scope"], service["time"]) == ("swarm", service["timeNano"] // 10**9)
        assert node["timeNano"] < service["timeNano"]
    update_node(client, "node3", Availability="pause")
    first, second = nodes_only.take(2)  # the service update in between was filtered out
    assert [first["Actor"]["Attributes"]["name"], second["Actor"]["Attributes"]["name"]] == ["node2", "node3"]
    assert second["Actor"]["Attributes"]["availability.new"] == "pause"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"type": ["node"]}, [("node", "update", "node2", None)]),
        (
            {"type": ["service"]},
            [("service", "update", "bench_svc00001", u) for u in (None, "updating", "completed")],
        ),
        ({"type": ["container"], "event": ["start"]}, [("container", "start", "bench_svc00001", None)] * 3),
        ({"type": ["container"], "event": ["die"]}, [("container", "die", "bench_svc00001", None)] * 3),
        ({"node": ["node2"]}, [("node", "update", "node2", None)]),
        (
            {"service": ["bench_svc00001"], "event": ["update"]},  # its containers' names start with it too
            [("service", "update", "bench_svc00001", u) for u in (None, "updating", "completed")],
        ),
    ],
)
def test_events_since_until_and_filters(
    fake: Any, client: Any, filters: JSON, expected: list[tuple[str, str, str, str | None]]
) -> None:
    start = fake.state.now_ns()
    update_node(client, "node2", Labels={"zone": "z9"})
    update_service(client, "bench_svc00001", force)
    end = fake.state.now_ns()
    # since + until in the past: the Engine replays what it kept and ends the stream.
    stream = client.events(decode=True, since=ts(start), until=ts(end), filters=filters)
    try:
        got = list(stream)
    finally:
        stream.close()
    seen = []
    for e in got:
        attrs = e["Actor"]["Attributes"]
        name = attrs.get("com.docker.swarm.service.name") if e["Type"] == "container" else attrs["name"]
        seen.append((e["Type"], e["Action"], name, attrs.get("updatestate.new")))
    assert seen == expected


# --- injected failures and the hooks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    name: str
    method: str
    pattern: str
    status: int
    count: int
    call: Callable[[Any], object]


def label_node2(c: Any) -> None:
    update_node(c, "node2", Labels={"x": "1"})


@pytest.mark.parametrize(
    "case",
    [
        Failure("a node update", "POST", r"^/nodes/[^/]+/update$", 503, 1, label_node2),
        Failure("twice", "POST", r"/update$", 500, 2, label_node2),
        Failure(
            "any method", "*", r"^/services/bench_svc00003$", 500, 1, lambda c: c.inspect_service("bench_svc00003")
        ),
        Failure("a read", "GET", r"^/swarm$", 503, 1, lambda c: c.inspect_swarm()),
    ],
    ids=lambda c: c.name,
)
def test_fail_next_injects_then_lets_through(fake: Any, client: Any, case: Failure) -> None:
    before = fake.node("node2")
    fake.fail_next(case.method, case.pattern, case.status, "injected trouble", count=case.count)
    for _ in range(case.count):
        err = api_error(lambda: case.call(client))
        assert (err.status_code, err.explanation) == (case.status, "injected trouble")
        assert fake.node("node2") == before  # a failed write changes nothing
    case.call(client)  # the rule is used up
    expected = [case.status] * case.count + [200] if case.method == "POST" else []
    assert [w.status for w in fake.writes()] == expected


def test_node_down_then_back_and_a_moved_task(fake: Any, client: Any, readers: Callable[..., EventReader]) -> None:
    events = readers(filters={"type": ["node"]})
    on_node2 = {t["ID"] for t in client.tasks(filters={"node": "node2", "desired-state": "running"})}
    fake.set_node_state("node2", "down")
    [down] = events.take(1)
    assert down["Actor"]["Attributes"] == {"name": "node2", "state.old": "ready", "state.new": "down"}
    assert client.inspect_node("node2")["Status"]["State"] == "down"
    for t in fake.tasks(desired_state="shutdown"):
        if t["ID"] in on_node2:
            assert t["Status"]["State"] == "running"  # the node cannot be told: seen running until it is back
    assert {hostname(client, t["NodeID"]) for t in running(client, "bench_svc00000")} == {"node3"}
    fake.set_node_state("node2", "ready")
    [up] = events.take(1)
    assert up["Actor"]["Attributes"]["state.new"] == "ready"
    assert all(t["Status"]["State"] == "shutdown" for t in fake.tasks(desired_state="shutdown") if t["ID"] in on_node2)

    moved = fake.move_task("bench_anchor0000", "node3")
    assert (hostname(client, moved["NodeID"]), moved["Slot"]) == ("node3", 1)
    assert client.inspect_task(moved["ID"])["Status"]["State"] == "running"
    assert [hostname(client, t["NodeID"]) for t in running(client, "bench_anchor0000")] == ["node3", "node1", "node1"]
    with pytest.raises(KeyError):
        fake.node("node9")
    with pytest.raises(ValueError, match="node state"):
        fake.set_node_state("node2", "sleepy")
