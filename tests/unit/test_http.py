"""The HTTP listener under hostile or heavy load (a real server on 127.0.0.1, an OS-picked port): a total
deadline per request, a cap on handler threads, one request per connection, a listen backlog that takes a
burst, and clear JSON answers to requests it cannot take."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from orcastra.adapters.http import ApiServer, HttpLimits, Request, Response, json_response

QUICK = ("GET", "/quick")


def quick(request: Request) -> Response:
    return json_response(200, {"ok": True})


@pytest.fixture
def blocker() -> Iterator[threading.Event]:
    """A route that holds its handler until the test lets it go (always let go at the end)."""
    release = threading.Event()
    yield release
    release.set()


def serve(limits: HttpLimits, release: threading.Event | None = None) -> ApiServer:
    routes = {QUICK: quick}
    if release is not None:

        def slow(request: Request) -> Response:
            release.wait(10)
            return json_response(200, {"slow": True})

        routes[("GET", "/slow")] = slow
    return ApiServer("127.0.0.1:0", routes, limits=limits)


def connect(api: ApiServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> dict[str, object]:
    payload = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert isinstance(payload, dict)
    return payload


def get(api: ApiServer, path: str = "/quick") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- slow clients ----------------------------------------------------------------------------------------


def test_a_trickling_client_is_cut_at_the_request_deadline_with_408() -> None:
    """One byte every 50 ms would keep a per-read timeout happy forever; the deadline is for the whole request."""
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        for byte in b"GET /quick HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.05):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    with serve(HttpLimits(request_deadline_seconds=0.3)) as api, connect(api) as sock:
        sender = threading.Thread(target=trickle, args=(sock,))
        started = time.monotonic()
        sender.start()
        try:
            answer = read_all(sock)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            sender.join()
    assert status_of(answer) == 408
    assert "deadline" in str(body_of(answer)["error"])
    assert 0.25 < elapsed < 1.5


def test_a_slow_body_is_cut_at_the_deadline() -> None:
    with serve(HttpLimits(request_deadline_seconds=0.2)) as api, connect(api) as sock:
        sock.sendall(b"POST /quick HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        answer = read_all(sock)
        elapsed = time.monotonic() - started
    assert status_of(answer) == 408
    assert elapsed < 1.5


def test_handlers_are_capped_and_the_excess_gets_a_quick_503(blocker: threading.Event) -> None:
    limits = HttpLimits(max_handlers=3, busy_wait_seconds=0.3, request_deadline_seconds=5.0)
    with serve(limits, blocker) as api:
        holders = [connect(api) for _ in range(3)]
        try:
            for sock in holders:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            # Connections are accepted in order: by the time the next ones are, the three hold every handler.
            # Six more at once: the wait for a free handler is for the first of them; the others are not made
            # to wait in turn (six waits in a row would hold the last one for 1.8 s).
            extras = [connect(api) for _ in range(6)]
            started = time.monotonic()
            try:
                for extra in extras:
                    extra.sendall(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
                answers = [read_all(extra) for extra in extras]
            finally:
                for extra in extras:
                    extra.close()
            waited = time.monotonic() - started
            assert [status_of(answer) for answer in answers] == [503] * 6
            assert b"Retry-After: 1" in answers[0]
            assert "busy" in str(body_of(answers[0])["error"])
            assert waited < 1.0
            blocker.set()
            assert [status_of(read_all(sock)) for sock in holders] == [200, 200, 200]
        finally:
            for sock in holders:
                sock.close()
        # Once the slow requests are answered, their slots are free again.
        assert get(api)[0] == 200


def test_silent_connections_do_not_hold_handlers_past_the_deadline() -> None:
    limits = HttpLimits(max_handlers=2, busy_wait_seconds=0.05, request_deadline_seconds=0.2)
    with serve(limits) as api:
        silent = [connect(api) for _ in range(2)]  # accepted first: they hold both handlers
        try:
            assert get(api)[0] == 503
            answers = [read_all(sock) for sock in silent]
        finally:
            for sock in silent:
                sock.close()
        assert [status_of(a) for a in answers] == [408, 408]
        assert get(api)[0] == 200


def test_one_request_per_connection_even_when_the_client_asks_for_keep_alive() -> None:
    with serve(HttpLimits()) as api, connect(api) as sock:
        sock.sendall(b"GET /quick HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        started = time.monotonic()
        answer = read_all(sock)  # returns only once the server has closed the connection
        assert time.monotonic() - started < 1.0
    assert status_of(answer) == 200
    assert b"\r\nConnection: close\r\n" in answer


# --- a burst ---------------------------------------------------------------------------------------------


def test_a_burst_of_concurrent_requests_is_served_without_a_reset() -> None:
    """200 clients at once, with the default limits (the standard library's backlog of 5 reset dozens)."""
    clients = 200
    statuses: list[int] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def one() -> None:
        start.wait()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
            try:
                conn.request("POST", "/quick-post", body=b'{"command": "sync"}')
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            finally:
                conn.close()
        except OSError as e:
            errors.append(repr(e))

    routes = {("POST", "/quick-post"): quick}
    with ApiServer("127.0.0.1:0", routes) as api:
        threads = [threading.Thread(target=one) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert errors == []
    assert statuses == [200] * clients


# --- malformed requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (b"POST /quick HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
        (b"POST /quick HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400, "Content-Length"),
        (b"POST /quick HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "Content-Length"),
        (b"POST /quick HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, "Content-Length"),
        (b"POST /quick HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413, "65536 bytes"),
        (b"BREW /quick HTTP/1.1\r\n\r\n", 501, "Unsupported method"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "Request-URI Too Long"),
        (b"GET /quick HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
        (b"GET /quick HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431, "Too many headers"),
        (b"GET /quick HTTP/9\r\n\r\n", 400, "Bad request version"),
        (b"POST /quick\r\n\r\n", 400, "Bad HTTP/0.9 request type"),
        (b"GET\r\n\r\n", 400, "Bad request syntax"),
    ],
    ids=[
        "negative-length",
        "length-not-a-number",
        "two-lengths",
        "chunked",
        "too-large",
        "unknown-method",
        "request-line-too-long",
        "header-too-long",
        "too-many-headers",
        "bad-version",
        "http-0.9-post",
        "bad-request-line",
    ],
)
def test_requests_it_cannot_take_get_a_json_error(raw: bytes, status: int, error: str) -> None:
    with serve(HttpLimits()) as api, connect(api) as sock:
        sock.sendall(raw)
        answer = read_all(sock)
    assert status_of(answer) == status
    assert b"Content-Type: application/json" in answer
    assert error in str(body_of(answer)["error"])


@pytest.mark.parametrize(
    "raw",
    [b"GET /quick?token=s3cret-guess HTTP/7\r\n\r\n", b"GET /quick?token=s3cret-guess HTTP/1.1\r\n\r\n"],
    ids=["refused", "served"],
)
def test_neither_the_answer_nor_the_log_echoes_the_query(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), serve(HttpLimits()) as api, connect(api) as sock:
        sock.sendall(raw)
        answer = read_all(sock)
    assert status_of(answer) in (200, 400)
    assert b"s3cret-guess" not in answer
    assert ("GET /quick -> 200" in caplog.text) == (status_of(answer) == 200)
    assert "s3cret-guess" not in caplog.text
