"""Talking to the lab's daemons through the Docker SDK: ping, swarm init/join, node listing.

Raw Engine JSON stops here: callers get ``SwarmNode`` and ``LocalSwarm`` dataclasses. Every client is
opened for one use and closed (``engine()``), so nothing holds a socket between calls.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException

from orcastra.errors import cut
from orcastra_lab.errors import LabError

API_TIMEOUT_SECONDS = 30.0
PING_TIMEOUT_SECONDS = 3.0
# A join can block this long in the Engine before it answers "will continue in the background".
JOIN_TIMEOUT_SECONDS = 60.0

# docker-py ships no type information; name the one type we pass around.
Client = Any


@dataclass(frozen=True)
class LocalSwarm:
    """What one daemon says about its own Swarm membership (``GET /info`` -> ``Swarm``)."""

    state: str  # inactive, pending, active, error, locked
    node_id: str
    is_manager: bool
    error: str


@dataclass(frozen=True)
class SwarmNode:
    """One node as a manager lists it (``GET /nodes``)."""

    id: str
    version: int
    hostname: str
    role: str
    availability: str
    state: str
    addr: str
    leader: bool


def socket_accepts(docker_host: str) -> bool:
    """The daemon's unix socket exists and accepts a connection.

    Checked before building an SDK client: the SDK's unix transport does not close its socket when
    ``connect`` fails, which leaks a socket (and a ResourceWarning) per failed try.
    """
    path = Path(docker_host.removeprefix("unix://"))
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PING_TIMEOUT_SECONDS)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def engine(docker_host: str, timeout: float = API_TIMEOUT_SECONDS) -> Iterator[Client]:
    """A ``docker.APIClient`` for one daemon, closed on exit; LabError if the daemon does not answer."""
    if not socket_accepts(docker_host):
        raise LabError(f"the daemon at {docker_host} does not answer")
    try:
        client = docker.APIClient(base_url=docker_host, version="auto", timeout=timeout)
    except (DockerException, requests.RequestException) as e:
        raise LabError(f"the daemon at {docker_host} does not answer: {cut(str(e))}") from e
    try:
        yield client
    finally:
        client.close()


def answers_ping(docker_host: str) -> bool:
    """``GET /_ping`` answers OK."""
    if not socket_accepts(docker_host):
        return False
    try:
        with engine(docker_host, timeout=PING_TIMEOUT_SECONDS) as client:
            return client.ping() is True
    except (LabError, DockerException, requests.RequestException):
        return False


def local_swarm(client: Client) -> LocalSwarm:
    info = client.info().get("Swarm") or {}
    return LocalSwarm(
        state=str(info.get("LocalNodeState") or "inactive"),
        node_id=str(info.get("NodeID") or ""),
        is_manager=bool(info.get("ControlAvailable")),
        error=str(info.get("Error") or ""),
    )


def init(client: Client, advertise_addr: str) -> None:
    try:
        client.init_swarm(advertise_addr=advertise_addr, listen_addr="0.0.0.0:2377")
    except APIError as e:
        raise LabError(f"swarm init on {advertise_addr} failed: {cut(str(e.explanation or e))}") from e


def join_tokens(manager: Client) -> dict[str, str]:
    tokens = manager.inspect_swarm().get("JoinTokens") or {}
    return {"worker": str(tokens.get("Worker", "")), "manager": str(tokens.get("Manager", ""))}


def join(client: Client, manager_addr: str, token: str, advertise_addr: str) -> str | None:
    """Ask the daemon to join; returns None on success, else the Engine's message.

    A join that times out in the Engine goes on in the background, so an error here is not final: the
    caller looks at the daemon's LocalNodeState next.
    """
    try:
        client.join_swarm(
            remote_addrs=[manager_addr],
            join_token=token,
            listen_addr="0.0.0.0:2377",
            advertise_addr=advertise_addr,
        )
    except APIError as e:
        return cut(str(e.explanation or e))
    except requests.RequestException as e:
        return cut(str(e))
    return None


def leave(client: Client) -> None:
    with contextlib.suppress(APIError):
        client.leave_swarm(force=True)


def _node(raw: dict[str, Any]) -> SwarmNode:
    spec = raw.get("Spec") or {}
    status = raw.get("Status") or {}
    manager_status = raw.get("ManagerStatus") or {}
    return SwarmNode(
        id=str(raw.get("ID", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        hostname=str((raw.get("Description") or {}).get("Hostname", "")),
        role=str(spec.get("Role", "")),
        availability=str(spec.get("Availability", "")),
        state=str(status.get("State", "")),
        addr=str(status.get("Addr", "")),
        leader=bool(manager_status.get("Leader", False)),
    )


def list_nodes(manager: Client) -> list[SwarmNode]:
    try:
        return [_node(raw) for raw in manager.nodes()]
    except APIError as e:
        raise LabError(f"listing swarm nodes failed: {cut(str(e.explanation or e))}") from e
    except requests.RequestException as e:
        raise LabError(f"listing swarm nodes failed: {cut(str(e))}") from e


def promote(manager: Client, node: SwarmNode) -> None:
    raw = manager.inspect_node(node.id)
    spec = dict(raw.get("Spec") or {})
    spec["Role"] = "manager"
    manager.update_node(node.id, int(raw["Version"]["Index"]), spec)


def remove_node(manager: Client, node_id: str) -> None:
    with contextlib.suppress(APIError):
        manager.remove_node(node_id, force=True)
