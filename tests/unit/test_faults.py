"""The fault-injecting proxy (orcastra_lab/faults.py) in front of the fake Engine: it passes everything through
unchanged (docker-py and Orcastra's EngineAdapter see the same as directly), injects each fault its rules ask for,
deterministically for a seed, and leaves no thread or socket behind."""

from __future__ import annotations

import http.client
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests.exceptions

from orcastra.adapters.engine import EngineAdapter, EngineEvent, EngineSettings
from orcastra.errors import (
    EngineConflictError,
    EngineError,
    EngineServerError,
    EngineUnreachableError,
    NotASwarmManagerError,
)
from orcastra_lab import faults
from orcastra_lab.fake_engine import Cluster, FakeEngine
from orcastra_lab.faults import FaultProxy, FaultStats, Rule, main, parse_rule

TIMEOUT = 2.0  # the longest any test waits for something that takes milliseconds
NO_LEADER = "rpc error: code = Unknown desc = raft: no leader"
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"


def open_sockets() -> set[str]:
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir() if fds.exists() else ():
        with_target = os.readlink(fd) if fd.exists() else ""
        if with_target.startswith("socket:"):
            found.add(f"{fd.name}:{with_target}")
    return found


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    threads, sockets = set(threading.enumerate()), open_sockets()
    yield
    for t in set(threading.enumerate()) - threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), f"thread left running: {t.name}"
    assert open_sockets() - sockets == set()


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    with FakeEngine(Cluster(nodes=3, services=8, groups=1)) as engine:
        yield engine


@pytest.fixture
def proxy(fake: FakeEngine) -> Iterator[FaultProxy]:
    with FaultProxy(fake.docker_host, seed=7) as p:
        yield p


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[Any]:
    c = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=TIMEOUT)
    yield c
    c.close()


@pytest.fixture
def adapter(proxy: FaultProxy) -> Iterator[EngineAdapter]:
    with EngineAdapter(EngineSettings(host=proxy.docker_host, timeout_seconds=TIMEOUT)) as a:
        yield a


def raw(proxy: FaultProxy, request: bytes) -> bytes:
    """One request on a socket of its own: every byte answered until the proxy closes."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def fake_requests(fake: FakeEngine, key: str) -> int:
    stats = fake.stats().get(key)
    return stats.requests if stats else 0


# --- passing through --------------------------------------------------------------------------------------


def test_without_rules_everything_passes_through(fake: FakeEngine, proxy: FaultProxy, adapter: Any) -> None:
    with EngineAdapter(EngineSettings(host=fake.docker_host, timeout_seconds=TIMEOUT)) as direct:
        expected = direct.snapshot()
        info, through = direct.info(), adapter.info()
        assert through.pop("SystemTime") >= info.pop("SystemTime")
        assert through == info
    got = adapter.snapshot()
    assert (got.nodes, got.services, got.tasks) == (expected.nodes, expected.services, expected.tasks)
    assert adapter.reads_through_pool  # GETs straight on urllib3's pool, as Orcastra reads a real Engine

    node = adapter.inspect_node(fake.node("node2")["ID"])
    adapter.update_node_spec(node, {**node.labels, "zone": "a"})  # a write, body and ?version= through
    assert fake.node("node2")["Spec"]["Labels"]["zone"] == "a"
    assert [(w.method, w.status) for w in fake.writes()] == [("POST", 200)]

    stats = proxy.stats()
    assert stats.requests == stats.forwarded > 5
    assert stats == FaultStats(stats.requests, stats.forwarded)  # no fault, no upstream error


def test_docker_py_sees_the_same_answers_and_connection_close(fake: FakeEngine, proxy: FaultProxy) -> None:
    direct = docker.APIClient(base_url=fake.docker_host, version="1.41", timeout=TIMEOUT)
    through = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=TIMEOUT)
    try:
        for call in (
            lambda c: c.nodes(),
            lambda c: c.services(filters={"name": "bench_svc00000"}),
            lambda c: c.tasks(filters={"desired-state": "running"}),
            lambda c: c.inspect_swarm(),
            lambda c: c.version(),
        ):
            assert call(through) == call(direct)
        with pytest.raises(docker.errors.NotFound) as e:
            through.inspect_service("nope")
        assert "service nope not found" in str(e.value.explanation)
    finally:
        direct.close()
        through.close()
    head, _, body = raw(proxy, b"GET /v1.41/_ping HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").partition(
        b"\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head
    assert body == b"OK"
    assert b"keep-alive" not in head.lower()


def test_a_unix_socket_upstream(tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{self.command} {self.path} {self.headers['Connection']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    sock = tmp_path / "docker.sock"
    server = socketserver.UnixStreamServer(str(sock), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="test-unix-engine")
    thread.start()
    try:
        with FaultProxy(f"unix://{sock}") as proxy:
            answer = raw(proxy, b"GET /v1.41/nodes?x=1 HTTP/1.1\r\nHost: docker\r\n\r\n")
            assert answer.endswith(b"\r\n\r\nGET /v1.41/nodes?x=1 close")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_an_upstream_that_cannot_be_reached_is_a_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with FaultProxy(f"tcp://127.0.0.1:{port}") as proxy:
        c = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=TIMEOUT)
        with pytest.raises(docker.errors.APIError) as e:
            c.nodes()
        c.close()
        assert e.value.status_code == 502
        assert "cannot reach the upstream Engine" in str(e.value.explanation)
        assert proxy.stats().upstream_errors == 1


def test_a_chunked_request_body_is_refused_with_411(proxy: FaultProxy) -> None:
    answer = raw(proxy, b"POST /services/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert raw(proxy, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert proxy.stats() == FaultStats()


# --- each action ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (500, NO_LEADER, EngineServerError),
        (503, "This node is not a swarm manager.", NotASwarmManagerError),
        (409, "update out of sequence", EngineConflictError),
    ],
)
def test_status(fake: FakeEngine, proxy: FaultProxy, adapter: Any, case: tuple[int, str, type]) -> None:
    status, message, error = case
    proxy.set_rules([Rule("status", "GET", "^/tasks$", status=status, message=message)])
    with pytest.raises(error, match=message) as e:
        adapter.snapshot()
    assert e.value.status == status
    assert fake_requests(fake, "/tasks") == 0  # answered by the proxy: the Engine never saw it
    assert proxy.stats().faults["status"] == 1


def test_a_500_out_of_sequence_on_a_write_changes_nothing(fake: FakeEngine, proxy: FaultProxy, adapter: Any) -> None:
    proxy.set_rules([Rule("status", "POST", r"^/nodes/[^/]+/update$", status=500, message=OUT_OF_SEQUENCE)])
    node = adapter.inspect_node(fake.node("node2")["ID"])
    with pytest.raises(EngineConflictError):
        adapter.update_node_spec(node, {"zone": "a"})
    assert fake.writes() == []


def test_delay(fake: FakeEngine, proxy: FaultProxy, client: Any) -> None:
    proxy.set_rules([Rule("delay", "GET", "^/nodes$", seconds=0.15)])
    start = time.monotonic()
    assert len(client.nodes()) == 3
    assert time.monotonic() - start >= 0.15
    start = time.monotonic()
    client.services()
    assert time.monotonic() - start < 0.15
    stats = proxy.stats()
    assert (stats.faults["delay"], stats.forwarded) == (1, 2)


def test_hang_until_the_client_gives_up(fake: FakeEngine, proxy: FaultProxy) -> None:
    proxy.set_rules([Rule("hang", "GET", "^/tasks$")])
    with EngineAdapter(EngineSettings(host=proxy.docker_host, timeout_seconds=0.1)) as adapter:
        with pytest.raises(EngineUnreachableError, match="timed out"):
            adapter.snapshot()
        c = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=0.1)
        with pytest.raises(requests.exceptions.Timeout):
            c.tasks()
        c.close()
    assert fake_requests(fake, "/tasks") == 0
    assert proxy.stats().faults["hang"] == 2  # and their connections are gone: nothing_left checks


def test_hang_until_the_proxy_closes(fake: FakeEngine) -> None:
    errors: queue.Queue[BaseException | None] = queue.Queue()
    proxy = FaultProxy(fake.docker_host).start()
    proxy.set_rules([Rule("hang", "*", "")])

    def call() -> None:
        c = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=30)
        try:
            c.ping()
            errors.put(None)
        except Exception as e:
            errors.put(e)
        finally:
            c.close()

    thread = threading.Thread(target=call, name="test-hanging-client")
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while proxy.stats().faults["hang"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    start = time.monotonic()
    proxy.close()
    assert time.monotonic() - start < 1.0  # no poll interval: at once
    assert isinstance(errors.get(timeout=TIMEOUT), requests.exceptions.ConnectionError)
    thread.join(TIMEOUT)


def test_reset(fake: FakeEngine, proxy: FaultProxy, adapter: Any) -> None:
    proxy.set_rules([Rule("reset", "GET", "^/services$")])
    with pytest.raises(EngineUnreachableError, match="reset"):
        adapter.snapshot()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /services HTTP/1.1\r\n\r\n")
        with pytest.raises(ConnectionResetError):  # an RST (SO_LINGER 0), not an orderly close
            s.recv(1024)
    assert fake_requests(fake, "/services") == 0
    assert proxy.stats().faults["reset"] == 2


def test_truncate_is_an_error_not_a_wrong_answer(fake: FakeEngine, proxy: FaultProxy, adapter: Any) -> None:
    proxy.set_rules([Rule("truncate", "GET", "^/tasks$", after_bytes=100)])
    with pytest.raises(EngineError, match="IncompleteRead"):
        adapter.snapshot()
    c = docker.APIClient(base_url=proxy.docker_host, version="1.41", timeout=TIMEOUT)
    with pytest.raises(requests.exceptions.RequestException):
        c.tasks()
    c.close()
    head, _, body = raw(proxy, b"GET /v1.41/tasks HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")
    assert len(body) == 100
    assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 100
    assert fake_requests(fake, "/tasks") == 3  # forwarded: a write would have been applied
    assert proxy.stats().faults["truncate"] == 3


def test_an_answer_no_longer_than_the_cut_passes_whole(proxy: FaultProxy, client: Any) -> None:
    proxy.set_rules([Rule("truncate", "GET", "^/_ping$", after_bytes=2)])
    assert client.ping() is True


# --- matching, fractions, counts --------------------------------------------------------------------------


def test_rules_match_method_and_path_without_version_and_query(proxy: FaultProxy, client: Any) -> None:
    proxy.set_rules([Rule("status", "POST", "^/tasks$"), Rule("status", "get", "^/nodes$", status=503)])
    client.tasks(filters={"desired-state": "running"})  # POST only
    with pytest.raises(docker.errors.APIError) as e:
        client.nodes(filters={"role": "manager"})  # /v1.41/nodes?filters=... is /nodes
    assert e.value.status_code == 503
    client.inspect_node("node1")  # /nodes/node1 is not ^/nodes$


def test_fraction_is_deterministic_for_a_seed(proxy: FaultProxy, client: Any) -> None:
    def pattern(n: int = 40) -> list[bool]:
        failed = []
        for _ in range(n):
            try:
                client.ping()
                failed.append(False)
            except docker.errors.APIError:
                failed.append(True)
        return failed

    proxy.set_rules([Rule("status", "GET", "^/_ping$", fraction=0.5)])
    first = pattern()
    assert 10 <= sum(first) <= 30
    assert proxy.stats().faults["status"] == sum(first)
    proxy.set_rules([Rule("status", "GET", "^/_ping$", fraction=0.5)])
    assert pattern() == first  # the same draws again
    proxy.set_rules([Rule("status", "GET", "^/_ping$", fraction=0.5)], seed=8)
    assert pattern(20) != first[:20]


def test_count_limits_the_injections(proxy: FaultProxy, client: Any) -> None:
    proxy.set_rules([Rule("status", "GET", "^/nodes$", count=2, message=NO_LEADER), Rule("delay", "GET", "^/nodes$")])
    for _ in range(2):
        with pytest.raises(docker.errors.APIError, match="no leader"):
            client.nodes()
    assert len(client.nodes()) == 3  # used up: the next rule applies
    assert proxy.stats().faults == {"status": 2, "delay": 1, "hang": 0, "reset": 0, "truncate": 0}
    assert proxy.rules[0].count == 2


def test_clear_restores_pass_through(proxy: FaultProxy, adapter: Any) -> None:
    proxy.set_rules([Rule("reset", "*", "")])
    with pytest.raises(EngineUnreachableError):
        adapter.ping()
    proxy.clear()
    assert adapter.ping() is True
    assert proxy.rules == ()


# --- streams ----------------------------------------------------------------------------------------------


def test_an_event_stream_is_relayed_as_it_comes(fake: FakeEngine, proxy: FaultProxy, adapter: Any) -> None:
    events: queue.Queue[EngineEvent] = queue.Queue()
    stream = adapter.events({"type": ["node"]})

    def read() -> None:
        for event in stream:
            events.put(event)

    reader = threading.Thread(target=read, name="test-event-reader")
    reader.start()
    try:
        fake.set_node_state("node2", "down")
        event = events.get(timeout=TIMEOUT)
        assert (event.type, event.attributes.get("state.new")) == ("node", "down")
        fake.set_node_state("node2", "ready")
        assert events.get(timeout=TIMEOUT).attributes.get("state.new") == "ready"
    finally:
        stream.close()
        reader.join(TIMEOUT)
    assert not reader.is_alive()


# --- rules as the CLI writes them, and the CLI ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("GET /tasks 500 0.3", Rule("status", "GET", "/tasks", fraction=0.3)),
        (
            f'POST ^/services/[^/]+/update$ 500 1 count=2 message="{OUT_OF_SEQUENCE}"',
            Rule("status", "POST", "^/services/[^/]+/update$", count=2, message=OUT_OF_SEQUENCE),
        ),
        (r"* ^/nodes/\w+$ delay:2.5 0.5", Rule("delay", "*", r"^/nodes/\w+$", fraction=0.5, seconds=2.5)),
        ("get ^/events hang", Rule("hang", "GET", "^/events")),
        ("* . reset count=1", Rule("reset", "*", ".", count=1)),
        ("GET ^/services$ truncate:100", Rule("truncate", "GET", "^/services$", after_bytes=100)),
    ],
)
def test_parse_rule(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize(
    "text",
    ["GET /tasks", "GET /tasks 99", "GET /tasks 500 1.5", "GET /tasks delay", "GET /tasks hang:1", "GET ( 500",
     "GET /tasks 500 0.3 count=-1", "GET /tasks 500 color=red", "GET /tasks 500 'open"],
)  # fmt: skip
def test_parse_rule_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="rule"):
        parse_rule(text)


def test_the_cli_serves_until_sigterm(fake: FakeEngine) -> None:
    # The module run as a script, as ``python -m orcastra_lab.faults`` runs it but without importing the lab's
    # package (docker, ~0.5 s): the CLI is standard library only.
    args = ["--upstream", fake.docker_host, "--rule", "GET ^/version$ 503 message=elsewhere", "--seed", "3"]
    with subprocess.Popen(
        [sys.executable, "-I", faults.__file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.startswith("docker_host=tcp://127.0.0.1:")
            conn = http.client.HTTPConnection("127.0.0.1", int(line.rsplit(":", 1)[1]), timeout=TIMEOUT)
            for path, status in (("/v1.41/version", 503), ("/_ping", 200)):
                conn.request("GET", path)
                response = conn.getresponse()
                assert (response.status, response.getheader("Connection")) == (status, "close")
                response.read()
                conn.close()
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=5)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 0
    assert "requests=2, forwarded=1" in err


def test_the_cli_refuses_a_bad_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--upstream", "tcp://127.0.0.1:1", "--rule", "GET /tasks frown"])
    assert e.value.code == 2
    assert "unknown action 'frown'" in capsys.readouterr().err
