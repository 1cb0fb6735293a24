"""The script's fast ``orcastra health`` path: which command lines it takes, where it reads the listen address,
and what it answers (against a real HTTP listener on loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from orcastra.entry import health_args, listen_address, probe


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["health"], (None, "api")),
        (["health", "--agent"], (None, "agent")),
        (["--config", "/c.yml", "health"], ("/c.yml", "api")),
        (["health", "--config=/c.yml", "--agent"], ("/c.yml", "agent")),
        (["health", "--help"], None),
        (["run"], None),
        (["health", "extra"], None),
        ([], None),
    ],
)
def test_which_command_lines_take_the_fast_path(args: list[str], expected: tuple[str | None, str] | None) -> None:
    assert health_args(args) == expected


def test_listen_address_from_the_file_else_the_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("api: {listen: 0.0.0.0:9999}\nagent: {listen: '[::1]:9998'}\n")
    assert listen_address(str(config), "api", {}) == "0.0.0.0:9999"
    assert listen_address(None, "agent", {"ORCASTRA_CONFIG": str(config)}) == "[::1]:9998"
    for broken in ("api: [", "- a list", "api: {listen: 5}", "\udcff"):
        config.write_text(broken, errors="surrogateescape")
        assert listen_address(str(config), "api", {}) == "127.0.0.1:9180"
    assert listen_address(str(tmp_path / "missing.yml"), "agent", {}) == "0.0.0.0:9181"


@pytest.fixture
def server() -> Iterator[list[tuple[int, bytes]]]:
    answers: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers[0]
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    answers.append((0, str(httpd.server_address[1]).encode()))
    try:
        yield answers
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_probe_answers(server: list[tuple[int, bytes]]) -> None:
    port = int(server.pop()[1])
    server.append((200, json.dumps({"status": "ok", "role": "leader"}).encode()))
    assert probe(f"0.0.0.0:{port}") == (0, "status ok, role leader")
    server[0] = (503, json.dumps({"status": "stale", "last_error": "x"}).encode())
    assert probe(f"127.0.0.1:{port}") == (1, "HTTP 503: status stale, last_error x")
    server[0] = (200, b"\xff not json")
    assert probe(f"127.0.0.1:{port}") == (0, "ok")
    assert probe("nonsense")[0] == 1
