"""Observability for ``orcastra run``: Prometheus metrics, a health state, and the HTTP listener serving both.

``Metrics`` owns its own ``CollectorRegistry`` (never the process-wide default), so tests and several
instances in one process do not collide. ``HealthState`` is what ``GET /healthz`` reports; a load balancer
or an orchestrator probe reads its status code. ``ApiServer`` is a small standard-library HTTP server
(``ThreadingHTTPServer``) with ``/healthz``, ``/metrics`` and a hook for extra routes added later.

The daemon feeds ``Metrics`` and ``HealthState`` after each cycle; the server threads only read them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orcastra import __version__
from orcastra.errors import PermanentError, cut

log = logging.getLogger(__name__)

# A cycle is a handful of list calls plus a few updates: milliseconds normally, seconds when the Engine is slow.
CYCLE_DURATION_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# serve_forever checks for shutdown this often when nothing connects. stop() does not wait for it: it connects
# once to wake the loop. (Every wake-up of an idle process costs CPU: at 0.1 s this thread alone was 0.15 % of
# a core.)
SHUTDOWN_POLL_INTERVAL_SECONDS = 5.0
# A client that stalls mid-request must not hold a handler thread forever.
REQUEST_TIMEOUT_SECONDS = 10.0
# Extra routes (commands) take small JSON bodies; refuse anything larger before reading it.
MAX_REQUEST_BODY_BYTES = 64 * 1024
JSON_CONTENT_TYPE = "application/json"

Role = Literal["leader", "follower", "starting"]
ROLES: tuple[Role, ...] = ("leader", "follower", "starting")


# --- metrics -----------------------------------------------------------------------------------------


class Metrics:
    """Orcastra's Prometheus metrics, on a registry of their own."""

    content_type: str = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # prometheus_client appends "_total" to counter names itself.
        self._cycles = Counter("orcastra_cycles", "Reconcile cycles, by result (ok | failed).", ["result"], registry=r)
        self._actions = Counter(
            "orcastra_actions",
            "Actions handled by the executor, by kind and result (ok | dry-run | conflict | error | skipped).",
            ["kind", "result"],
            registry=r,
        )
        self._cycle_duration = Histogram(
            "orcastra_cycle_duration_seconds",
            "Wall time of one reconcile cycle.",
            buckets=CYCLE_DURATION_BUCKETS_SECONDS,
            registry=r,
        )
        self._engine_calls = Counter("orcastra_engine_calls", "Docker Engine API calls made by cycles.", registry=r)
        self._cycle_engine_calls = Gauge(
            "orcastra_cycle_engine_calls", "Docker Engine API calls made by the last cycle.", registry=r
        )
        self._anchor_colocated = Gauge(
            "orcastra_anchor_colocated",
            "1 when the anchor's dependents run on its node, else 0.",
            ["anchor"],
            registry=r,
        )
        self._anchor_restart_attempts = Gauge(
            "orcastra_anchor_restart_attempts",
            "Restart attempts made for the anchor's dependents.",
            ["anchor"],
            registry=r,
        )
        self._anchor_next_restart = Gauge(
            "orcastra_anchor_next_restart_timestamp_seconds",
            "When the next restart of the anchor's dependents is due (Unix time), 0 when none is planned.",
            ["anchor"],
            registry=r,
        )
        self._leader = Gauge("orcastra_leader", "1 when this instance is the active leader, else 0.", registry=r)
        self._last_good_cycle = Gauge(
            "orcastra_last_good_cycle_timestamp_seconds",
            "When the last successful cycle finished (Unix time).",
            registry=r,
        )
        build_info = Gauge("orcastra_build_info", "Orcastra build information; always 1.", ["version"], registry=r)
        build_info.labels(version=__version__).set(1)
        # Export both results from the start: rate() and alerts on "failed" need the series to exist at 0.
        for result in ("ok", "failed"):
            self._cycles.labels(result=result)
        self._moves = Counter(
            "orcastra_rebalance_moves",
            "Rebalancing moves, by result (planned | ok | rolled-back).",
            ["result"],
            registry=r,
        )
        for result in ("planned", "ok", "rolled-back"):
            self._moves.labels(result=result)
        self._node_memory = Gauge(
            "orcastra_node_memory_used_ratio",
            "Node memory in use (0..1) as the rebalancer read it.",
            ["node"],
            registry=r,
        )
        self._nodes: set[str] = set()
        # set_anchor_status replaces the whole anchor set; the lock keeps "which anchors are exported" consistent.
        self._anchor_lock = threading.Lock()
        self._anchors: set[str] = set()

    def observe_cycle(self, seconds: float, engine_calls: int, ok: bool, now: float) -> None:
        """Record one finished cycle: its duration, its Engine calls, its result; ``now`` is Unix time."""
        if engine_calls < 0:
            raise ValueError(f"engine_calls must be >= 0, got {engine_calls}")
        self._cycles.labels(result="ok" if ok else "failed").inc()
        self._cycle_duration.observe(seconds)
        self._engine_calls.inc(engine_calls)
        self._cycle_engine_calls.set(engine_calls)
        if ok:
            self._last_good_cycle.set(now)

    def observe_action(self, kind: str, result: str) -> None:
        """Count one action outcome, e.g. ``("update-service", "conflict")``."""
        self._actions.labels(kind=kind, result=result).inc()

    def set_anchor_status(self, statuses: Iterable[tuple[str, bool, int, float | None]]) -> None:
        """Export each anchor's (name, colocated, restart attempts, next restart time or None).

        Anchors missing from ``statuses`` lose their series, so a removed anchor does not linger at its last value.
        """
        with self._anchor_lock:
            seen: set[str] = set()
            for anchor, colocated, attempts, next_restart_at in statuses:
                seen.add(anchor)
                self._anchor_colocated.labels(anchor=anchor).set(1 if colocated else 0)
                self._anchor_restart_attempts.labels(anchor=anchor).set(attempts)
                self._anchor_next_restart.labels(anchor=anchor).set(next_restart_at or 0)
            for gone in self._anchors - seen:
                for gauge in (self._anchor_colocated, self._anchor_restart_attempts, self._anchor_next_restart):
                    gauge.remove(gone)
            self._anchors = seen

    def observe_move(self, result: str) -> None:
        """Count one rebalancing move: planned, then ok or rolled-back."""
        self._moves.labels(result=result).inc()

    def set_node_memory(self, used_ratio: Mapping[str, float]) -> None:
        """Export each node's memory use (0..1); nodes no longer reported lose their series."""
        with self._anchor_lock:
            for node, ratio in used_ratio.items():
                self._node_memory.labels(node=node).set(ratio)
            for gone in self._nodes - used_ratio.keys():
                self._node_memory.remove(gone)
            self._nodes = set(used_ratio)

    def set_leader(self, is_leader: bool) -> None:
        self._leader.set(1 if is_leader else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


# --- health ------------------------------------------------------------------------------------------


class HealthState:
    """What ``/healthz`` reports. Written by the daemon loop, read by server threads, hence the lock.

    A follower is healthy by definition (it has nothing to reconcile). A leader is healthy while its last good
    cycle is younger than ``stale_after_seconds``. "starting" is degraded until the first role is known.
    """

    def __init__(self, stale_after_seconds: float, role: Role = "starting") -> None:
        if stale_after_seconds <= 0:
            raise ValueError(f"stale_after_seconds must be > 0, got {stale_after_seconds}")
        _check_role(role)
        self._lock = threading.Lock()
        self._stale_after_seconds = float(stale_after_seconds)
        self._role: Role = role
        self._last_good_cycle_at: float | None = None
        self._last_error: str | None = None

    @property
    def stale_after_seconds(self) -> float:
        return self._stale_after_seconds

    @property
    def role(self) -> Role:
        with self._lock:
            return self._role

    @property
    def last_good_cycle_at(self) -> float | None:
        with self._lock:
            return self._last_good_cycle_at

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def set_role(self, role: Role) -> None:
        _check_role(role)
        with self._lock:
            self._role = role

    def cycle_ok(self, now: float) -> None:
        """A cycle succeeded at ``now``; the previous error no longer describes the current state, so clear it."""
        with self._lock:
            self._last_good_cycle_at = now
            self._last_error = None

    def cycle_failed(self, now: float, error: str) -> None:
        """A cycle failed; ``now`` is accepted for symmetry and future use (the age is measured from good cycles)."""
        del now
        with self._lock:
            self._last_error = cut(error)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The ``/healthz`` body: status ("ok" | "degraded"), role, last good cycle age in seconds, last error."""
        with self._lock:
            role, last_good, last_error = self._role, self._last_good_cycle_at, self._last_error
        # Clamp: a clock step backwards must not produce a negative age.
        age = None if last_good is None else max(0.0, now - last_good)
        fresh = age is not None and age < self._stale_after_seconds
        ok = role == "follower" or (role == "leader" and fresh)
        return {
            "status": "ok" if ok else "degraded",
            "role": role,
            "last_good_cycle_age_seconds": age,
            "last_error": last_error,
        }


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


# --- HTTP --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """An HTTP request as extra routes see it. ``path`` has no query string (it is in ``query``); header
    names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: str = ""


@dataclass(frozen=True)
class Response:
    """What a route answers; ``headers`` are extra response headers (e.g. ``Allow``, ``WWW-Authenticate``)."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


Route = Callable[[Request], Response]


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode() + b"\n", JSON_CONTENT_TYPE, dict(headers or {}))


def parse_listen_address(listen: str) -> tuple[str, int, socket.AddressFamily]:
    """Split ``"host:port"`` or ``"[ipv6]:port"`` into (host, port, address family).

    Raises ``ValueError`` (so a config validator can report it as a field problem).
    """
    expected = "expected HOST:PORT, e.g. 127.0.0.1:9180 or [::1]:9180"
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid listen address {listen!r}: {expected}")
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {listen!r}: {host!r} is not an IPv6 address") from None
        family = socket.AF_INET6
    elif ":" in host:
        # Unbracketed IPv6 is ambiguous ("::1:9180"): is 9180 the port or part of the address?
        raise ValueError(f"invalid listen address {listen!r}: put an IPv6 address in brackets, e.g. [::1]:9180")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {listen!r}: port must be a number from 0 to 65535")
    return host, int(port_text), family


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, dispatch: Callable[[Request], Response]
    ) -> None:
        # TCPServer.__init__ creates the socket from self.address_family, so set it before calling it.
        self.address_family = family
        self.dispatch = dispatch
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall startup for
        # seconds on hosts without working DNS; the name is only used for CGI, which we do not serve.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; keep it in the log instead.
        log.exception("api: error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = f"orcastra/{__version__}"
    sys_version = ""  # do not advertise the Python version
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        assert isinstance(self.server, _HttpServer)
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            self._send(json_response(400, {"error": "invalid Content-Length"}))
            return
        if length > MAX_REQUEST_BODY_BYTES:
            self._send(json_response(413, {"error": f"body larger than {MAX_REQUEST_BODY_BYTES} bytes"}))
            return
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=MappingProxyType({k.lower(): v for k, v in self.headers.items()}),
            body=body,
            query=urlsplit(self.path).query,
        )
        try:
            response = self.server.dispatch(request)
        except Exception:
            log.exception("api: %s %s failed", request.method, request.path)
            response = json_response(500, {"error": "internal error"})
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: %s %s", self.address_string(), format % args)


def _wake(server: _HttpServer) -> None:
    """Connect once to the listening socket (a wildcard address through loopback) and hang up."""
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    with contextlib.suppress(OSError), socket.create_connection((str(host), int(port)), timeout=0.5):
        pass


class ApiServer:
    """HTTP listener for ``/healthz``, ``/metrics`` and optional extra ``routes`` keyed by (method, path).

    ``start()`` binds and serves from a background thread; ``stop()`` shuts down and closes the socket.
    Also a context manager (``with ApiServer(...) as api:``) that starts and stops it.
    """

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        health: HealthState,
        routes: Mapping[tuple[str, str], Route] | None = None,
    ) -> None:
        try:
            self._host, self._port, self._family = parse_listen_address(listen)
        except ValueError as e:
            raise PermanentError(str(e)) from e
        self.listen = listen
        self._metrics = metrics
        self._health = health
        self._builtin: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/metrics"): self._render_metrics,
        }
        extra = dict(routes or {})
        clash = sorted(f"{m} {p}" for m, p in extra.keys() & self._builtin.keys())
        if clash:
            raise ValueError(f"routes may not replace built-in endpoints: {', '.join(clash)}")
        self._routes = {**self._builtin, **extra}
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when ``listen`` asked for port 0) once started."""
        return self._server.server_port if self._server is not None else self._port

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"API server on {self.listen} already started")
        try:
            self._server = _HttpServer((self._host, self._port), self._family, self._dispatch)
        except OSError as e:
            raise PermanentError(f"cannot listen on {self.listen}: {e.strerror or e}") from e
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_INTERVAL_SECONDS},
            name="orcastra-api",
            daemon=True,
        )
        self._thread.start()
        log.info("api: listening on %s (port %d)", self.listen, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice or before ``start()``."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # shutdown() waits for serve_forever to notice, which it does when its select() returns: connect to
        # the socket until it has. Handler threads are daemon threads and are not joined, so a stalled client
        # cannot make stop() hang.
        stopper = threading.Thread(target=server.shutdown, name="orcastra-api-stop", daemon=True)
        stopper.start()
        deadline = time.monotonic() + 2 * SHUTDOWN_POLL_INTERVAL_SECONDS
        while stopper.is_alive() and time.monotonic() < deadline:
            _wake(server)
            stopper.join(timeout=0.05)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _dispatch(self, request: Request) -> Response:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        allowed = sorted(method for method, path in self._routes if path == request.path)
        if allowed:
            # The path exists but not for this method (RFC 9110 15.5.6: say which methods it has).
            return json_response(405, {"error": "method not allowed"}, headers={"Allow": ", ".join(allowed)})
        return json_response(404, {"error": "not found"})

    def _healthz(self, request: Request) -> Response:
        body = self._health.snapshot(time.time())
        return json_response(200 if body["status"] == "ok" else 503, body)

    def _render_metrics(self, request: Request) -> Response:
        return Response(200, self._metrics.render(), self._metrics.content_type)
