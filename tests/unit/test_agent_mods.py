"""The mod manager's runtime around the refresher (which test_mods_* cover against a real registry): what the
agent wants from its containers and the Swarm's services, when a new reference asks for a quick refresh, and
the ``refresh_mods`` command asking every agent over HTTP (a real listener on loopback standing in for them)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from test_agents import _snapshot, _task

from orcastra.config import Config
from orcastra.errors import OrcastraError
from orcastra.runtime.agent_calls import refresh_mods_everywhere
from orcastra.runtime.agent_mods import ModManager

MODS = {
    "enabled": True,
    "cache_dir": "/modcache",
    "refresh_interval_seconds": 43200.0,
    "jitter_seconds": 3600.0,
    "prune": True,
    "prune_grace_seconds": 86400.0,
    "stale_lock_seconds": 3600.0,
    "registries": {},
    "insecure_registries": [],
    "platform": None,
    "max_mod_bytes": 1 << 29,
    "connect_timeout_seconds": 10.0,
    "read_timeout_seconds": 60.0,
    "attempts": 3,
}


class FakeNode:
    def __init__(self, env: dict[str, tuple[str, str]]) -> None:
        self.env = env  # container ID -> (name, DOCKER_MODS)
        self.inspected: list[str] = []

    def containers(self) -> list[Any]:
        return [SimpleNamespace(Id=cid, name=name) for cid, (name, _) in self.env.items()]

    def inspect(self, cid: str) -> Any:
        self.inspected.append(cid)
        return SimpleNamespace(docker_mods=self.env[cid][1])


def _manager(node: FakeNode, services: dict[str, str] | None, tmp_path: Path) -> ModManager:
    settings = MODS | {"cache_dir": str(tmp_path / "modcache")}
    return ModManager(SimpleNamespace(host="unix:///x"), node, settings, lambda now: services, threading.Event())  # type: ignore[arg-type]


def test_the_node_wants_its_containers_and_every_services_mods_reading_each_container_once(tmp_path: Path) -> None:
    node = FakeNode({"c1": ("app", "linuxserver/mods:swag-dashboard"), "c2": ("db", "")})
    manager = _manager(node, {"shop_web": "linuxserver/mods:code-server-python3|ghcr.io/x/y:1"}, tmp_path)
    wanted = manager.wanted(0.0)
    assert sorted(wanted.mods) == ["linuxserver.mods.code-server-python3", "linuxserver.mods.swag-dashboard", "x.y.1"]
    assert wanted.complete
    manager.wanted(1.0)
    assert sorted(node.inspected) == ["c1", "c2"]  # once each: a container's environment never changes
    # Without recent facts the services are unknown (and nothing is pruned then).
    assert not _manager(node, None, tmp_path).wanted(0.0).complete


def test_a_new_reference_asks_for_a_quick_refresh_and_a_known_one_does_not(tmp_path: Path) -> None:
    node = FakeNode({"c1": ("app", "linuxserver/mods:swag-dashboard")})
    manager = _manager(node, {}, tmp_path)
    manager.known = frozenset(manager.wanted(0.0).mods)
    assert not manager._new_reference(1.0)
    node.env["c2"] = ("new", "linuxserver/mods:swag-auto-reload")
    assert manager._new_reference(2.0)


class _Agent(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, dict[str, object]]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, body = self.answers[self.path]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def agent_port() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_refresh_mods_asks_every_agent_with_the_token_and_names_the_failures(agent_port: int) -> None:
    config = Config.model_validate({"agent": {"listen": f"0.0.0.0:{agent_port}"}, "api": {"token": "s3cret"}})
    snap = _snapshot(_task("a", "n1", "running", 1, "127.0.0.1"), _task("b", "n2", "failed", 1, desired="shutdown"))
    good = {"hits": 2, "fetched": 1, "bytes_fetched": 10, "pruned": 0, "failed": 0, "error": ""}
    _Agent.answers = {"/v1/mods/refresh": (200, good)}
    _Agent.seen = []
    with pytest.raises(OrcastraError) as caught:
        refresh_mods_everywhere(config, snap)
    message = str(caught.value)
    assert "node1: 2 current, 1 fetched (10 bytes), 0 pruned, 0 failed" in message
    assert "node2: its agent task is failed" in message
    assert "failed on node2" in message
    assert _Agent.seen == [("/v1/mods/refresh", "Bearer s3cret")]
    _Agent.answers = {"/v1/mods/refresh": (409, {"error": "the mod manager is not enabled on this agent"})}
    snap = _snapshot(_task("a", "n1", "running", 1, "127.0.0.1"))
    with pytest.raises(OrcastraError, match="not enabled on this agent"):
        refresh_mods_everywhere(config, snap)
