"""A small HTTP listener (standard library ``ThreadingHTTPServer``) that serves routes keyed by (method, path).

The runtime gives it ``/healthz`` and ``/metrics`` as built-in routes and the command API as extra routes;
this module knows nothing of either. Handler threads only call the routes they are given.

Whoever can connect must not be able to take the listener away from the others (``HttpLimits``): a request
has one deadline for its request line, headers and body together (a client trickling a byte at a time is cut
with a 408, whatever a per-read timeout would allow); at most ``max_handlers`` connections are served at once
and the next one waits a moment for a free handler, then gets a 503; every connection carries one request
(``Connection: close``), so no idle keep-alive connection holds a handler; the listen backlog takes a burst.
Every answer, errors of the HTTP layer included, is JSON, and none echoes what the client sent.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from orcastra import __version__
from orcastra.errors import PermanentError

log = logging.getLogger(__name__)

# serve_forever checks for shutdown this often when nothing connects. stop() does not wait for it: it connects
# once to wake the loop. (Every wake-up of an idle process costs CPU: at 0.1 s this thread alone was 0.15 % of
# a core.)
SHUTDOWN_POLL_INTERVAL_SECONDS = 5.0
# Extra routes (commands) take small JSON bodies; refuse anything larger before reading it.
MAX_REQUEST_BODY_BYTES = 64 * 1024
JSON_CONTENT_TYPE = "application/json"
# A client refused for want of a handler is told to come back after this.
BUSY_RETRY_AFTER_SECONDS = 1
# What is read (and dropped) of a refused client's request before its connection is closed: closing a socket
# with unread bytes sends a reset, which can destroy the 503 before the client has read it.
BUSY_DRAIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """How much of the listener one client can take. The defaults suit a controller's API on loopback: a few
    operators, a health check, a Prometheus scrape, ``orcastra do``."""

    # From the accepted connection to the last byte of the body: request line, headers and body together.
    request_deadline_seconds: float = 10.0
    # Connections served at once (one handler thread each). A command waits for its result (a reboot can
    # take minutes), so this is also how many commands can be waited for at once.
    max_handlers: int = 32
    # How long connections wait for a free handler once every handler is busy, before they are answered 503:
    # a burst of quick requests is served, and clients that hold every handler get the others a quick 503
    # (the wait is counted from when the last handler was taken, not per connection).
    busy_wait_seconds: float = 1.0
    # To send an answer to a client that does not read it.
    write_timeout_seconds: float = 10.0
    max_body_bytes: int = MAX_REQUEST_BODY_BYTES
    # Connections the kernel queues until they are accepted. The standard library's 5 gave resets to a burst
    # of a hundred clients; at 128, 200 clients at once still lost SYNs (each one retried a second later).
    # Linux caps it at net.core.somaxconn (4096 on current kernels).
    listen_backlog: int = 256


# --- requests and responses -------------------------------------------------------------------------


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
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        dispatch: Callable[[Request], Response],
        limits: HttpLimits,
    ) -> None:
        # TCPServer.__init__ creates the socket from self.address_family and listens with
        # self.request_queue_size, so set them before calling it.
        self.address_family = family
        self.request_queue_size = limits.listen_backlog
        self.dispatch = dispatch
        self.limits = limits
        self._handlers = threading.BoundedSemaphore(limits.max_handlers)
        self._busy_since: float | None = None  # since when no handler has been free (the accepting thread's)
        super().__init__(address, _Handler)

    def _take_handler(self) -> bool:
        """A free handler, waiting for one at most ``busy_wait_seconds`` since every handler became busy, not
        per connection: this runs on the accepting thread, and a wait per connection in a row would hold the
        one after 30 excess connections for 30 s."""
        if self._handlers.acquire(blocking=False):
            self._busy_since = None
            return True
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        left = self._busy_since + self.limits.busy_wait_seconds - now
        if left > 0 and self._handlers.acquire(timeout=left):
            self._busy_since = None
            return True
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take_handler():
            log.debug("api: every handler busy: 503 to %s", client_address)
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._handlers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._handlers.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall startup for
        # seconds on hosts without working DNS; the name is only used for CGI, which we do not serve.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; keep it in the log instead. A client that went away
        # (reset, broken pipe, an answer it did not read in time) is not an error of ours.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("api: %s went away: %s", client_address, sys.exc_info()[1])
            return
        log.exception("api: error while serving %s", client_address)


def _answer_busy(sock: socket.socket) -> None:
    """503 to a connection no handler is free for, from the accepting thread, so without ever blocking: the
    answer is small enough for an empty send buffer, and what the client sent is read and dropped first."""
    body = json.dumps({"error": "busy: too many connections at once; try again shortly"}).encode() + b"\n"
    head = (
        f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {BUSY_RETRY_AFTER_SECONDS}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            drained = 0
            while drained < BUSY_DRAIN_BYTES and (chunk := sock.recv(BUSY_DRAIN_BYTES)):
                drained += len(chunk)
        sock.send(head.encode() + body)


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, every read bounded by what is left until the request's deadline, so a request
    takes at most that long to arrive however its bytes trickle in."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self.expired = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the request deadline passed")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise


class _Handler(BaseHTTPRequestHandler):
    server_version = f"orcastra/{__version__}"
    sys_version = ""  # do not advertise the Python version
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        limits = self.server.limits
        self._reader = _DeadlineReader(self.connection, time.monotonic() + limits.request_deadline_seconds)
        self.rfile = io.BufferedReader(self._reader)
        self._answered = False
        # What an answer needs when it is sent before the request line was read (a 408).
        self.command, self.request_version, self.requestline, self.path = "", "HTTP/1.0", "", ""

    def handle(self) -> None:
        # One request per connection (no keep-alive): an idle connection never holds a handler thread.
        self.close_connection = True
        self.handle_one_request()
        if self._reader.expired and not self._answered:
            # handle_one_request has logged the timeout and dropped the request; say so to the client.
            self.close_connection = True
            deadline = self.server.limits.request_deadline_seconds
            self._send(json_response(408, {"error": f"the request did not arrive within its {deadline:g} s deadline"}))

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

    def _read_body(self) -> bytes | Response:
        """The body the Content-Length announces, or the answer that refuses it."""
        limit = self.server.limits.max_body_bytes
        if self.headers.get("Transfer-Encoding") is not None:
            return json_response(411, {"error": "send the body with a Content-Length (not chunked)"})
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or ["0"]}
        text = lengths.pop() if len(lengths) == 1 else ""
        if not (text.isascii() and text.isdigit()):
            return json_response(400, {"error": "invalid Content-Length: expected one number of bytes"})
        length = int(text)
        if length > limit:
            return json_response(413, {"error": f"body larger than {limit} bytes"})
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            return json_response(400, {"error": f"the body ended after {len(body)} of its {length} bytes"})
        return body

    def _serve(self) -> None:
        body = self._read_body()
        if isinstance(body, Response):
            self._send(body)
            return
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
        self._answered = True
        # Before a valid request line, the standard library takes the request for HTTP/0.9, whose answers have
        # no status line and no headers: every answer here has both.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        # The route may have run for long (a command waits for its result): the write has its own bound.
        self.connection.settimeout(self.server.limits.write_timeout_seconds)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        self.wfile.flush()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a bad request line, an unknown method, headers too long), as
        JSON like every other answer; its message loses the part that quotes the client's input."""
        self.close_connection = True
        text = (message or HTTPStatus(code).phrase).split(" (")[0]
        self.log_error("code %d, message %s", code, text)
        self._send(json_response(code, {"error": text}))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path without its query string: nothing a client put in the URL lands in the log.
        what = f"{self.command} {urlsplit(self.path).path}" if self.command else "(no valid request line)"
        log.debug("api: %s %s -> %s", self.address_string(), what, code)

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
    """HTTP listener for ``builtin`` routes (which ``routes`` may not replace) and extra ``routes``, keyed by
    (method, path).

    ``start()`` binds and serves from a background thread; ``stop()`` shuts down and closes the socket.
    Also a context manager (``with ApiServer(...) as api:``) that starts and stops it. ``limits`` bound what
    one client can take (``HttpLimits``; the defaults are for production, tests pass short ones).
    """

    def __init__(
        self,
        listen: str,
        routes: Mapping[tuple[str, str], Route] | None = None,
        *,
        builtin: Mapping[tuple[str, str], Route] | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        try:
            self._host, self._port, self._family = parse_listen_address(listen)
        except ValueError as e:
            raise PermanentError(str(e)) from e
        self.listen = listen
        self.limits = limits or HttpLimits()
        self._builtin: dict[tuple[str, str], Route] = dict(builtin or {})
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
            self._server = _HttpServer((self._host, self._port), self._family, self._dispatch, self.limits)
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
