"""The node's own Engine as the agent reads it: a few GETs over its unix socket (or a plain tcp:// address),
with the standard library's ``http.client`` and msgspec only.

Why not ``orcastra.adapters.engine``: the agent runs on every node and must idle in a few tens of MB, and the
docker SDK with requests, urllib3 and paramiko costs about 20 MB of RSS on its own (measured: docs/agent.md).
The agent needs a few reads and removals, so it has this small client instead. Like the SDK's ``version="auto"`` it asks
``GET /version`` first and then speaks the server's API version (``/v1.NN/...``), never a newer one than
``MAX_API_VERSION``. Each call has its own connection (the agent calls rarely; nothing is left open between
calls, so a dockerd restart leaves no stale connection behind).
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec

from orcastra.errors import EngineConflictError, EngineError, EngineNotFoundError, EngineUnreachableError, cut

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# The newest API version this client asks for: the same as the docker SDK's default (docker 7.1: 1.45); a newer
# Engine answers older versions, an older one (20.10: 1.41) is spoken to in its own.
MAX_API_VERSION = (1, 45)
MAX_ANSWER_BYTES = 1024 * 1024
# A list of every image or container on a busy node (10,000 images: ~8 MB of JSON).
MAX_LIST_BYTES = 128 * 1024 * 1024

_S = TypeVar("_S", bound=msgspec.Struct)


class _Version(msgspec.Struct):
    ApiVersion: str = ""


class _Swarm(msgspec.Struct):
    NodeID: str = ""
    LocalNodeState: str = ""


class _Info(msgspec.Struct):
    Name: str = ""
    Swarm: _Swarm | None = None
    Architecture: str = ""  # uname -m of the node: x86_64, aarch64...
    OSType: str = ""


@dataclass(frozen=True)
class NodeIdentity:
    """Who the Engine says it is (GET /info): the Swarm node ID ("" when not in a Swarm), its name, the node's
    Swarm state, and the API version spoken."""

    node_id: str
    hostname: str
    swarm_state: str
    api_version: str
    architecture: str = ""
    os_type: str = ""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class LocalEngine:
    """GETs on one Engine endpoint (unix:// or tcp://, no TLS). Raises ``EngineUnreachableError`` when it does
    not answer and ``EngineError`` when its answer is an error or not what the API reference says."""

    def __init__(self, host: str, timeout_seconds: float = 5.0) -> None:
        parts = urlsplit(host)
        if parts.scheme not in ("unix", "tcp"):
            raise ValueError(f"the agent reaches its Engine over unix:// or tcp://, not {host!r}")
        self.host = host
        self._unix_path = parts.path if parts.scheme == "unix" else ""
        self._address = (parts.hostname or "localhost", parts.port or 2375)
        self._timeout = timeout_seconds
        self._prefix = ""

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix_path:
            return _UnixConnection(self._unix_path, self._timeout)
        return http.client.HTTPConnection(*self._address, timeout=self._timeout)

    def request(self, method: str, path: str, limit: int = MAX_ANSWER_BYTES, timeout: float | None = None) -> bytes:
        """``method path`` as given (``call`` adds the API version): the body of a 2xx answer, read up to
        ``limit``. A 404 raises ``EngineNotFoundError``, a 409 ``EngineConflictError``."""
        conn = self._connection()
        if timeout is not None:
            conn.timeout = timeout
        try:
            conn.request(method, path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as e:
            raise EngineUnreachableError(f"{self.host}: {type(e).__name__}: {cut(str(e))}", endpoint=self.host) from e
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            text = cut(body.decode("utf-8", "replace"))
            kind = {404: EngineNotFoundError, 409: EngineConflictError}.get(response.status, EngineError)
            raise kind(f"{self.host}: {method} {path}: HTTP {response.status}: {text}", endpoint=self.host)
        if len(body) > limit:
            raise EngineError(f"{self.host}: {method} {path}: answer larger than {limit} bytes", endpoint=self.host)
        return body

    def _get(self, path: str) -> bytes:
        return self.request("GET", path)

    def call(self, method: str, path: str, limit: int = MAX_ANSWER_BYTES, timeout: float | None = None) -> bytes:
        """``method /v1.NN{path}``: negotiates first when needed."""
        if not self._prefix:
            self.negotiate()
        return self.request(method, f"{self._prefix}{path}", limit, timeout)

    def open_stream(
        self, path: str, read_timeout: float
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``GET /v1.NN{path}`` left open (the events stream): the connection and its response, whose lines the
        caller reads until the socket's ``read_timeout``; the caller closes the connection."""
        if not self._prefix:
            self.negotiate()
        conn = self._connection()
        conn.timeout = read_timeout
        try:
            conn.request("GET", f"{self._prefix}{path}", headers={"Accept": "application/json"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise EngineUnreachableError(f"{self.host}: {type(e).__name__}: {cut(str(e))}", endpoint=self.host) from e
        if response.status != 200:
            text = cut(response.read(4096).decode("utf-8", "replace"))
            conn.close()
            raise EngineError(f"{self.host}: GET {path}: HTTP {response.status}: {text}", endpoint=self.host)
        return conn, response

    def _decode(self, body: bytes, kind: type[_S], path: str) -> _S:
        try:
            return msgspec.json.decode(body, type=kind)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise EngineError(f"{self.host}: GET {path}: unexpected answer: {e}", endpoint=self.host) from e

    def negotiate(self) -> str:
        """GET /version: speak min(server's ApiVersion, ``MAX_API_VERSION``) from now on; returns it."""
        version = self._decode(self._get("/version"), _Version, "/version")
        major, _, minor = version.ApiVersion.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise EngineError(f"{self.host}: GET /version: no ApiVersion in the answer", endpoint=self.host)
        spoken = min((int(major), int(minor)), MAX_API_VERSION)
        self._prefix = f"/v{spoken[0]}.{spoken[1]}"
        return self._prefix[2:]

    def identity(self) -> NodeIdentity:
        """GET /info (negotiating first if not done yet): the node ID, name and Swarm state."""
        if not self._prefix:
            self.negotiate()
        info = self._decode(self._get(f"{self._prefix}/info"), _Info, "/info")
        swarm = info.Swarm or _Swarm()
        return NodeIdentity(
            swarm.NodeID, info.Name, swarm.LocalNodeState, self._prefix[2:], info.Architecture, info.OSType
        )

    def forget_version(self) -> None:
        """Negotiate again at the next call (after a failure: the Engine may have been upgraded meanwhile)."""
        self._prefix = ""
