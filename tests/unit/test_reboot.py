"""Node maintenance, the pure parts: the lock label, the schedule window, which node a scheduled reboot picks,
when a drain is done, the reboot/sentinel command rendering, the settings' validation."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.structs
import pytest
from pydantic import ValidationError

from orcastra.adapters.engine.adapter import EngineAdapter, EngineSettings
from orcastra.domain.actions import Action, SetNodeAvailability, SetSwarmLabels
from orcastra.domain.snapshot import Node, Service, Snapshot, Task
from orcastra.errors import EngineConflictError, EngineNotFoundError, EngineServerError
from orcastra.features.reboot.plan import (
    LOCK_LABEL,
    RebootLock,
    in_window,
    lock_blocks,
    parse_lock,
    plan_scheduled_reboot,
    reboot_refusal,
    tasks_left_on,
)
from orcastra.features.reboot.settings import RebootSchedule, RebootSettings
from orcastra.runtime.executor import Outcome
from orcastra.runtime.reboot import (
    CommandResult,
    RebootLocked,
    RebootRefused,
    RebootStepError,
    check_sentinels,
    reboot_node,
    render_command,
    run_scheduled_reboot,
    scrub,
)

T = TypeVar("T")

# 2026-11-23 is a Monday.
MON_0300 = dt.datetime(2026, 11, 23, 3, 0)
MON_0100 = dt.datetime(2026, 11, 23, 1, 0)
MON_0500 = dt.datetime(2026, 11, 23, 5, 0)
SUN_0300 = dt.datetime(2026, 11, 29, 3, 0)
TUE_0100 = dt.datetime(2026, 11, 24, 1, 0)
MON_2330 = dt.datetime(2026, 11, 23, 23, 30)


def node(host: str, role: str = "worker", state: str = "ready", availability: str = "active") -> Node:
    return Node(id=f"id-{host}", version=1, hostname=host, role=role, availability=availability, state=state)


def swarm(*nodes: Node) -> Snapshot:
    return Snapshot(nodes=nodes, services=(), tasks=())


def settings(**schedule: object) -> RebootSettings:
    return RebootSettings.model_validate(
        {"command": "echo {node}", "sentinel_command": "test {node}", "schedule": {"enabled": True, **schedule}}
    )


# --- the lock ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("node2|host:12:ab|1700000000", RebootLock("node2", "host:12:ab", 1700000000.0)),
        ("node2|h|soon", RebootLock("node2", "h", 0.0)),
        ("node2|h|nan", RebootLock("node2", "h", 0.0)),
        ("garbage", RebootLock("garbage", "", 0.0)),
    ],
    ids=["missing", "empty", "valid", "bad-expiry", "nan-expiry", "unreadable"],
)
def test_parse_lock(text: str | None, expected: RebootLock | None) -> None:
    assert parse_lock(text) == expected


def test_lock_round_trips() -> None:
    lock = RebootLock("node3", "a:1:ff", 1800000000.0)
    assert parse_lock(lock.format()) == lock


@pytest.mark.parametrize(
    ("current", "now", "blocks"),
    [
        (None, 100.0, False),
        (RebootLock("node2", "other", 200.0), 100.0, True),
        (RebootLock("node2", "other", 200.0), 200.0, False),
        (RebootLock("node2", "other", 200.0), 300.0, False),
        (RebootLock("node2", "me", 200.0), 100.0, False),
        (parse_lock("garbage"), 100.0, False),
    ],
    ids=["free", "held-by-other", "expires-now", "expired", "ours", "unreadable-counts-expired"],
)
def test_lock_blocks(current: RebootLock | None, now: float, blocks: bool) -> None:
    assert lock_blocks(current, "me", now) is blocks


# --- the schedule window -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "now", "inside"),
    [
        ({}, MON_0300, True),
        ({}, MON_0100, False),
        ({}, MON_0500, False),
        ({"days": ["sat", "sun"]}, MON_0300, False),
        ({"days": ["sun"]}, SUN_0300, True),
        ({"start": "23:00", "end": "02:00", "days": ["mon"]}, MON_2330, True),
        ({"start": "23:00", "end": "02:00", "days": ["mon"]}, TUE_0100, True),
        ({"start": "23:00", "end": "02:00", "days": ["tue"]}, TUE_0100, False),
        ({"start": "23:00", "end": "02:00", "days": ["mon"]}, MON_0100, False),
    ],
    ids=[
        "inside",
        "before-start",
        "end-is-exclusive",
        "wrong-day",
        "sunday",
        "midnight-window-evening",
        "midnight-window-after-midnight-belongs-to-start-day",
        "midnight-window-start-day-not-listed",
        "midnight-window-before-start-same-day",
    ],
)
def test_in_window(schedule: dict[str, object], now: dt.datetime, inside: bool) -> None:
    assert in_window(RebootSchedule.model_validate(schedule), now) is inside


# --- which node a scheduled reboot picks -----------------------------------------------------------------


M1 = node("node1", role="manager")
W2, W3 = node("node2"), node("node3")


@pytest.mark.parametrize(
    ("snapshot", "required", "now", "expected"),
    [
        (swarm(M1, W2, W3), {"node2", "node3"}, MON_0300, "node2"),
        (swarm(M1, W2, W3), {"node3"}, MON_0300, "node3"),
        (swarm(M1, W2, W3), set(), MON_0300, None),
        (swarm(M1, W2, W3), {"node2"}, MON_0100, None),
        (swarm(M1, W2, W3), {"node1"}, MON_0300, None),
        (swarm(M1, W2, W3), {"node1", "node3"}, MON_0300, "node3"),
        (swarm(M1, W2, node("node3", state="down")), {"node2"}, MON_0300, None),
        (swarm(M1, W2, node("node3", availability="drain")), {"node2"}, MON_0300, None),
        (swarm(M1, W2, node("node3", availability="pause")), {"node2"}, MON_0300, None),
        (swarm(node("node1", role="manager"), node("node2", role="manager")), {"node2"}, MON_0300, None),
        (
            swarm(node("node1", role="manager"), node("node2", role="manager"), node("node3", role="manager")),
            {"node2"},
            MON_0300,
            "node2",
        ),
        (swarm(M1), {"node1"}, MON_0300, None),
        (swarm(W2), {"node2"}, MON_0300, None),
        (swarm(M1, W2, W3), {"node9"}, MON_0300, None),
    ],
    ids=[
        "first-by-hostname",
        "only-required",
        "nothing-required",
        "outside-window",
        "never-the-only-manager",
        "skips-only-manager-takes-next",
        "any-node-down-waits",
        "any-node-drained-waits",
        "any-node-paused-waits",
        "two-managers-no-quorum-left",
        "three-managers-one-may-go",
        "single-node-swarm",
        "only-ready-node",
        "unknown-node-ignored",
    ],
)
def test_plan_scheduled_reboot(snapshot: Snapshot, required: set[str], now: dt.datetime, expected: str | None) -> None:
    assert plan_scheduled_reboot(snapshot, required, now, settings()) == expected


@pytest.mark.parametrize(
    ("snapshot", "host", "refused"),
    [
        (swarm(M1, W2, W3), "node2", None),
        (swarm(M1, W2, W3), "node1", "quorum"),
        (swarm(M1, W2, W3), "node7", "no node"),
        (swarm(M1, W2, node("node3", state="down")), "node2", None),
        (swarm(node("node1", role="manager", state="down"), W2), "node2", "only Ready node"),
    ],
    ids=["worker-ok", "only-manager", "unknown", "one-other-ready-is-enough", "only-ready-node"],
)
def test_reboot_refusal(snapshot: Snapshot, host: str, refused: str | None) -> None:
    why = reboot_refusal(snapshot, host)
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why


# --- when a drain is done -------------------------------------------------------------------------------


def task(tid: str, svc: str, host: str, desired: str = "running", state: str = "running") -> Task:
    return Task(id=tid, service_id=svc, node_id=f"id-{host}", slot=1, desired_state=desired, state=state)


APP = Service(id="app", version=1, name="s_app")
AGENT = Service(id="agent", version=1, name="s_agent", mode="global")
PINNED = Service(id="pin", version=1, name="s_pin", constraints=("node.hostname == node2",))


@pytest.mark.parametrize(
    ("services", "tasks", "waiting"),
    [
        ((APP,), (task("t1", "app", "node2"),), ["s_app (still on the node)"]),
        ((APP,), (task("t1", "app", "node2", desired="shutdown"),), ["s_app (not running elsewhere yet)"]),
        (
            (APP,),
            (task("t1", "app", "node2", desired="shutdown"), task("t2", "app", "node3", state="starting")),
            ["s_app (not running elsewhere yet)"],
        ),
        ((APP,), (task("t1", "app", "node2", desired="shutdown"), task("t2", "app", "node3")), []),
        ((AGENT,), (task("t1", "agent", "node2"),), []),
        ((PINNED,), (task("t1", "pin", "node2", desired="shutdown"),), []),
        ((APP,), (task("t1", "app", "node2", state="failed"),), ["s_app (not running elsewhere yet)"]),
    ],
    ids=[
        "task-still-desired-running",
        "shut-down-not-yet-elsewhere",
        "elsewhere-but-only-starting",
        "running-elsewhere",
        "global-services-stay",
        "pinned-to-the-node-not-waited-for",
        "failed-task-is-not-on-the-node",
    ],
)
def test_tasks_left_on(services: tuple[Service, ...], tasks: tuple[Task, ...], waiting: list[str]) -> None:
    snapshot = Snapshot(nodes=(M1, W2, W3), services=services, tasks=tasks)
    moved = frozenset(s.id for s in services)
    assert tasks_left_on(snapshot, "id-node2", moved) == waiting


# --- commands and settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "host", "command"),
    [
        ("ssh {node} sudo systemctl reboot", "node2", "ssh node2 sudo systemctl reboot"),
        ("ssh -- {node} reboot", "web-1.example.org", "ssh -- web-1.example.org reboot"),
        ("x {node} {node}", "n_1", "x n_1 n_1"),
    ],
    ids=["plain", "fqdn-after-dashes", "every-placeholder"],
)
def test_render_command(template: str, host: str, command: str) -> None:
    assert render_command(template, host) == command


@pytest.mark.parametrize(
    "host",
    ["-oProxyCommand=touch /tmp/x", "a b;rm -rf /", "n$(id)", ".hidden", "", "x" * 254, "node\n2", "nöde"],
    ids=["option-injection", "shell", "substitution", "leading-dot", "empty", "too-long", "newline", "non-ascii"],
)
def test_a_hostname_that_is_no_plain_host_name_never_reaches_a_command(host: str) -> None:
    with pytest.raises(RebootRefused, match="never put on a command line"):
        render_command("ssh -- {node} reboot", host)


def test_a_reboot_commands_words_stay_out_of_what_it_reports() -> None:
    command = "ipmitool -H bmc2 -U admin -P s3cretpassw0rd power cycle"
    output = f"Error: {command}: password s3cretpassw0rd rejected by bmc2 for node2"
    scrubbed = scrub(output, command, "node2")
    assert "s3cretpassw0rd" not in scrubbed
    assert "ipmitool" not in scrubbed
    assert "node2" in scrubbed


def test_the_reboot_result_and_log_hold_no_rendered_command(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = FakeEngine(), FakeClock()
    settings_ = REBOOT.model_copy(update={"command": "reboot-it -P s3cretpassw0rd {node}"})
    caplog.set_level(logging.DEBUG)
    message = reboot_node(
        engine, apply_fn(engine), settings_, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
    )
    assert message.startswith("rebooted node2")
    assert "s3cretpassw0rd" not in message
    assert not [r for r in caplog.records if "s3cretpassw0rd" in r.getMessage()]


def test_a_failed_reboot_command_reports_its_output_scrubbed() -> None:
    engine, clock = FakeEngine(), FakeClock()
    settings_ = REBOOT.model_copy(update={"command": "reboot-it -P s3cretpassw0rd {node}"})
    with pytest.raises(RebootStepError) as e:
        reboot_node(
            engine,
            apply_fn(engine),
            settings_,
            "node2",
            run_command=lambda command, timeout: CommandResult(3, f"{command}: access denied"),
            clock=clock,
            sleep=clock.sleep,
        )
    assert e.value.step == "reboot-command"
    assert "exited with 3" in str(e.value)
    assert "s3cretpassw0rd" not in str(e.value)


def test_sentinels_are_asked_only_of_inventory_nodes() -> None:
    engine = FakeEngine()
    asked: list[str] = []

    def run(command: str, timeout: float) -> CommandResult:
        asked.append(command)
        return CommandResult(0, "")

    s = REBOOT.model_copy(update={"sentinel_command": "sentinel {node}"})
    assert check_sentinels(engine.snapshot(), s, run, {"node2", "node3", "elsewhere"}) == {"node2", "node3"}
    assert asked == ["sentinel node2", "sentinel node3"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"command": "reboot now"}, "{node}"),
        ({"schedule": {"start": "25:00"}}, "HH:MM"),
        ({"schedule": {"start": "03:00", "end": "03:00"}}, "empty"),
        ({"schedule": {"days": ["monday"]}}, "days"),
        ({"schedule": {"days": []}}, "days"),
        ({"lock_ttl_seconds": 60}, "lock_ttl_seconds"),
        ({"schedule": {"enabled": True}, "command": "r {node}"}, "sentinel_command"),
        ({"reboot_command": "r {node}"}, "reboot_command"),
    ],
    ids=[
        "no-placeholder",
        "bad-time",
        "empty-window",
        "bad-day",
        "no-days",
        "ttl-too-short",
        "schedule-needs-sentinel",
        "unknown-key",
    ],
)
def test_settings_rejected(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        RebootSettings.model_validate(data)
    assert fragment in str(e.value)


def test_settings_defaults_and_per_node_command() -> None:
    s = RebootSettings.model_validate({"command": "ssh {node} reboot", "node_commands": {"node3": "ipmi {node}"}})
    assert s.command_for("node2") == "ssh {node} reboot"
    assert s.command_for("node3") == "ipmi {node}"
    assert s.schedule.enabled is False
    assert RebootSettings().command_for("node2") is None


# --- the steps, against a fake Engine (no daemon) -----------------------------------------------------------


class FakeClient:
    """The few docker-py calls the Swarm-label methods make: inspect the Swarm, update it at a version."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def inspect_swarm(self) -> dict[str, object]:
        spec = {"Name": "default", "Labels": dict(self.engine.labels), "Raft": {"SnapshotInterval": 10000}}
        return {"Spec": spec, "Version": {"Index": self.engine.swarm_version}}

    def _url(self, path: str) -> str:
        return path

    def _post_json(self, url: str, data: dict[str, Any], params: dict[str, int]) -> tuple[dict[str, Any], int]:
        return data, params["version"]

    def _result(self, posted: tuple[dict[str, Any], int]) -> None:
        spec, version = posted
        self.engine.writes += 1
        if self.engine.foreign_write_before is not None and self.engine.writes in self.engine.foreign_write_before:
            # Another writer changed the Swarm between our read and our write (e.g. `pause`).
            self.engine.labels["orcastra.paused"] = "true"
            self.engine.swarm_version += 1
        if version != self.engine.swarm_version or self.engine.steal_next_write:
            self.engine.steal_next_write = False
            raise EngineConflictError("update out of sequence")
        assert spec["Raft"] == {"SnapshotInterval": 10000}, "the rest of the SwarmSpec must be sent back as read"
        self.engine.labels = dict(spec["Labels"])
        self.engine.swarm_version += 1


class FakeEngine(EngineAdapter):
    """A 3-node Swarm in memory: node2 runs one task; draining moves it to node3, a reboot bumps UpdatedAt.
    The Swarm-label methods are the adapter's own, over ``FakeClient``."""

    def __init__(self) -> None:
        super().__init__(EngineSettings(host="unix:///nowhere"))
        self.labels: dict[str, str] = {}
        self.swarm_version = 10
        self.steal_next_write = False
        self.writes = 0
        self.foreign_write_before: set[int] | None = None  # write numbers (1-based) preceded by a foreign write
        self.nodes = {h: node(h, role="manager" if h == "node1" else "worker") for h in ("node1", "node2", "node3")}
        self.task_node = "node2"
        self.rebooted = False

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        return fn(FakeClient(self))

    def _get_json(self, what: str, path: str) -> dict[str, Any]:
        assert path == "/swarm", path
        return FakeClient(self).inspect_swarm()

    def snapshot(self) -> Snapshot:
        tasks = (task("t1", "app", self.task_node),)
        return Snapshot(nodes=tuple(self.nodes.values()), services=(APP,), tasks=tasks)

    def inspect_node(self, node_id: str) -> Node:
        return next(n for n in self.nodes.values() if n.id == node_id)

    def set_availability(self, hostname: str, availability: str) -> None:
        n = self.nodes[hostname]
        self.nodes[hostname] = msgspec.structs.replace(n, availability=availability, version=n.version + 1)
        if hostname == "node2" and availability == "drain":
            self.task_node = "node3"

    def reboot(self, command: str, timeout: float) -> CommandResult:
        self.rebooted = True
        n = self.nodes["node2"]
        self.nodes["node2"] = msgspec.structs.replace(n, updated_at=n.updated_at + 1)
        return CommandResult(0, "")


class Writes:
    """The executor the reboot writes through: node availability on the fake nodes, Swarm labels through the
    adapter's own compare-and-set (over ``FakeClient``)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        out = []
        for a in actions:
            if isinstance(a, SetSwarmLabels):
                try:
                    self.engine.set_swarm_labels(a.changes, a.swarm_version)
                except EngineConflictError as e:
                    out.append(Outcome(a, "conflict", str(e)))
                    continue
            else:
                assert isinstance(a, SetNodeAvailability)
                assert self.engine.nodes[a.hostname].version == a.node_version
                self.engine.set_availability(a.hostname, a.availability)
            out.append(Outcome(a, "ok"))
        return out


def apply_fn(engine: FakeEngine) -> Writes:
    return Writes(engine)


REBOOT = RebootSettings(command="reboot-it {node}", poll_interval_seconds=0.01, ready_timeout_seconds=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_reboot_node_runs_every_step_and_releases_the_lock() -> None:
    engine, clock = FakeEngine(), FakeClock()
    message = reboot_node(
        engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
    )
    assert message.startswith("rebooted node2")
    assert engine.rebooted
    assert engine.nodes["node2"].availability == "active"
    assert engine.task_node == "node3"
    assert LOCK_LABEL not in engine.labels


def test_reboot_node_waits_for_a_lock_held_by_another() -> None:
    engine, clock = FakeEngine(), FakeClock()
    engine.labels[LOCK_LABEL] = RebootLock("node3", "other", clock.now + 60).format()
    with pytest.raises(RebootLocked):
        reboot_node(
            engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
        )
    assert not engine.rebooted
    assert engine.nodes["node2"].availability == "active"


def test_reboot_node_takes_over_an_expired_lock_and_retries_a_conflict() -> None:
    engine, clock = FakeEngine(), FakeClock()
    engine.labels[LOCK_LABEL] = RebootLock("node3", "other", clock.now - 1).format()
    engine.steal_next_write = True  # someone wrote the Swarm between our read and our write: re-read
    reboot_node(engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep)
    assert engine.rebooted
    assert LOCK_LABEL not in engine.labels


def test_reboot_node_aborts_when_the_node_never_comes_back() -> None:
    engine, clock = FakeEngine(), FakeClock()
    with pytest.raises(RebootStepError) as e:
        reboot_node(
            engine,
            apply_fn(engine),
            REBOOT,
            "node2",
            run_command=lambda command, timeout: CommandResult(0, ""),
            clock=clock,
            sleep=clock.sleep,
            holder="me",
        )
    assert e.value.step == "wait-ready"
    assert engine.nodes["node2"].availability == "drain"
    lock = parse_lock(engine.labels[LOCK_LABEL])
    assert lock is not None
    assert lock.holder == "me"


@pytest.mark.parametrize(
    ("host", "settings_", "error"),
    [
        ("node9", REBOOT, EngineNotFoundError),
        ("node2", RebootSettings(), RebootRefused),
        ("node1", REBOOT, RebootRefused),
    ],
    ids=["unknown-node", "no-command", "only-manager"],
)
def test_reboot_node_refuses(host: str, settings_: RebootSettings, error: type[Exception]) -> None:
    engine = FakeEngine()
    with pytest.raises(error):
        reboot_node(engine, apply_fn(engine), settings_, host, run_command=engine.reboot)
    assert not engine.rebooted
    assert LOCK_LABEL not in engine.labels


def test_scheduled_reboot_runs_sentinels_only_inside_the_window() -> None:
    engine, clock = FakeEngine(), FakeClock()
    ran: list[str] = []

    def run(command: str, timeout: float) -> CommandResult:
        ran.append(command)
        if command.startswith("reboot-it"):
            return engine.reboot(command, timeout)
        return CommandResult(0 if command == "sentinel node2" else 1, "")

    s = RebootSettings.model_validate(
        {**REBOOT.model_dump(), "sentinel_command": "sentinel {node}", "schedule": {"enabled": True}}
    )
    kwargs: dict[str, Any] = {
        "run_command": run,
        "clock": clock,
        "sleep": clock.sleep,
        "inventory": {"node1", "node2", "node3"},
    }
    assert run_scheduled_reboot(engine, apply_fn(engine), s, now_local=lambda: MON_0100, **kwargs) is None
    assert ran == []
    message = run_scheduled_reboot(engine, apply_fn(engine), s, now_local=lambda: MON_0300, **kwargs)
    assert message is not None
    assert message.startswith("rebooted node2")
    assert ran == ["sentinel node1", "sentinel node2", "sentinel node3", "reboot-it node2"]


# --- compare-and-set of Swarm labels (the adapter's own methods, over FakeClient) -------------------------------


def test_swarm_labels_with_version_reads_both() -> None:
    engine = FakeEngine()
    engine.labels = {"a": "1"}
    assert engine.swarm_labels_with_version() == ({"a": "1"}, 10)
    assert engine.swarm_labels() == {"a": "1"}


def test_set_swarm_labels_sets_and_removes_at_the_version_read() -> None:
    engine = FakeEngine()
    engine.labels = {"keep": "x", "drop": "y"}
    _, version = engine.swarm_labels_with_version()
    engine.set_swarm_labels({"new": "z", "drop": None, "absent": None}, version)
    assert engine.labels == {"keep": "x", "new": "z"}
    assert engine.swarm_version == version + 1


def test_set_swarm_labels_refuses_a_stale_version_and_writes_nothing() -> None:
    engine = FakeEngine()
    _, version = engine.swarm_labels_with_version()
    engine.set_swarm_label("orcastra.paused", "true")  # someone else wrote the Swarm since we read it
    with pytest.raises(EngineConflictError) as e:
        engine.set_swarm_labels({LOCK_LABEL: "node2|me|1"}, version)
    assert f"version {version} -> {version + 1}" in str(e.value)
    assert engine.labels == {"orcastra.paused": "true"}
    assert engine.writes == 1


def test_set_swarm_labels_write_rejected_when_the_swarm_changes_in_between() -> None:
    engine = FakeEngine()
    engine.foreign_write_before = {1}
    _, version = engine.swarm_labels_with_version()
    with pytest.raises(EngineConflictError):
        engine.set_swarm_labels({LOCK_LABEL: "node2|me|1"}, version)
    assert LOCK_LABEL not in engine.labels


def test_lock_take_does_not_overwrite_a_lock_taken_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, clock = FakeEngine(), FakeClock()
    theirs = RebootLock("node3", "other", clock.now + 60).format()
    real_read = engine.swarm_labels_with_version

    def read_then_lose_the_race() -> tuple[dict[str, str], int]:
        # We read a free lock; another instance takes it before our write, which must then fail and re-read.
        labels, version = real_read()
        if LOCK_LABEL not in engine.labels and engine.writes == 0:
            engine.labels[LOCK_LABEL] = theirs
            engine.swarm_version += 1
        return labels, version

    monkeypatch.setattr(engine, "swarm_labels_with_version", read_then_lose_the_race)
    with pytest.raises(RebootLocked):
        reboot_node(
            engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
        )
    assert engine.labels[LOCK_LABEL] == theirs
    assert not engine.rebooted


def test_reboot_keeps_its_lock_when_another_label_of_the_swarm_changes() -> None:
    # Writes: 1 take, 2 renew after the drain, 3 renew after the command, 4 release. A `pause` lands right
    # before the first renew and before the release: each is retried at the new version, the label is kept.
    engine, clock = FakeEngine(), FakeClock()
    engine.foreign_write_before = {2, 5}
    message = reboot_node(
        engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
    )
    assert message.startswith("rebooted node2")
    assert LOCK_LABEL not in engine.labels
    assert engine.labels == {"orcastra.paused": "true"}


def test_reboot_lock_uses_the_adapter_not_its_internals() -> None:
    source = (Path(__file__).parents[2] / "src" / "orcastra" / "runtime" / "reboot.py").read_text()
    assert "._call(" not in source
    assert "_post_json" not in source


def test_a_failed_read_while_waiting_for_the_drain_is_retried_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, clock = FakeEngine(), FakeClock()
    real_snapshot = engine.snapshot
    reads = {"n": 0}

    def flaky_snapshot() -> Snapshot:
        reads["n"] += 1
        if reads["n"] == 3:  # 1: reboot_node, 2: drain, 3: first wait-drained read
            raise EngineServerError("list tasks failed: rpc error: code = Unknown desc = raft: no leader")
        return real_snapshot()

    monkeypatch.setattr(engine, "snapshot", flaky_snapshot)
    message = reboot_node(
        engine, apply_fn(engine), REBOOT, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
    )
    assert message.startswith("rebooted node2")
    assert reads["n"] > 3


def test_the_drain_wait_times_out_with_its_step_name_when_reads_keep_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, clock = FakeEngine(), FakeClock()
    real_snapshot = engine.snapshot
    reads = {"n": 0}

    def failing_after_drain() -> Snapshot:
        reads["n"] += 1
        if reads["n"] >= 3:
            raise EngineServerError("list tasks failed: no leader")
        return real_snapshot()

    monkeypatch.setattr(engine, "snapshot", failing_after_drain)
    settings_ = REBOOT.model_copy(update={"drain_timeout_seconds": 1.0})
    with pytest.raises(RebootStepError) as e:
        reboot_node(
            engine, apply_fn(engine), settings_, "node2", run_command=engine.reboot, clock=clock, sleep=clock.sleep
        )
    assert e.value.step == "wait-drained"
    assert "no leader" in str(e.value)
    assert not engine.rebooted
    assert engine.nodes["node2"].availability == "drain"
