"""The command channel kept in the Swarm, against the fake Engine: configs through the adapter (versions,
conflicts, labels only), the leader's plan (table-driven), exactly once (two leaders racing, a dead holder),
malformed requests, a follower's API request answered with the leader's result, the sender's withdrawal, and
the API client's retry of a refused connection."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import httpx
import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.commands.api import do_command
from orcastra.commands.dispatch import CommandResult
from orcastra.commands.model import Command
from orcastra.commands.swarm_queue import (
    KEEP_FINISHED,
    PENDING_EXPIRY_SECONDS,
    REQUEST_FILTER,
    RETENTION_SECONDS,
    decode_request,
    encode_request,
    plan_queue,
    read_result,
    send_command,
)
from orcastra.domain.actions import RemoveConfig, UpdateConfigLabels
from orcastra.domain.configs import SwarmConfig
from orcastra.domain.labels import (
    COMMAND_FINISHED_LABEL,
    COMMAND_HOLDER_LABEL,
    COMMAND_MARKER_LABEL,
    COMMAND_STATE_LABEL,
)
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import EngineClientError, EngineConflictError
from orcastra.runtime.command_queue import CommandQueue, forwarding_submit
from orcastra.runtime.executor import AuditLog, DryRunExecutor, EngineExecutor
from orcastra_lab.fake_engine import Cluster, FakeEngine

PENDING_LABELS = MappingProxyType({COMMAND_MARKER_LABEL: "true", COMMAND_STATE_LABEL: "pending"})


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeEngine]:
    with FakeEngine(Cluster(nodes=1, services=0, groups=0)) as fe:
        yield fe


@pytest.fixture
def engine(fake: FakeEngine) -> Iterator[EngineAdapter]:
    with EngineAdapter(EngineSettings(host=fake.docker_host)) as adapter:
        for c in adapter.list_configs({}):  # each test starts with no configs
            adapter.remove_config(c.id)
        yield adapter


class Recorder:
    """A ``submit`` that records what it runs and answers ok."""

    def __init__(self, delay: float = 0.0) -> None:
        self.ran: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, cmd: Command) -> CommandResult:
        time.sleep(self.delay)
        with self.lock:
            self.ran.append(str(cmd))
        return CommandResult(str(cmd), "ok", f"{cmd} done")


def queue(engine: EngineAdapter, submit: Recorder, holder: str = "leader-a") -> CommandQueue:
    return CommandQueue(engine, EngineExecutor(engine, AuditLog(stream=io.StringIO())), submit, holder)


def request(engine: EngineAdapter, data: bytes, name: str = "orcastra-command-1", **labels: str) -> SwarmConfig:
    config_id = engine.create_config(name, data, {**PENDING_LABELS, **labels})
    (config,) = engine.list_configs({"id": [config_id]})
    return config


def only(engine: EngineAdapter) -> SwarmConfig:
    (config,) = engine.list_configs(REQUEST_FILTER)
    return config


# --- the adapter and the fake Engine ----------------------------------------------------------------------


def test_configs_keep_their_data_and_change_labels_only_at_their_version(engine: EngineAdapter) -> None:
    config = request(engine, b'{"command": "sync"}')
    assert config.data == b'{"command": "sync"}'
    assert config.labels[COMMAND_STATE_LABEL] == "pending"
    assert engine.list_configs({"label": ["orcastra.command=false"]}) == ()
    engine.update_config_labels(config.id, config.version, {COMMAND_STATE_LABEL: "running"})
    with pytest.raises(EngineConflictError):  # the version read before that write is stale now
        engine.update_config_labels(config.id, config.version, {COMMAND_STATE_LABEL: "running"})
    after = only(engine)
    assert after.labels[COMMAND_STATE_LABEL] == "running"
    assert after.version > config.version
    assert after.data == config.data
    with pytest.raises(EngineConflictError):  # a name is taken once
        engine.create_config(config.name, b"x", {})
    engine.remove_config(config.id)
    assert engine.list_configs(REQUEST_FILTER) == ()


def test_the_fake_engine_refuses_a_change_of_data(fake: FakeEngine, engine: EngineAdapter) -> None:
    config = request(engine, b"a")
    url = f"{fake.docker_host.replace('tcp', 'http')}/configs/{config.id}/update?version={config.version}"
    response = httpx.post(url, json={"Name": config.name, "Data": "Yg==", "Labels": {}})
    assert response.status_code == 400
    assert "only updates to Labels" in response.text
    with pytest.raises(EngineClientError):
        engine.create_config("bad", b"x" * (1000 * 1024 + 1), {})


# --- the leader's plan (pure) -----------------------------------------------------------------------------

NOW = 1_000_000.0


def cfg(name: str, created: float, **labels: str) -> SwarmConfig:
    return SwarmConfig(name, 1, name, MappingProxyType(dict(labels)), b'{"command": "sync"}', created)


def running(holder: str) -> dict[str, str]:
    return {COMMAND_STATE_LABEL: "running", COMMAND_HOLDER_LABEL: holder}


def done(at: float) -> dict[str, str]:
    return {COMMAND_STATE_LABEL: "done", COMMAND_FINISHED_LABEL: str(int(at))}


@pytest.mark.parametrize(
    ("configs", "claim", "marked", "removed"),
    [
        ([], None, {}, []),
        ([cfg("b", NOW - 1), cfg("a", NOW - 2)], "a", {}, []),  # oldest first, whatever the listing's order
        ([cfg("a", NOW - 2, **running("dead")), cfg("b", NOW - 1)], "b", {"a": "interrupted"}, []),
        ([cfg("a", NOW - PENDING_EXPIRY_SECONDS - 1), cfg("b", NOW)], "b", {"a": "error"}, []),
        ([cfg("a", NOW - 9000, **done(NOW - RETENTION_SECONDS - 1)), cfg("b", NOW, **done(NOW))], None, {}, ["a"]),
        ([cfg(f"d{n:03d}", NOW, **done(NOW - n)) for n in range(KEEP_FINISHED + 2)], None, {}, ["d050", "d051"]),
        ([cfg("a", NOW - RETENTION_SECONDS - 1, **{COMMAND_STATE_LABEL: "bogus"})], None, {}, ["a"]),
    ],
    ids=["empty", "oldest-first", "dead-holder", "expired", "retention-age", "retention-count", "unknown-state"],
)
def test_plan_queue(
    configs: list[SwarmConfig], claim: str | None, marked: Mapping[str, str], removed: list[str]
) -> None:
    plan = plan_queue(configs, "me", NOW)
    assert (plan.claim.name if plan.claim else None) == claim
    updates = {
        a.config_name: a.set_labels[COMMAND_STATE_LABEL] for a in plan.actions if isinstance(a, UpdateConfigLabels)
    }
    assert updates == marked
    assert sorted(a.config_name for a in plan.actions if isinstance(a, RemoveConfig)) == removed


# --- serving: exactly once -------------------------------------------------------------------------------


def test_the_leader_runs_a_request_once_and_records_its_result(engine: EngineAdapter) -> None:
    request(engine, encode_request(Command("restart", "app")))
    submit = Recorder()
    assert [r.message for r in queue(engine, submit).serve()] == ["restart app done"]
    assert queue(engine, submit).serve() == []  # a second pass finds nothing to run
    assert submit.ran == ["restart app"]
    result = read_result(only(engine))
    assert result is not None
    assert (result.result, result.message) == ("ok", "restart app done")
    assert only(engine).labels[COMMAND_HOLDER_LABEL] == "leader-a"


class BarrierEngine(EngineAdapter):
    """Lists the requests, then waits until the other leader has listed them too: both see the same version."""

    barrier = threading.Barrier(2, timeout=5)

    def list_configs(self, filters: Mapping[str, list[str]]) -> tuple[SwarmConfig, ...]:
        listing = super().list_configs(filters)
        if filters == REQUEST_FILTER:
            self.barrier.wait()
        return listing


def test_two_leaders_racing_for_one_request_run_it_once(fake: FakeEngine, engine: EngineAdapter) -> None:
    request(engine, encode_request(Command("reboot", "node2")))
    submit = Recorder()
    outcomes: dict[str, object] = {}

    def serve(holder: str) -> None:
        with BarrierEngine(EngineSettings(host=fake.docker_host)) as own:
            outcomes[holder] = queue(own, submit, holder).serve_once()

    threads = [threading.Thread(target=serve, args=(h,)) for h in ("leader-a", "leader-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert submit.ran == ["reboot node2"]
    assert sorted(r is None for r in outcomes.values()) == [False, True]  # one ran it, one found it taken
    winner = next(h for h, r in outcomes.items() if r is not None)
    assert only(engine).labels[COMMAND_HOLDER_LABEL] == winner
    assert only(engine).labels[COMMAND_STATE_LABEL] == "done"


def test_a_request_found_running_by_a_dead_holder_is_interrupted_not_run_again(engine: EngineAdapter) -> None:
    request(engine, encode_request(Command("drain", "node2")), **running("old-leader:1:abc"))
    submit = Recorder()
    assert queue(engine, submit).serve() == []
    assert submit.ran == []
    result = read_result(only(engine))
    assert result is not None
    assert result.result == "error"
    assert result.message.startswith("interrupted")
    assert result.command == "drain node2" or "drain" in result.command


def test_the_old_holder_still_records_its_real_result_over_interrupted(engine: EngineAdapter) -> None:
    config = request(engine, encode_request(Command("sync")))
    old = queue(engine, Recorder(), "old")
    claim = old.writes.apply(
        [UpdateConfigLabels(config.id, config.name, config.version, running("old"))], Snapshot((), (), ())
    )
    assert claim[0].result == "ok"
    queue(engine, Recorder(), "new").serve()  # the new leader marks it interrupted
    assert only(engine).labels[COMMAND_STATE_LABEL] == "interrupted"
    old._finish(only(engine), CommandResult("sync", "ok", "reconciled"))  # the old one finishes after all
    result = read_result(only(engine))
    assert result is not None
    assert (result.result, result.message) == ("ok", "reconciled")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"x" * 5000, "5000 bytes"),
        (b"{not json", "not valid JSON"),
        (b'["sync"]', "JSON object"),
        (b'{"command": "format-disks"}', "format-disks"),
        (b'{"command": "restart"}', "restart"),
        (b'{"command": "sync", "command": "pause"}', "duplicate key"),
    ],
    ids=["binary", "huge", "not-json", "a-list", "unknown-command", "no-service", "duplicate-key"],
)
def test_a_malformed_request_gets_an_error_result_and_nothing_runs(
    engine: EngineAdapter, data: bytes, why: str
) -> None:
    request(engine, data)
    submit = Recorder()
    (result,) = queue(engine, submit).serve()
    assert submit.ran == []
    assert result.result == "error"
    assert result.message.startswith("malformed request")
    assert why in result.message
    recorded = read_result(only(engine))
    assert recorded is not None
    assert recorded.result == "error"
    assert why in recorded.message
    assert len(only(engine).labels["orcastra.command.result"]) < 1500


def test_decode_request_reads_the_api_body_forms() -> None:
    assert decode_request(b'{"command": "restart", "service": "app"}') == Command("restart", "app")
    assert decode_request(encode_request(Command("drain", "node2"))) == Command("drain", "node2")


def test_a_dry_run_claims_nothing_and_runs_nothing(engine: EngineAdapter) -> None:
    request(engine, encode_request(Command("sync")))
    submit = Recorder()
    dry = CommandQueue(engine, DryRunExecutor(AuditLog(stream=io.StringIO())), submit, "leader-a")
    assert dry.serve() == []
    assert submit.ran == []
    assert only(engine).labels[COMMAND_STATE_LABEL] == "pending"


# --- senders ---------------------------------------------------------------------------------------------


def test_a_followers_api_request_is_answered_with_the_leaders_result(fake: FakeEngine, engine: EngineAdapter) -> None:
    leader_submit, follower_local = Recorder(), Recorder()
    stop = threading.Event()

    def leader() -> None:
        with EngineAdapter(EngineSettings(host=fake.docker_host)) as own:
            q = queue(own, leader_submit)
            while not stop.is_set():
                q.serve()
                stop.wait(0.02)

    thread = threading.Thread(target=leader)
    thread.start()
    try:
        factory = lambda: EngineAdapter(EngineSettings(host=fake.docker_host))  # noqa: E731
        submit = forwarding_submit(lambda: False, follower_local, factory, timeout=5, poll=0.02)
        result = submit(Command("restart", "app"))
    finally:
        stop.set()
        thread.join(5)
    assert (result.result, result.message) == ("ok", "restart app done")
    assert leader_submit.ran == ["restart app"]
    assert follower_local.ran == []
    # ... and the leader itself runs an API request directly
    assert forwarding_submit(lambda: True, follower_local, factory)(Command("sync")).ok
    assert follower_local.ran == ["sync"]


def test_a_sender_without_a_leader_withdraws_its_request(engine: EngineAdapter) -> None:
    result = send_command(engine, Command("pause"), timeout=0.0, sleep=lambda _s: None)
    assert result.result == "error"
    assert "withdrawn" in result.message
    assert only(engine).labels[COMMAND_STATE_LABEL] == "cancelled"
    submit = Recorder()
    assert queue(engine, submit).serve() == []
    assert submit.ran == []


def test_a_sender_whose_request_was_taken_at_the_last_moment_says_it_runs(engine: EngineAdapter) -> None:
    class TakenMeanwhile(EngineAdapter):
        def update_config_labels(self, *args: object, **kwargs: object) -> None:
            raise EngineConflictError("update out of sequence")

    with TakenMeanwhile(engine.settings) as racing:
        result = send_command(racing, Command("pause"), timeout=0.0, sleep=lambda _s: None)
    assert result.result == "error"
    assert "runs once" in result.message


def test_do_command_retries_a_refused_connection() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        return httpx.Response(200, json={"command": body["command"], "result": "ok", "message": "done"})

    pauses: list[float] = []
    code, text = do_command(
        "127.0.0.1:9", "t", ["sync"], httpx.MockTransport(handler), connect_retry_seconds=5.0, sleep=pauses.append
    )
    assert (code, text) == (0, "sync: done")
    assert len(attempts) == 3
    assert len(pauses) == 2
