"""What the agent reads from and does to its own node's Engine for node hygiene: the lists of containers,
images and volumes, one container's health and log settings, the events stream, and the removals and
restarts.

Typed once here (msgspec structs decoded from the Engine's JSON, per the Engine API reference for
``/containers/json``, ``/images/json``, ``/volumes``, ``/containers/{id}/json`` and ``/events``); nothing past
this module reads raw JSON. Every call goes through ``LocalEngine`` (version negotiated, bodies capped).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import TypeVar
from urllib.parse import quote, urlencode

import msgspec

from orcastra.adapters.local_engine import MAX_LIST_BYTES, LocalEngine
from orcastra.errors import EngineError, EngineUnreachableError, cut
from orcastra.features.mods.reference import docker_mods_of

_T = TypeVar("_T")

# The longest one events read blocks; then the stream is reopened (``since`` the last event seen), so a
# dockerd restart or a silently dropped connection is noticed within this.
EVENTS_READ_TIMEOUT_SECONDS = 60.0
MAX_EVENT_LINE_BYTES = 256 * 1024


class MountRef(msgspec.Struct, frozen=True):
    Type: str = ""
    Name: str = ""


class ContainerRow(msgspec.Struct, frozen=True):
    Id: str
    Names: list[str] | None = None
    Image: str = ""
    ImageID: str = ""
    State: str = ""
    Created: float = 0.0
    Labels: dict[str, str] | None = None
    Mounts: list[MountRef] | None = None

    @property
    def name(self) -> str:
        return (self.Names or [""])[0].lstrip("/") or self.Id[:12]


class ImageRow(msgspec.Struct, frozen=True):
    Id: str
    RepoTags: list[str] | None = None
    RepoDigests: list[str] | None = None
    Created: float = 0.0
    Size: int = 0
    SharedSize: int = -1


class VolumeRow(msgspec.Struct, frozen=True):
    Name: str
    CreatedAt: str | None = None
    Labels: dict[str, str] | None = None


class _Volumes(msgspec.Struct):
    Volumes: list[VolumeRow] | None = None


class _Health(msgspec.Struct):
    Status: str = ""


class _State(msgspec.Struct):
    Status: str = ""
    StartedAt: str = ""
    FinishedAt: str = ""
    Health: _Health | None = None


class _Healthcheck(msgspec.Struct):
    StartPeriod: int = 0  # nanoseconds


class _Config(msgspec.Struct):
    Labels: dict[str, str] | None = None
    Healthcheck: _Healthcheck | None = None
    Env: list[str] | None = None


class _RestartPolicy(msgspec.Struct):
    Name: str = ""


class _LogConfig(msgspec.Struct):
    Type: str = ""
    Config: dict[str, str] | None = None


class _HostConfig(msgspec.Struct):
    RestartPolicy: _RestartPolicy | None = None
    LogConfig: _LogConfig | None = None


class ContainerDetail(msgspec.Struct, frozen=True):
    Id: str
    Name: str = ""
    State: _State | None = None
    Config: _Config | None = None
    HostConfig: _HostConfig | None = None

    @property
    def health(self) -> str:
        return self.State.Health.Status if self.State is not None and self.State.Health is not None else ""

    @property
    def status(self) -> str:
        return self.State.Status if self.State is not None else ""

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.Config.Labels or {}) if self.Config is not None else {}

    @property
    def docker_mods(self) -> str:
        """Its ``DOCKER_MODS`` value (LinuxServer.io mods), "" when none."""
        return docker_mods_of(self.Config.Env if self.Config is not None else None)

    @property
    def started_at(self) -> float | None:
        return parse_engine_time(self.State.StartedAt) if self.State is not None else None

    @property
    def finished_at(self) -> float | None:
        return parse_engine_time(self.State.FinishedAt) if self.State is not None else None

    @property
    def start_period_seconds(self) -> float:
        check = self.Config.Healthcheck if self.Config is not None else None
        return (check.StartPeriod or 0) / 1e9 if check is not None else 0.0

    @property
    def restart_policy(self) -> str:
        policy = self.HostConfig.RestartPolicy if self.HostConfig is not None else None
        return policy.Name if policy is not None else ""

    @property
    def log_driver(self) -> str:
        """``HostConfig.LogConfig.Type``: the Engine fills in the daemon's default driver at create."""
        config = self.HostConfig.LogConfig if self.HostConfig is not None else None
        return config.Type if config is not None else ""

    @property
    def log_options(self) -> dict[str, str]:
        """``HostConfig.LogConfig.Config``, with the daemon's default ``log-opts`` merged in at create."""
        config = self.HostConfig.LogConfig if self.HostConfig is not None else None
        return dict(config.Config or {}) if config is not None else {}


class _Actor(msgspec.Struct):
    ID: str = ""
    Attributes: dict[str, str] | None = None


class Event(msgspec.Struct, frozen=True):
    """One line of ``GET /events``: ``Type`` (container, image...), ``Action`` ("health_status: unhealthy",
    "start", "die", "destroy"...), the object's ID and attributes, and the time in nanoseconds."""

    Type: str = ""
    Action: str = ""
    Actor: _Actor | None = None
    timeNano: int = 0

    @property
    def object_id(self) -> str:
        return self.Actor.ID if self.Actor is not None else ""

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self.Actor.Attributes or {}) if self.Actor is not None else {}


def parse_engine_time(text: str) -> float | None:
    """An Engine time (RFC 3339, nanoseconds) -> epoch seconds; None for the zero time or anything odd."""
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        head, dot, rest = text.partition(".")
        if not dot:
            return None
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        try:
            return datetime.fromisoformat(f"{head}.{digits[:6]}{zone}").timestamp()
        except ValueError:
            return None


def _decode(body: bytes, kind: type[_T], what: str) -> _T:
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise EngineError(f"{what}: unexpected answer from the Engine: {cut(str(e))}") from e


class NodeEngine:
    """The agent's hygiene calls on its node's Engine."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    def containers(self) -> list[ContainerRow]:
        body = self.engine.call("GET", "/containers/json?all=1", MAX_LIST_BYTES)
        return _decode(body, list[ContainerRow], "list containers")

    def running_containers(self) -> list[ContainerRow]:
        body = self.engine.call("GET", "/containers/json", MAX_LIST_BYTES)  # all=0: running ones only
        return _decode(body, list[ContainerRow], "list running containers")

    def unhealthy_containers(self) -> list[ContainerRow]:
        query = urlencode({"filters": json.dumps({"health": ["unhealthy"]})})
        body = self.engine.call("GET", f"/containers/json?{query}", MAX_LIST_BYTES)
        return _decode(body, list[ContainerRow], "list unhealthy containers")

    def images(self) -> list[ImageRow]:
        body = self.engine.call("GET", "/images/json", MAX_LIST_BYTES)
        return _decode(body, list[ImageRow], "list images")

    def volumes(self) -> list[VolumeRow]:
        found = _decode(self.engine.call("GET", "/volumes", MAX_LIST_BYTES), _Volumes, "list volumes")
        return list(found.Volumes or [])

    def inspect(self, container_id: str) -> ContainerDetail:
        body = self.engine.call("GET", f"/containers/{quote(container_id, safe='')}/json")
        return _decode(body, ContainerDetail, "inspect container")

    def remove_container(self, container_id: str) -> None:
        # v=0: a container's anonymous volumes are left for the volume rules (and their own audit lines).
        self.engine.call("DELETE", f"/containers/{quote(container_id, safe='')}?v=0")

    def remove_image(self, image_id: str, force: bool) -> None:
        query = urlencode({"force": "1" if force else "0", "noprune": "0"})
        self.engine.call("DELETE", f"/images/{quote(image_id, safe='')}?{query}", timeout=120.0)

    def remove_volume(self, name: str) -> None:
        self.engine.call("DELETE", f"/volumes/{quote(name, safe='')}")

    def restart_container(self, container_id: str, stop_timeout_seconds: float) -> None:
        query = urlencode({"t": str(math.ceil(stop_timeout_seconds))})  # whole seconds: rounded up
        self.engine.call(
            "POST", f"/containers/{quote(container_id, safe='')}/restart?{query}", timeout=stop_timeout_seconds + 30
        )

    def events(self, since: float, types: tuple[str, ...]) -> Iterator[Event]:
        """Events of ``types`` from ``since`` (epoch seconds), until the read times out or the Engine goes
        away (then the iterator ends; the caller reopens from the last event's time)."""
        query = urlencode({"since": f"{since:.9f}", "filters": json.dumps({"type": list(types)})})
        conn, response = self.engine.open_stream(f"/events?{query}", EVENTS_READ_TIMEOUT_SECONDS)
        decoder = msgspec.json.Decoder(Event)
        try:
            while True:
                try:
                    line = response.readline(MAX_EVENT_LINE_BYTES)
                except (OSError, ValueError):  # socket timeout, reset, or a closed response
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    yield decoder.decode(line)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue  # an event this Engine words differently: skipped, the resync sees its effect
        finally:
            conn.close()


__all__ = ["EngineUnreachableError", "NodeEngine"]
