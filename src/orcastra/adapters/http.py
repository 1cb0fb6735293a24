"""A small HTTP listener (standard library ``ThreadingHTTPServer``) that serves routes keyed by (method, path).

The runtime gives it ``/healthz`` and ``/metrics`` as built-in routes and the command API as extra routes;
this module knows nothing of either. Handler threads only call the routes they are given.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
# A client that stalls mid-request must not hold a handler thread forever.
REQUEST_TIMEOUT_SECONDS = 10.0
# Extra routes (commands) take small JSON bodies; refuse anything larger before reading it.
MAX_REQUEST_BODY_BYTES = 64 * 1024
JSON_CONTENT_TYPE = "application/json"


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
    """HTTP listener for ``builtin`` routes (which ``routes`` may not replace) and extra ``routes``, keyed by
    (method, path).

    ``start()`` binds and serves from a background thread; ``stop()`` shuts down and closes the socket.
    Also a context manager (``with ApiServer(...) as api:``) that starts and stops it.
    """

    def __init__(
        self,
        listen: str,
        routes: Mapping[tuple[str, str], Route] | None = None,
        *,
        builtin: Mapping[tuple[str, str], Route] | None = None,
    ) -> None:
        try:
            self._host, self._port, self._family = parse_listen_address(listen)
        except ValueError as e:
            raise PermanentError(str(e)) from e
        self.listen = listen
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
