"""A fault-injecting proxy in front of a Docker Engine: forwards everything faithfully, except what its rules say.

Why: Orcastra has to survive a manager that answers 500 ("raft: no leader") while an election runs, a 409 on a
stale version, a slow or silent daemon, a connection reset, an answer cut short. The proxy produces each of these
on demand, in front of a real lab manager (``unix:///...``) or the fake Engine (``tcp://127.0.0.1:PORT``), without
changing Orcastra: point its ``DOCKER_HOST`` at ``proxy.docker_host``. Standard library only; the product package
``orcastra`` never imports it.

Usage::

    with FaultProxy(fake.docker_host) as proxy:
        proxy.set_rules([Rule("status", "GET", r"^/tasks$", status=500, message="raft: no leader", fraction=0.3)])
        ... DOCKER_HOST=proxy.docker_host ...
        proxy.stats()  # FaultStats(requests=..., forwarded=..., faults={"status": ...}, upstream_errors=0)

HTTP handling: one request per client connection. The proxy reads the request head and its Content-Length body
(a chunked request body is refused with 411), applies the first rule that fires, and otherwise forwards the
request upstream with ``Connection: close``; the answer is relayed to the client as it comes until the upstream
closes (streams such as ``GET /events`` and chunked bodies pass through), its head rewritten to say
``Connection: close`` so clients (docker-py / urllib3) reconnect for the next request. Bytes the client sends after
its request are relayed upstream too, and a client that hangs up ends the upstream connection at once. An
upstream that cannot be reached is a 502 ``{"message": ...}``.

Rules (``Rule``, tried in order; the first that matches *and* fires applies):
- ``method``: an HTTP method or ``*``; ``path``: a regex searched (``re.search``) on the path without its
  ``/vX.Y`` prefix and without the query (``/v1.41/tasks?filters=...`` is matched as ``/tasks``);
- ``fraction`` (0..1): the share of matching requests it applies to, drawn from a ``random.Random`` seeded by
  ``set_rules`` (the proxy's ``seed`` unless given), so the same rules over the same requests inject the same
  faults; a draw is taken only for a fraction strictly between 0 and 1, per matching rule that still has count;
- ``count``: at most that many injections (None: no limit); ``set_rules`` starts every count afresh;
- ``action``:
  - ``status``: answered at once with ``status`` and ``{"message": message}`` (not forwarded; an empty message
    says ``fault injected by orcastra_lab.faults``);
  - ``delay``: forwarded after ``seconds`` (a client that hangs up meanwhile ends it, nothing forwarded);
  - ``hang``: never answered, until the client hangs up or the proxy closes (not forwarded);
  - ``reset``: the client's connection is closed abruptly, an RST (SO_LINGER 0) (not forwarded);
  - ``truncate``: forwarded, the answer cut after ``after_bytes`` bytes of its body as sent (chunk framing
    included) and the connection closed; an answer no longer than that passes whole.
A fault is counted in ``stats()`` when its rule fires (a truncate of a shorter answer too).

CLI: ``python -m orcastra_lab.faults --upstream unix:///var/run/docker.sock --port 2399 --rule 'GET /tasks 500 0.3'``
prints ``docker_host=tcp://127.0.0.1:PORT`` and serves until SIGTERM or SIGINT (then prints its counters on
stderr). ``--rule`` may be repeated; ``--seed N``; ``-v`` logs every injected fault. A rule is written::

    METHOD PATH ACTION [FRACTION] [count=N] [message=TEXT]

- METHOD: ``GET``, ``POST``, ... or ``*``; PATH: the regex, without spaces (``\\s`` if needed);
- ACTION: a status code (``500``, ``503``, ``409``...), ``delay:SECONDS``, ``hang``, ``reset``, ``truncate:BYTES``;
- FRACTION: 0..1, default 1; ``count=N``: at most N times; ``message=TEXT``: the status answer's message
  (shell-like quoting after PATH: ``message="rpc error: code = Unknown desc = update out of sequence"``).

Examples: ``'GET ^/tasks$ 500 0.3 message="rpc error: code = Unknown desc = raft: no leader"'``,
``'POST ^/services/[^/]+/update$ 409 count=1'``, ``'* ^/nodes delay:2 0.5'``, ``'GET ^/events hang'``,
``'GET ^/services$ truncate:100'``, ``'* . reset 0.1'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import selectors
import shlex
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn

log = logging.getLogger(__name__)

ACTIONS = ("status", "delay", "hang", "reset", "truncate")
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
MAX_HEAD = 64 * 1024  # a request or response head larger than this is not HTTP we relay
BUFFER = 64 * 1024
CONNECT_TIMEOUT = 5.0
JOIN_TIMEOUT = 5.0
LINGER = 1.0  # how long a refused request's remaining bytes are read before its connection closes
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection"})


@dataclass(frozen=True)
class Rule:
    """What to do to the requests that match (see the module docstring)."""

    action: str
    method: str = "*"
    path: str = ""  # regex, re.search on the path without /vX.Y and query; "" matches every path
    fraction: float = 1.0
    count: int | None = None
    status: int = 500  # action "status"
    message: str = ""  # action "status"; "" -> "fault injected by orcastra_lab.faults"
    seconds: float = 0.0  # action "delay"
    after_bytes: int = 0  # action "truncate"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r} (one of {', '.join(ACTIONS)})")
        object.__setattr__(self, "method", self.method.upper())
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be within 0..1, not {self.fraction}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must not be negative, not {self.count}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be within 100..599, not {self.status}")
        if self.seconds < 0 or self.after_bytes < 0:
            raise ValueError("seconds and after_bytes must not be negative")
        try:
            re.compile(self.path)
        except re.error as e:
            raise ValueError(f"invalid path regex {self.path!r}: {e}") from e


def parse_rule(text: str) -> Rule:
    """``METHOD PATH ACTION [FRACTION] [count=N] [message=TEXT]`` (the CLI's syntax) -> a Rule; ValueError."""
    parts = text.split(None, 2)
    if len(parts) < 3:
        raise ValueError(f"a rule is 'METHOD PATH ACTION [FRACTION] [count=N] [message=TEXT]', not {text!r}")
    method, path, rest = parts
    kwargs: dict[str, Any] = {"method": method, "path": path}
    try:
        action, *options = shlex.split(rest) or [""]
        name, colon, arg = action.partition(":")
        if name.isdigit() and not colon:
            kwargs.update(action="status", status=int(name))
        elif name == "delay" and arg:
            kwargs.update(action="delay", seconds=float(arg))
        elif name == "truncate" and arg:
            kwargs.update(action="truncate", after_bytes=int(arg))
        elif name in ("hang", "reset") and not colon:
            kwargs.update(action=name)
        else:
            raise ValueError(f"unknown action {action!r}: NNN, delay:SECONDS, hang, reset or truncate:BYTES")
        for i, option in enumerate(options):
            key, eq, value = option.partition("=")
            if i == 0 and not eq:
                kwargs["fraction"] = float(option)
            elif key == "count" and eq:
                kwargs["count"] = int(value)
            elif key == "message" and eq:
                kwargs["message"] = value
            else:
                raise ValueError(f"unknown option {option!r}")
        return Rule(**kwargs)
    except ValueError as e:
        raise ValueError(f"rule {text!r}: {e}") from e


@dataclass(frozen=True)
class FaultStats:
    """Requests read (malformed ones refused aside), forwarded upstream (delayed and truncated ones included),
    faults injected per action, and requests answered 502 because the upstream could not be reached."""

    requests: int = 0
    forwarded: int = 0
    faults: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    upstream_errors: int = 0


@dataclass
class _Active:
    rule: Rule
    pattern: re.Pattern[str]
    remaining: int | None


@dataclass
class _Request:
    method: str
    path: str  # without /vX.Y and query
    head: bytes  # rewritten for upstream: Connection: close
    rest: bytes  # the body, and whatever the client sent after it


class _Closed(Exception):
    """The proxy closes, or the client hung up: the connection ends."""


def _parse_upstream(upstream: str) -> tuple[int, Any]:
    if upstream.startswith("unix://"):
        path = upstream[len("unix://") :]
        if not path:
            raise ValueError(f"no socket path in {upstream!r}")
        return socket.AF_UNIX, path
    m = re.fullmatch(r"(?:tcp|http)://(\[[^\]]+\]|[^:/]+)(?::(\d+))?/?", upstream)
    if not m:
        raise ValueError(f"upstream must be unix:///PATH or tcp://HOST:PORT, not {upstream!r}")
    return socket.AF_INET6 if m[1].startswith("[") else socket.AF_INET, (m[1].strip("[]"), int(m[2] or 2375))


class FaultProxy:
    """The proxy on 127.0.0.1 (``port`` 0: a free one), one thread per client connection; a context manager.

    ``set_rules``, ``clear`` and ``stats`` are thread-safe. ``close()`` hangs up on every client and upstream
    connection, joins every thread and closes every socket."""

    def __init__(self, upstream: str, port: int = 0, *, seed: int = 0) -> None:
        self.upstream = upstream
        self.seed = seed
        self._family, self._address = _parse_upstream(upstream)
        self._lock = threading.Lock()  # rules, random draws, counters, open sockets and threads
        self._rules: list[_Active] = []
        self._random = random.Random(seed)
        self._requests = self._forwarded = self._upstream_errors = 0
        self._faults = dict.fromkeys(ACTIONS, 0)
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))
        self._port = int(self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()  # readable once closing: wakes every wait at once
        self._accept_thread = threading.Thread(target=self._accept_loop, name="faults-accept", daemon=True)

    @property
    def port(self) -> int:
        return self._port

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stops accepting, ends every connection (a hanging or delayed one too), joins every thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread.ident is not None:
            self._accept_thread.join(JOIN_TIMEOUT)
        with self._lock:
            threads = list(self._threads)
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rules and counters --------------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule], *, seed: int | None = None) -> None:
        """Replaces the rules; every count starts afresh and the draws restart from ``seed`` (the proxy's)."""
        active = [_Active(r, re.compile(r.path), r.count) for r in rules]
        with self._lock:
            self._rules = active
            self._random = random.Random(self.seed if seed is None else seed)

    def clear(self) -> None:
        """No rules: everything passes through."""
        self.set_rules([])

    @property
    def rules(self) -> tuple[Rule, ...]:
        with self._lock:
            return tuple(a.rule for a in self._rules)

    def stats(self) -> FaultStats:
        with self._lock:
            return FaultStats(self._requests, self._forwarded, dict(self._faults), self._upstream_errors)

    def _decide(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self._requests += 1
            for a in self._rules:
                if a.rule.method not in ("*", method) or not a.pattern.search(path):
                    continue
                if a.remaining is not None and a.remaining <= 0:
                    continue
                f = a.rule.fraction
                if f <= 0.0 or (f < 1.0 and self._random.random() >= f):
                    continue
                if a.remaining is not None:
                    a.remaining -= 1
                self._faults[a.rule.action] += 1
                return a.rule
        return None

    def _count(self, forwarded: int = 0, upstream_errors: int = 0) -> None:
        with self._lock:
            self._forwarded += forwarded
            self._upstream_errors += upstream_errors

    # --- accepting --------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._listener and not self._closing.is_set():
                        self._accept()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        thread = threading.Thread(target=self._serve, args=(client,), name="faults-conn", daemon=True)
        with self._lock:
            self._sockets.add(client)
            self._threads.add(thread)
        thread.start()

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    # --- one connection ---------------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            request = self._read_request(client)
            rule = self._decide(request.method, request.path)
            if rule is not None:
                log.info("fault %s on %s %s", rule.action, request.method, request.path)
            if rule is None or rule.action in ("delay", "truncate"):
                if rule is not None and rule.action == "delay":
                    self._wait(client, rule.seconds)
                upstream = self._connect(client)
                if upstream is not None:
                    cut = rule.after_bytes if rule is not None and rule.action == "truncate" else None
                    self._relay(client, upstream, request, cut)
            elif rule.action == "status":
                message = rule.message or "fault injected by orcastra_lab.faults"
                _answer(client, rule.status, message)
            elif rule.action == "hang":
                self._wait(client, None)
            else:  # reset: the client's next read fails with ECONNRESET
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (_Closed, OSError, ValueError):  # ValueError: a socket closed under a late thread
            pass
        finally:
            if upstream is not None:
                self._forget(upstream)
            self._forget(client)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _readable(self, socks: list[socket.socket], timeout: float | None) -> list[Any]:
        """The sockets that can be read within ``timeout``; _Closed when the proxy closes."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            for sock in socks:
                selector.register(sock, selectors.EVENT_READ)
            ready = [key.fileobj for key, _ in selector.select(timeout)]
        if self._wake_r in ready or self._closing.is_set():
            raise _Closed
        return ready

    def _recv(self, sock: socket.socket) -> bytes:
        self._readable([sock], None)
        data = sock.recv(BUFFER)
        if not data:
            raise _Closed
        return data

    def _read_request(self, client: socket.socket) -> _Request:
        buffer = b""
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEAD:
                self._refuse(client, 431, "request head too large")
            buffer += self._recv(client)
        lines = buffer[:end].split(b"\r\n")
        try:
            method, target, _version = lines[0].decode("latin-1").split(" ")
        except ValueError:
            self._refuse(client, 400, "malformed request line")
        headers = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
        length = 0
        for line in headers:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and value.strip().lower() != b"identity":
                self._refuse(client, 411, "chunked request bodies are not supported: send a Content-Length")
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    self._refuse(client, 400, "malformed Content-Length")
        rest = buffer[end + 4 :]
        while len(rest) < length:  # the whole body first: closing on unread data would reset the connection
            rest += self._recv(client)
        path = VERSION_PREFIX.sub("", target.split("?", 1)[0].split("#", 1)[0])
        head = b"\r\n".join([lines[0], *headers, b"Connection: close", b"", b""])
        return _Request(method.upper(), path, head, rest)

    def _refuse(self, client: socket.socket, status: int, message: str) -> NoReturn:
        """An error answer, then what the client still sends is read and dropped until it closes (at most
        LINGER seconds): closing on unread data would reset the connection before the client reads the answer."""
        _answer(client, status, message)
        client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0 and self._readable([client], left) and client.recv(BUFFER):
            pass
        raise _Closed

    def _wait(self, client: socket.socket, seconds: float | None) -> None:
        """``seconds`` (None: for ever) pass; _Closed when the client hangs up or the proxy closes first."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if self._readable([client], left) and not client.recv(BUFFER):
                raise _Closed  # anything else a client sends while it waits is dropped

    def _connect(self, client: socket.socket) -> socket.socket | None:
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        with self._lock:
            self._sockets.add(upstream)
        try:
            upstream.settimeout(CONNECT_TIMEOUT)
            upstream.connect(self._address)
            upstream.settimeout(None)
        except OSError as e:
            self._forget(upstream)
            self._count(upstream_errors=1)
            _answer(client, 502, f"cannot reach the upstream Engine at {self.upstream}: {e}")
            return None
        if self._family != socket.AF_UNIX:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket, request: _Request, cut: int | None) -> None:
        """The request upstream, then bytes both ways until either side closes; the answer's head says
        ``Connection: close``, and with ``cut`` its body ends after that many bytes."""
        upstream.sendall(request.head + request.rest)
        self._count(forwarded=1)
        head: bytes | None = b""  # None once the answer's head went out
        left = cut
        while True:
            for sock in self._readable([client, upstream], None):
                data = sock.recv(BUFFER)
                if not data:
                    return
                if sock is client:
                    upstream.sendall(data)
                    continue
                body_at = 0
                if head is not None:  # the answer's head: gathered whole, then said Connection: close
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0 and len(head) <= MAX_HEAD:
                        continue
                    if end >= 0:
                        rewritten = _close_head(head[: end + 4])
                        data, body_at = rewritten + head[end + 4 :], len(rewritten)
                    else:  # not an HTTP head: relayed as it is
                        data, body_at = head, len(head)
                    head = None
                if left is not None:
                    if len(data) - body_at >= left:
                        client.sendall(data[: body_at + left])
                        return
                    left -= len(data) - body_at
                client.sendall(data)


def _close_head(head: bytes) -> bytes:
    """A response head saying ``Connection: close`` (a 1xx, e.g. an upgrade for a hijacked stream, as it is)."""
    lines = head[:-4].split(b"\r\n")
    if lines[0][9:10] == b"1":
        return head
    kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
    return b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""])


def _answer(client: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode() + b"\n"
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Fault"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    client.sendall(head.encode("latin-1") + body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--upstream",
        default=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
        help="the Engine: unix:///PATH or tcp://HOST:PORT (default: $DOCKER_HOST, else unix:///var/run/docker.sock)",
    )
    ap.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    rule_help = "METHOD PATH ACTION [FRACTION] [count=N] [message=TEXT], repeatable"
    ap.add_argument("--rule", action="append", default=[], help=rule_help)
    ap.add_argument("--seed", type=int, default=0, help="seeds the fraction draws (default 0)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every injected fault on stderr")
    args = ap.parse_args(argv)
    try:
        rules = [parse_rule(r) for r in args.rule]
        proxy = FaultProxy(args.upstream, args.port, seed=args.seed)
    except (ValueError, OSError) as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    proxy.set_rules(rules)
    with proxy:
        print(f"docker_host={proxy.docker_host}", flush=True)
        while not stop.wait(1):
            pass
    print(proxy.stats(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
