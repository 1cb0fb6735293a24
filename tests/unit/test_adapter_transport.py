"""Every transport failure of every scheme (unix://, tcp://, TLS, ssh://) leaves the adapter as an
``EngineUnreachableError`` (a ``TemporaryError`` the loop retries) naming the endpoint, never as the raw
exception type: at connect time, on the docker-py path, on the GET-through-the-pool path and when events open.

No sshd is needed: paramiko really connects to closed ports and to servers that are not SSH, and the other
failures are raised where paramiko and the socket layer raise them (monkeypatched). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import docker.transport.sshconn
import paramiko
import pytest
import urllib3.connectionpool

from orcastra.adapters.engine import EngineAdapter
from orcastra.adapters.engine.adapter import EngineSettings, EventStream
from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.adapters.engine.transport import Client
from orcastra.errors import EngineError, EngineUnreachableError, TemporaryError

VERSION_BODY = b'{"ApiVersion": "1.41", "Version": "20.10.0", "MinAPIVersion": "1.12"}'


@pytest.fixture(autouse=True)
def no_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko and the SDK read ~/.ssh/config and known_hosts: an empty home keeps the tests to themselves."""
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    module: Any = importlib.import_module("orcastra_lab.fake_engine")
    with module.FakeEngine(module.Cluster(nodes=2, services=2, groups=1)) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class OddServer:
    """A TCP server on 127.0.0.1 that answers ``GET /version`` (and ``/_ping``) like an Engine, so the SDK
    connects (unless ``answers_version`` is False), and everything else as ``behaviour`` says: ``hang``
    (accept, read, never answer), ``garbage`` (bytes that are no HTTP), ``not-json`` (a 200 whose body is no
    JSON); ``banner`` answers every connection with a line that is not an SSH banner and hangs up (what
    paramiko sees from a server that is not sshd)."""

    def __init__(self, behaviour: str, *, answers_version: bool = True) -> None:
        self.behaviour = behaviour
        self.answers_version = answers_version
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.01)  # how soon the accepting thread sees the stop
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def __enter__(self) -> OddServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for t in [self._accept, *self._threads]:
            t.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if self.behaviour == "banner":
                conn.sendall(b"this is not an SSH server\r\n")
                return
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1]
            if self.answers_version and path.endswith((b"/version", b"/_ping")):
                body = VERSION_BODY if path.endswith(b"/version") else b"OK"
                conn.sendall(self._ok(body))
            elif self.behaviour == "hang":
                self._stop.wait(10)
            elif self.behaviour == "garbage":
                conn.sendall(b"\x00\x01 this is no HTTP \xff\r\n\r\n")
            elif self.behaviour == "not-json":
                conn.sendall(self._ok(b"<html>a proxy's error page</html>"))

    @staticmethod
    def _ok(body: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return head.encode() + b"Connection: close\r\n\r\n" + body


def assert_unreachable(error: pytest.ExceptionInfo[BaseException], host: str) -> None:
    assert isinstance(error.value, EngineUnreachableError)
    assert isinstance(error.value, TemporaryError)
    assert error.value.endpoint == host
    assert host in str(error.value)


# --- connecting ------------------------------------------------------------------------------------------

# What each call of the adapter does, on which path: docker-py's own methods, the GETs straight on the pool,
# opening the event stream, a bootstrap write.
CALLS: dict[str, Callable[[EngineAdapter], object]] = {
    "ping": lambda e: e.ping(),
    "info": lambda e: e.info(),
    "snapshot": lambda e: e.snapshot(),
    "inspect-node": lambda e: e.inspect_node("node1"),
    "events": lambda e: e.events({"type": ["node"]}),
    "api-version": lambda e: e.api_version,
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_closed_tcp_port_is_unreachable(call: Callable[[EngineAdapter], object]) -> None:
    host = f"tcp://127.0.0.1:{closed_port()}"
    with EngineAdapter(EngineSettings(host=host, timeout_seconds=2)) as engine, pytest.raises(EngineError) as error:
        call(engine)
    assert_unreachable(error, host)


def test_a_missing_unix_socket_is_unreachable(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    with EngineAdapter(EngineSettings(host=host, timeout_seconds=2)) as engine, pytest.raises(EngineError) as error:
        engine.ping()
    assert_unreachable(error, host)


@pytest.mark.parametrize("behaviour", ["closed", "banner"], ids=["closed-port", "not-an-ssh-server"])
def test_an_ssh_endpoint_that_cannot_be_reached_is_unreachable(behaviour: str) -> None:
    """paramiko raises NoValidConnectionsError for a closed port and SSHException for a server that is no sshd;
    both escaped the adapter (``orcastra run`` died at start with a traceback)."""
    with OddServer("banner") as server:
        port = closed_port() if behaviour == "closed" else server.port
        host = f"ssh://127.0.0.1:{port}"
        with SwarmEngine(EngineSettings(host=host, timeout_seconds=2)) as engine:
            with pytest.raises(EngineError) as error:
                engine.local_swarm()
            assert_unreachable(error, host)
            # The next call tries again (and fails the same way), rather than reusing a broken client.
            with pytest.raises(EngineUnreachableError):
                engine.ping()


SSH_CONNECT_ERRORS: dict[str, BaseException] = {
    "SSHException": paramiko.SSHException("Error reading SSH protocol banner"),
    "NoValidConnectionsError": paramiko.ssh_exception.NoValidConnectionsError(
        {("127.0.0.1", 22): ConnectionRefusedError(111, "Connection refused")}
    ),
    "AuthenticationException": paramiko.AuthenticationException("Authentication failed."),
    "ProxyCommandFailure": paramiko.ProxyCommandFailure("ssh -W %h:%p bastion", "broken pipe"),
    "gaierror": socket.gaierror(-2, "Name or service not known"),
    "EOFError": EOFError(),
    "OSError": OSError(113, "No route to host"),
    "timeout": TimeoutError("timed out"),
}


@pytest.mark.parametrize("raised", SSH_CONNECT_ERRORS.values(), ids=SSH_CONNECT_ERRORS.keys())
def test_every_ssh_connect_error_is_unreachable(raised: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: Any) -> None:
        raise raised

    monkeypatch.setattr(docker.transport.sshconn.SSHHTTPAdapter, "_connect", connect)
    host = "ssh://deploy@node1.example:2222"
    with EngineAdapter(EngineSettings(host=host)) as engine, pytest.raises(EngineError) as error:
        engine.info()
    assert_unreachable(error, host)
    assert type(raised).__name__ in str(error.value) or str(raised) in str(error.value)


def test_a_client_whose_first_contact_fails_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ssh:// client is connected once built: dropped without close(), its SSH connection would stay open
    for every retry (an Engine down behind a working sshd)."""
    closed: list[object] = []

    def refuse(self: Any) -> str:
        raise docker.errors.DockerException("Error while fetching server API version: EOFError")

    def close(self: Any) -> None:
        closed.append(self)

    monkeypatch.setattr(Client, "_retrieve_server_version", refuse)
    monkeypatch.setattr(Client, "close", close)
    host = f"tcp://127.0.0.1:{closed_port()}"
    with EngineAdapter(EngineSettings(host=host)) as engine, pytest.raises(EngineUnreachableError, match="EOFError"):
        engine.ping()
    assert len(closed) == 1


@pytest.mark.parametrize(
    "behaviour", ["hang", "garbage", "not-json"], ids=["accepts-and-hangs", "answers-garbage", "answers-not-json"]
)
def test_an_endpoint_that_is_no_engine_is_unreachable_at_connect(behaviour: str) -> None:
    with OddServer(behaviour, answers_version=False) as server:
        host = f"tcp://127.0.0.1:{server.port}"
        with (
            EngineAdapter(EngineSettings(host=host, timeout_seconds=0.1)) as engine,
            pytest.raises(EngineError) as error,
        ):
            engine.ping()
    assert_unreachable(error, host)


def test_tls_to_an_endpoint_that_speaks_plain_http_is_unreachable(fake: Any) -> None:
    host = fake.docker_host
    settings = EngineSettings(host=host, tls=True, tls_verify=False, timeout_seconds=2)
    with EngineAdapter(settings) as engine, pytest.raises(EngineError) as error:
        engine.ping()
    assert_unreachable(error, host)


# --- after connecting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["hang", "garbage"], ids=["accepts-and-hangs", "answers-garbage"])
@pytest.mark.parametrize("call", ["info", "snapshot", "inspect-node", "events"])
def test_an_endpoint_that_hangs_or_answers_garbage_is_unreachable(behaviour: str, call: str) -> None:
    with OddServer(behaviour) as server:
        host = f"tcp://127.0.0.1:{server.port}"
        with EngineAdapter(EngineSettings(host=host, timeout_seconds=0.1)) as engine:
            engine.ping()  # connected: /version and /_ping answer
            with pytest.raises(EngineError) as error:
                CALLS[call](engine)
    assert_unreachable(error, host)


@pytest.mark.parametrize("call", ["info", "snapshot"])
def test_an_answer_that_is_not_json_is_an_engine_error(call: str) -> None:
    """A whole HTTP answer with a success status came: that is no transport failure, but not a raw decoder
    error either."""
    with OddServer("not-json") as server:
        host = f"tcp://127.0.0.1:{server.port}"
        with EngineAdapter(EngineSettings(host=host, timeout_seconds=2)) as engine:
            engine.ping()
            with pytest.raises(EngineError, match="not valid JSON"):
                CALLS[call](engine)


# Raised where a live connection fails: while a request is sent or its answer read (ssh: the channel; tcp: the
# socket; TLS: the record layer).
SEND_ERRORS: dict[str, BaseException] = {
    "SSHException": paramiko.SSHException("SSH session not active"),
    "ChannelException": paramiko.ChannelException(2, "Connect failed"),
    "EOFError": EOFError(),
    "ConnectionResetError": ConnectionResetError(104, "Connection reset by peer"),
    "BrokenPipeError": BrokenPipeError(32, "Broken pipe"),
    "OSError": OSError(113, "No route to host"),
    "SSLError": ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed"),
    "timeout": TimeoutError("timed out"),
}


@pytest.mark.parametrize("call", ["info", "snapshot", "inspect-node", "events"])
@pytest.mark.parametrize("raised", SEND_ERRORS.values(), ids=SEND_ERRORS.keys())
def test_every_failure_of_a_live_connection_is_unreachable(
    fake: Any, raised: BaseException, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = fake.docker_host
    with EngineAdapter(EngineSettings(host=host, timeout_seconds=2)) as engine:
        engine.snapshot()  # connected, and the pool path is set up
        original = urllib3.connectionpool.HTTPConnectionPool._make_request

        def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise raised

        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "_make_request", failing)
        with pytest.raises(EngineError) as error:
            CALLS[call](engine)
        assert_unreachable(error, host)
        # The failure closed the client; once the Engine answers again, so does the adapter.
        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "_make_request", original)
        assert engine.snapshot().nodes


def test_a_bootstrap_join_that_fails_in_transport_is_unreachable(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake.docker_host
    with SwarmEngine(EngineSettings(host=host, timeout_seconds=2)) as engine:
        engine.ping()

        def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise paramiko.SSHException("SSH session not active")

        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "_make_request", failing)
        with pytest.raises(EngineError) as error:
            engine.join_swarm("10.0.0.1", "SWMTKN-1-secret", "10.0.0.2")
    assert_unreachable(error, host)
    assert "SWMTKN-1-secret" not in str(error.value)


# --- the event stream ------------------------------------------------------------------------------------


def test_a_quiet_event_stream_outlives_the_timeout(fake: Any) -> None:
    """The timeout bounds the wait for the stream's headers, not the quiet between two events."""
    with EngineAdapter(EngineSettings(host=fake.docker_host, timeout_seconds=0.1)) as engine:
        stream = engine.events({"type": ["node"]})
        seen: list[str] = []

        def read() -> None:
            seen.extend(f"{e.type} {e.action}" for e in stream)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            reader.join(timeout=0.25)  # two and a half timeouts of quiet
            assert reader.is_alive()
            fake.set_node_state("node2", "down")
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stream.close()
            reader.join(timeout=5)
    assert seen[:1] == ["node update"]


@pytest.mark.parametrize("raised", SEND_ERRORS.values(), ids=SEND_ERRORS.keys())
def test_an_event_stream_that_fails_ends_quietly(raised: BaseException) -> None:
    """The watcher re-opens the stream and a resync covers what was missed; a raw error would end its thread."""

    def stream() -> Iterator[dict[str, Any]]:
        yield {"Type": "node", "Action": "update", "Actor": {"ID": "n1"}}
        raise raised

    events = EventStream(stream())
    assert [(e.type, e.action, e.actor_id) for e in events] == [("node", "update", "n1")]


def test_gets_survive_the_sdk_closing_their_pool(fake: Any) -> None:
    """The SDK's unix-socket adapter keeps 25 pools keyed by the whole URL and closes the one it evicts; every
    write has a URL of its own, so the pool the GETs use gets closed under them. They take a new one."""
    with EngineAdapter(EngineSettings(host=fake.docker_host)) as engine:
        engine.snapshot()
        assert engine.reads_through_pool
        first = engine._pool[1]  # type: ignore[index]
        client = engine._client
        # What the SDK's LRU does to the pool it evicts: forgets it, and closes it.
        client.get_adapter(client._url("/")).poolmanager.clear()
        first.close()
        assert engine.snapshot().nodes
        assert engine._pool[1] is not first  # type: ignore[index]
