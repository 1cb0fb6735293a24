"""The runtime driven end to end against the fake Engine (orcastra_lab.fake_engine), in-process: the loop owns
every write, a command from the API waits for the cycle that runs and comes back with its result, errors carry
their delay, and stopping never leaves a caller waiting."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.config import Config, load_config
from orcastra.domain.actions import Action
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import EngineConflictError, EngineServerError, EngineUnreachableError, OrcastraError
from orcastra.runtime import loop as loop_module
from orcastra.runtime import watchers as watchers_module
from orcastra.runtime.controllers import Controller, registry
from orcastra.runtime.daemon import Daemon
from orcastra.runtime.executor import AuditLog, DryRunExecutor, Executor, Outcome
from orcastra.runtime.handlers import CommandHandlers
from orcastra.runtime.loop import MAX_RETRY_SECONDS, PERMANENT_ERROR_RETRY_SECONDS, Loop, retry_delay
from orcastra.runtime.observe import HealthState, Metrics
from orcastra.runtime.triggers import Request, Trigger
from orcastra.runtime.watchers import Watcher
from orcastra_lab.fake_engine import Cluster, FakeEngine

TOKEN = "t0ken-for-tests"
WAIT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Gate:
    """A controller that plans nothing, records which thread runs each cycle and how many run at once, and can
    be made to hold a cycle open until the test lets it go."""

    name: str = "gate"
    threads: set[int] = field(default_factory=set)
    active: int = 0
    max_active: int = 0
    cycles: list[tuple[float, float]] = field(default_factory=list)
    hold: threading.Event | None = None
    fail_once: Exception | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, snapshot: Snapshot, config: Config) -> Plan:
        started = time.monotonic()
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.get_ident())
        self.entered.set()
        failure, self.fail_once = self.fail_once, None
        if failure is not None:
            with self.lock:
                self.active -= 1
            raise failure
        hold = self.hold
        if hold is not None:
            hold.wait(WAIT_SECONDS)
        with self.lock:
            self.active -= 1
            self.cycles.append((started, time.monotonic()))
        return Plan()

    def history_needed(self, snapshot: Snapshot, config: Config) -> frozenset[str]:
        return frozenset()


class Writes:
    """Wraps the daemon's executor: which threads wrote, and whether two writes ever overlapped."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.threads: set[int] = set()
        self.active = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        with self.lock:
            self.active += 1
            self.overlapped |= self.active > 1
            self.threads.add(threading.get_ident())
        try:
            return self.inner.apply(actions, snapshot)
        finally:
            with self.lock:
                self.active -= 1


@dataclass
class Running:
    daemon: Daemon
    thread: threading.Thread
    gate: Gate
    writes: Writes
    fake: FakeEngine
    url: str

    def post(self, body: dict[str, str]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(self.url + "/v1/commands", json=body, headers=headers, timeout=WAIT_SECONDS)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    with FakeEngine(Cluster(nodes=3, services=8, groups=2)) as fake:
        config = Config.model_validate(
            {
                "stack": "bench",
                "docker": {"host": fake.docker_host},
                "leader_election": {"enabled": False},
                "reconcile": {"debounce_seconds": 0.0, "resync_interval_seconds": 3600},
                "commands": {"file": str(tmp_path / "commands.yml")},
                "api": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
                "audit": {"path": str(tmp_path / "audit.jsonl")},
            }
        )
        gate = Gate()
        controllers: list[Controller] = [f() for f in registry().values()]
        daemon = Daemon(config, None, {}, dry_run=False, controllers=[*controllers, gate])
        writes = Writes(daemon.loop.executor)
        daemon.loop.executor = writes
        thread = threading.Thread(target=daemon.run_forever, name="test-loop")
        thread.start()
        try:
            wait_for("the first cycle", lambda: daemon.loop.cycles >= 1)
            yield Running(daemon, thread, gate, writes, fake, f"http://127.0.0.1:{port}")
        finally:
            daemon.trigger.stop()
            thread.join(WAIT_SECONDS)
            assert not thread.is_alive(), "the daemon did not stop"


def test_a_sync_from_the_api_waits_for_the_running_cycle_and_never_overlaps_it(running: Running) -> None:
    gate = running.gate
    gate.entered.clear()
    gate.hold = threading.Event()
    running.daemon.trigger.fire("test: a cycle that takes its time")
    assert gate.entered.wait(WAIT_SECONDS)
    held_cycles = len(gate.cycles)

    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(running.post({"command": "sync"})))
    sender.start()
    time.sleep(0.3)
    assert answers == [], "the sync must wait while a cycle runs"
    assert gate.active == 1

    gate.hold.set()
    gate.hold = None
    sender.join(WAIT_SECONDS)
    (answer,) = answers
    assert answer.status_code == 200
    assert answer.json()["result"] == "ok"
    assert answer.json()["message"].startswith("reconciled: ")
    assert gate.max_active == 1, "two cycles ran at once"
    assert len(gate.threads) == 1, "cycles ran on more than one thread"
    # The sync's own cycle started after the held one ended.
    held_end = gate.cycles[held_cycles][1] if len(gate.cycles) > held_cycles else 0.0
    assert any(start >= held_end for start, _ in gate.cycles[held_cycles + 1 :])


def test_a_commands_writes_run_on_the_loop_and_its_result_comes_back(running: Running) -> None:
    before = running.fake.service("bench_svc00000")["Spec"]["TaskTemplate"].get("ForceUpdate", 0)
    answer = running.post({"command": "restart", "service": "svc00000"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "ok"
    assert answer.json()["message"] == "service/bench_svc00000 force restart"
    assert running.fake.service("bench_svc00000")["Spec"]["TaskTemplate"]["ForceUpdate"] == before + 1
    assert running.writes.threads <= running.gate.threads, "a write ran off the loop's thread"
    assert not running.writes.overlapped


def test_commands_from_several_threads_run_one_at_a_time(running: Running) -> None:
    handlers = CommandHandlers(running.daemon.loop)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(handlers.sync())) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_SECONDS)
    assert len(results) == 5
    assert all(r.startswith("reconciled: ") for r in results)
    assert running.gate.max_active == 1
    assert len(running.gate.threads) == 1


def test_a_failed_cycle_is_retried_after_the_delay_its_error_asks_for(running: Running) -> None:
    loop = running.daemon.loop
    cycles = len(running.gate.cycles)
    running.fake.fail_next("GET", r"^/nodes$", 500, "rpc error: code = Unknown desc = raft: no leader")
    failed_at = time.monotonic()
    loop.trigger.fire("test")
    wait_for("the retry", lambda: len(running.gate.cycles) > cycles, timeout=EngineServerError.retry_after_seconds + 5)
    waited = running.gate.cycles[cycles][0] - failed_at
    assert waited >= EngineServerError.retry_after_seconds * 0.9
    assert running.daemon.health.snapshot(time.time())["status"] == "ok"


def test_requests_are_served_while_a_failed_cycle_waits_for_its_retry(running: Running) -> None:
    # The failed cycle's retry is due a second later; a command must not wait for it.
    running.fake.fail_next("GET", r"^/nodes$", 500, "boom")
    running.daemon.trigger.fire("test")
    wait_for("a failed cycle", lambda: running.daemon.health.snapshot(time.time())["last_error"] is not None)
    started = time.monotonic()
    assert CommandHandlers(running.daemon.loop).restart_service("svc00000") == "service/bench_svc00000 force restart"
    assert time.monotonic() - started < 0.5 * EngineServerError.retry_after_seconds


@pytest.mark.parametrize(
    ("error", "consecutive", "delay"),
    [
        (EngineServerError("no leader"), 0, EngineServerError.retry_after_seconds),
        (EngineServerError("no leader"), 2, 4 * EngineServerError.retry_after_seconds),
        (EngineServerError("busy", retry_after_seconds=7), 0, 7.0),
        (EngineUnreachableError("down"), 0, EngineUnreachableError.retry_after_seconds),
        (EngineConflictError("stale"), 0, 0.5),
        (EngineUnreachableError("down"), 20, MAX_RETRY_SECONDS),
        (OrcastraError("permanent"), 0, PERMANENT_ERROR_RETRY_SECONDS),
        (ValueError("a bug"), 0, PERMANENT_ERROR_RETRY_SECONDS),
    ],
    ids=["server", "server-3rd", "retry-after", "unreachable", "conflict-floor", "cap", "permanent", "bug"],
)
def test_retry_delay_honours_the_error(error: Exception, consecutive: int, delay: float) -> None:
    assert retry_delay(error, consecutive) == pytest.approx(delay)


def test_stopping_fails_the_requests_nobody_will_run() -> None:
    trigger = Trigger()
    request = Request(lambda: "never", "test")
    trigger.put(request)
    trigger.stop()
    with pytest.raises(OrcastraError, match="stopping"):
        request.future.result(timeout=1)
    late = Request(lambda: "never", "late")
    trigger.put(late)
    with pytest.raises(OrcastraError, match="stopping"):
        late.future.result(timeout=1)


def test_a_request_does_not_wait_for_the_debounce() -> None:
    trigger = Trigger()
    trigger.fire("event")
    trigger.put(Request(lambda: None, "command"))
    started = time.monotonic()
    assert trigger.wait(timeout=5.0, debounce=5.0) == []
    assert time.monotonic() - started < 1.0
    assert [r.what for r in trigger.take_requests()] == ["command"]
    # The event is still pending, with its debounce.
    assert trigger.wait(timeout=5.0, debounce=0.0) == ["event"]


def test_a_bug_in_a_planner_never_ends_the_loop(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module, "PERMANENT_ERROR_RETRY_SECONDS", 0.2)
    cycles = len(running.gate.cycles)
    running.gate.fail_once = KeyError("a bug")
    running.daemon.trigger.fire("test")
    wait_for("the cycle after the failed one", lambda: len(running.gate.cycles) > cycles, timeout=5)
    assert running.thread.is_alive()
    assert running.daemon.health.snapshot(time.time())["status"] == "ok"
    metrics = running.daemon.metrics.render().decode()
    assert 'orcastra_cycles_total{result="failed"} 1.0' in metrics


class Flaky(Watcher):
    def __init__(self, trigger: Trigger, failures: int) -> None:
        super().__init__("flaky", trigger)
        self.failures = failures
        self.bodies = 0
        self.done = threading.Event()

    def body(self) -> None:
        self.bodies += 1
        if self.bodies <= self.failures:
            raise RuntimeError(f"failure {self.bodies}")
        self.done.set()
        self.trigger.sleep(WAIT_SECONDS)


def test_a_watcher_that_fails_is_logged_counted_and_started_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(watchers_module, "RESTART_PAUSE_SECONDS", 0.01)
    trigger = Trigger()
    metrics = Metrics()
    watcher = Flaky(trigger, failures=2)
    watcher.on_crash = metrics.observe_thread_restart
    watcher.start()
    try:
        assert watcher.done.wait(WAIT_SECONDS)
    finally:
        trigger.stop()
        watcher.join(WAIT_SECONDS)
    assert not watcher.is_alive()
    assert watcher.bodies == 3
    assert 'orcastra_thread_restarts_total{thread="flaky"} 2.0' in metrics.render().decode()
    assert [r.exc_info is not None for r in caplog.records if "flaky failed" in r.getMessage()] == [True, True]


def a_loop(config_path: Path) -> Loop:
    engine = EngineAdapter(EngineSettings(host="unix:///nonexistent/docker.sock"))
    config = load_config(config_path, {}, required=True)
    return Loop(
        config=config,
        config_path=config_path,
        env={},
        engine=engine,
        executor=DryRunExecutor(AuditLog(stream=io.StringIO())),
        controllers=[],
        metrics=Metrics(),
        health=HealthState(60.0),
        trigger=Trigger(),
    )


@pytest.mark.parametrize(
    "text",
    ["stack: shop\n# a comment with an ESC \x1b in it\n", "stack: [\n", "stack: 2024-13-45\n", "stack: !!int abc\n"],
    ids=["control-character", "yaml-syntax", "bad-date", "bad-tag"],
)
def test_a_config_edited_into_garbage_keeps_the_previous_one(tmp_path: Path, text: str) -> None:
    path = tmp_path / "orcastra.yml"
    path.write_text("stack: shop\n", encoding="utf-8")
    loop = a_loop(path)
    path.write_text(text, encoding="utf-8")
    assert loop.reload_config_if_changed() is False
    assert loop.config.stack == "shop"


def test_a_bug_while_reading_the_config_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "orcastra.yml"
    path.write_text("stack: shop\n", encoding="utf-8")
    loop = a_loop(path)

    def broken(*args: object, **kwargs: object) -> Config:
        raise RuntimeError("a bug")

    monkeypatch.setattr(loop_module, "load_config", broken)
    path.write_text("stack: other\n", encoding="utf-8")
    assert loop.reload_config_if_changed() is False
    assert loop.config.stack == "shop"


def test_a_command_request_kept_in_the_swarm_runs_once_with_its_writes_on_the_loop(running: Running) -> None:
    from orcastra.adapters.engine import EngineAdapter, EngineSettings
    from orcastra.commands.model import Command
    from orcastra.commands.swarm_queue import send_command

    with EngineAdapter(EngineSettings(host=running.fake.docker_host)) as engine:
        result = send_command(engine, Command("sync"), timeout=WAIT_SECONDS, poll=0.05)
    assert (result.command, result.result) == ("sync", "ok")
    assert result.message.startswith("reconciled")
    assert running.writes.threads == {running.thread.ident}  # the claim and the result: on the loop's thread
    journal = (running.daemon.config.commands.file.parent / "commands.yml.results.jsonl").read_text()
    assert '"source": "swarm"' in journal


def test_a_stop_finishes_the_swarm_request_in_hand_before_the_loop_stops(running: Running) -> None:
    """SIGTERM while the leader runs a command request kept in the Swarm: no new claim, the loop keeps serving
    until that request has its result, then stops (a request left "running" would be marked interrupted by the
    next leader: not run at all)."""
    from orcastra.adapters.engine import EngineAdapter, EngineSettings
    from orcastra.commands.model import Command
    from orcastra.commands.swarm_queue import send_command

    gate = running.gate
    gate.entered.clear()
    gate.hold = threading.Event()
    results = []

    def send() -> None:
        with EngineAdapter(EngineSettings(host=running.fake.docker_host)) as engine:
            results.append(send_command(engine, Command("sync"), timeout=WAIT_SECONDS, poll=0.05))

    sender = threading.Thread(target=send)
    sender.start()
    assert gate.entered.wait(WAIT_SECONDS)  # the leader runs it: its cycle is held
    stopper = threading.Thread(target=running.daemon._drain_then_stop)
    stopper.start()
    time.sleep(0.3)
    assert not running.daemon.trigger.stopped, "the loop must go on serving the request in hand"
    gate.hold.set()
    stopper.join(WAIT_SECONDS)
    sender.join(WAIT_SECONDS)
    assert [(r.command, r.result) for r in results] == [("sync", "ok")]
    assert running.daemon.trigger.stopped
