"""Engine JSON -> the frozen snapshot structs. The one place that knows the Engine's field names.

Field names follow the Engine API reference (v1.41 .. v1.5x, unchanged for these objects):
Node{ID, Version.Index, Spec{Name, Labels, Role, Availability}, Description{Hostname, Engine, Resources},
Status{State, Addr}, ManagerStatus{Leader, Reachability, Addr}}, Service{ID, Version.Index, Spec{Name, Labels,
Mode, TaskTemplate{ContainerSpec, Placement, Resources, ForceUpdate}}}, Task{ID, ServiceID, NodeID, Slot,
DesiredState, Status{State, Message, Err, Timestamp, ContainerStatus{ContainerID}},
NetworksAttachments[]{Network{Spec{Ingress}}, Addresses[]}}.

They are declared once, as msgspec structs naming only the fields Orcastra reads. List responses are decoded
from the raw bytes straight into them: msgspec skips every other field (a task's whole spec, networks, the
service's endpoint...) without building Python objects for it, which is what makes a cycle cheap on a large
Swarm (a task list of 6,000 tasks decodes in about 15 ms; ``json.loads`` of the same bytes takes ten times
that). Already-decoded objects (an ``inspect`` answer, a test's dict) go through ``msgspec.convert`` into the
same structs. Every field is optional: a missing or null value gives the default, never an error; a value of the
wrong type is an ``EngineError`` naming where it was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from orcastra.domain.snapshot import Node, Service, Task, frozen_labels
from orcastra.errors import EngineError
from orcastra.features.mods.reference import MAX_VALUE_CHARS as MAX_MODS_CHARS
from orcastra.features.mods.reference import docker_mods_of

JSON = dict[str, Any]

STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"

LabelMap = dict[str, str | None] | None


class _Struct(msgspec.Struct):
    """Unknown fields are skipped (msgspec's default): newer Engines add fields freely."""


class _Version(_Struct):
    Index: int | None = None


# --- nodes ------------------------------------------------------------------------------------------------


class _NodeSpec(_Struct):
    Name: str | None = None
    Labels: LabelMap = None
    Role: str | None = None
    Availability: str | None = None


class _EngineDescription(_Struct):
    EngineVersion: str | None = None


class _Resources(_Struct):
    MemoryBytes: int | None = None
    NanoCPUs: int | None = None


class _NodeDescription(_Struct):
    Hostname: str | None = None
    Engine: _EngineDescription | None = None
    Resources: _Resources | None = None


class _NodeStatus(_Struct):
    State: str | None = None
    Addr: str | None = None


class _ManagerStatus(_Struct):
    Leader: bool | None = None
    Reachability: str | None = None
    Addr: str | None = None


class RawNode(_Struct):
    ID: str | None = None
    Version: _Version | None = None
    UpdatedAt: datetime | None = None
    Spec: _NodeSpec | None = None
    Description: _NodeDescription | None = None
    Status: _NodeStatus | None = None
    ManagerStatus: _ManagerStatus | None = None


# --- services ---------------------------------------------------------------------------------------------


class _Replicated(_Struct):
    Replicas: int | None = None


class _Mode(_Struct):
    Replicated: _Replicated | None = None
    Global: dict[str, Any] | None = None
    ReplicatedJob: dict[str, Any] | None = None
    GlobalJob: dict[str, Any] | None = None


class _Mount(_Struct):
    Type: str | None = None
    Source: str | None = None


class _ContainerSpec(_Struct):
    Image: str | None = None
    Mounts: list[_Mount] | None = None
    Env: list[str] | None = None


class _Placement(_Struct):
    Constraints: list[str] | None = None


class _MemoryResources(_Struct):
    MemoryBytes: int | None = None


class _TaskResources(_Struct):
    Limits: _MemoryResources | None = None
    Reservations: _MemoryResources | None = None


class _TaskTemplate(_Struct):
    ContainerSpec: _ContainerSpec | None = None
    Placement: _Placement | None = None
    Resources: _TaskResources | None = None
    ForceUpdate: int | None = None


class _ServiceSpec(_Struct):
    Name: str | None = None
    Labels: LabelMap = None
    Mode: _Mode | None = None
    TaskTemplate: _TaskTemplate | None = None


class RawService(_Struct):
    ID: str | None = None
    Version: _Version | None = None
    Spec: _ServiceSpec | None = None
    # What ``docker service rollback`` returns to: its image stays in use as far as node GC is concerned.
    PreviousSpec: _ServiceSpec | None = None


# --- tasks ------------------------------------------------------------------------------------------------


class _ContainerStatus(_Struct):
    ContainerID: str | None = None


class _TaskStatus(_Struct):
    State: str | None = None
    Message: str | None = None
    Err: str | None = None
    Timestamp: datetime | None = None
    ContainerStatus: _ContainerStatus | None = None


class _NetworkSpec(_Struct):
    Ingress: bool | None = None


class _Network(_Struct):
    Spec: _NetworkSpec | None = None


class _NetworkAttachment(_Struct):
    Network: _Network | None = None
    Addresses: list[str] | None = None


class RawTask(_Struct):
    ID: str | None = None
    ServiceID: str | None = None
    NodeID: str | None = None
    Slot: int | None = None
    DesiredState: str | None = None
    CreatedAt: datetime | None = None
    Status: _TaskStatus | None = None
    NetworksAttachments: list[_NetworkAttachment] | None = None


class RawTaskState(_Struct):
    """The least a task poll compares: which task, where, in what state."""

    ID: str | None = None
    NodeID: str | None = None
    DesiredState: str | None = None
    Status: _TaskStatus | None = None


_NODE_LIST = msgspec.json.Decoder(list[RawNode])
_SERVICE_LIST = msgspec.json.Decoder(list[RawService])
_TASK_LIST = msgspec.json.Decoder(list[RawTask])
_TASK_STATE_LIST = msgspec.json.Decoder(list[RawTaskState])

_EMPTY_NODE_SPEC = _NodeSpec()
_EMPTY_DESCRIPTION = _NodeDescription()
_EMPTY_SERVICE_SPEC = _ServiceSpec()
_EMPTY_TEMPLATE = _TaskTemplate()
_EMPTY_TASK_STATUS = _TaskStatus()


def _labels(raw: LabelMap) -> dict[str, str]:
    if not raw:
        return {}
    return {k: "" if v is None else v for k, v in raw.items()}


def _epoch(value: datetime | None) -> float:
    """RFC 3339 times are decoded by msgspec (nanoseconds rounded to microseconds) -> epoch seconds."""
    return value.timestamp() if value is not None else 0.0


def _index(version: _Version | None) -> int:
    return (version.Index or 0) if version is not None else 0


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        raise EngineError(f"{what}: unexpected answer from the Engine: {e}") from e
    except msgspec.DecodeError as e:
        raise EngineError(f"{what}: the Engine's answer is not valid JSON: {e}") from e


def _convert(raw: Any, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        raise EngineError(f"{what}: unexpected answer from the Engine: {e}") from e


# --- struct -> snapshot -----------------------------------------------------------------------------------


def node_from(raw: RawNode) -> Node:
    spec = raw.Spec or _EMPTY_NODE_SPEC
    desc = raw.Description or _EMPTY_DESCRIPTION
    status = raw.Status
    manager = raw.ManagerStatus
    resources = desc.Resources
    return Node(
        id=raw.ID or "",
        version=_index(raw.Version),
        hostname=desc.Hostname or spec.Name or "",
        role=spec.Role or "",
        availability=spec.Availability or "",
        state=(status.State if status is not None else None) or "unknown",
        addr=(status.Addr if status is not None else None) or "",
        labels=frozen_labels(_labels(spec.Labels)),
        spec_name=spec.Name or "",
        leader=bool(manager is not None and manager.Leader),
        manager_reachability=(manager.Reachability if manager is not None else None) or "",
        manager_addr=(manager.Addr if manager is not None else None) or "",
        engine_version=(desc.Engine.EngineVersion if desc.Engine is not None else None) or "",
        memory_bytes=(resources.MemoryBytes if resources is not None else None) or 0,
        nano_cpus=(resources.NanoCPUs if resources is not None else None) or 0,
        updated_at=_epoch(raw.UpdatedAt),
    )


def _mode(mode: _Mode | None) -> tuple[str, int | None]:
    if mode is None:
        return "replicated", 1
    if mode.Global is not None:
        return "global", None
    if mode.GlobalJob is not None:
        return "global-job", None
    if mode.ReplicatedJob is not None:
        return "replicated-job", None
    replicas = mode.Replicated.Replicas if mode.Replicated is not None else None
    return "replicated", replicas if replicas is not None else 1


def _memory(resources: _MemoryResources | None) -> int:
    return (resources.MemoryBytes or 0) if resources is not None else 0


def _volume_sources(container: _ContainerSpec | None) -> tuple[str, ...]:
    """Named volumes the service mounts (Type "volume" with a Source; an anonymous one has none)."""
    if container is None or not container.Mounts:
        return ()
    return tuple(sorted({m.Source for m in container.Mounts if m.Type == "volume" and m.Source}))


def _docker_mods(container: _ContainerSpec | None) -> str:
    """The spec's ``DOCKER_MODS=`` value (the last one wins, as Docker applies its Env), "" when none; kept as
    written up to ``MAX_MODS_CHARS`` + 1 (a longer one is reported as too long by the mod manager)."""
    return docker_mods_of(container.Env if container is not None else None)[: MAX_MODS_CHARS + 1]


def _previous_image(raw: RawService) -> str:
    previous = raw.PreviousSpec.TaskTemplate if raw.PreviousSpec is not None else None
    container = previous.ContainerSpec if previous is not None else None
    return (container.Image if container is not None else None) or ""


def service_from(raw: RawService) -> Service:
    spec = raw.Spec or _EMPTY_SERVICE_SPEC
    template = spec.TaskTemplate or _EMPTY_TEMPLATE
    labels = _labels(spec.Labels)
    mode, replicas = _mode(spec.Mode)
    resources = template.Resources
    return Service(
        id=raw.ID or "",
        version=_index(raw.Version),
        name=spec.Name or "",
        labels=frozen_labels(labels),
        mode=mode,
        replicas=replicas,
        constraints=tuple((template.Placement.Constraints or ()) if template.Placement is not None else ()),
        image=(template.ContainerSpec.Image if template.ContainerSpec is not None else None) or "",
        stack=labels.get(STACK_NAMESPACE_LABEL),
        force_update=template.ForceUpdate or 0,
        memory_reservation_bytes=_memory(resources.Reservations) if resources is not None else 0,
        memory_limit_bytes=_memory(resources.Limits) if resources is not None else 0,
        previous_image=_previous_image(raw),
        volumes=_volume_sources(template.ContainerSpec),
        mods=_docker_mods(template.ContainerSpec),
    )


def _addresses(attachments: list[_NetworkAttachment] | None) -> tuple[str, ...]:
    """The task's IPs ("10.0.1.5/24" -> "10.0.1.5"), the ingress network's left out (the routing mesh's, not
    reachable as the task's own address); an address without a prefix length is kept as it is."""
    if not attachments:
        return ()
    out: list[str] = []
    for a in attachments:
        spec = a.Network.Spec if a.Network is not None else None
        if spec is not None and spec.Ingress:
            continue
        out += [address.partition("/")[0] for address in a.Addresses or () if address]
    return tuple(out)


def task_from(raw: RawTask) -> Task:
    status = raw.Status or _EMPTY_TASK_STATUS
    container = status.ContainerStatus
    return Task(
        id=raw.ID or "",
        service_id=raw.ServiceID or "",
        node_id=raw.NodeID or "",
        slot=raw.Slot,
        desired_state=raw.DesiredState or "",
        state=status.State or "",
        message=status.Message or "",
        error=status.Err or "",
        container_id=(container.ContainerID if container is not None else None) or "",
        updated_at=_epoch(status.Timestamp),
        created_at=_epoch(raw.CreatedAt),
        addresses=_addresses(raw.NetworksAttachments),
    )


# --- entry points -----------------------------------------------------------------------------------------


def decode_nodes(body: bytes, what: str = "list nodes") -> tuple[Node, ...]:
    """A GET /nodes body -> nodes."""
    return tuple(node_from(n) for n in _decode(_NODE_LIST, body, what))


def decode_services(body: bytes, what: str = "list services") -> tuple[Service, ...]:
    """A GET /services body -> services."""
    return tuple(service_from(s) for s in _decode(_SERVICE_LIST, body, what))


def decode_tasks(body: bytes, what: str = "list tasks") -> tuple[Task, ...]:
    """A GET /tasks body -> tasks."""
    return tuple(task_from(t) for t in _decode(_TASK_LIST, body, what))


def decode_task_states(body: bytes, what: str = "list tasks") -> frozenset[tuple[str, str, str, str]]:
    """A GET /tasks body -> {(task id, node id, state, desired state)}: all a change-detecting poll needs."""
    out = set()
    for t in _decode(_TASK_STATE_LIST, body, what):
        state = t.Status.State if t.Status is not None else None
        out.add((t.ID or "", t.NodeID or "", state or "", t.DesiredState or ""))
    return frozenset(out)


def parse_node(raw: Any) -> Node:
    """One already-decoded node object (e.g. GET /nodes/{id}) -> Node."""
    return node_from(_convert(raw, RawNode, "node"))


def parse_service(raw: Any) -> Service:
    return service_from(_convert(raw, RawService, "service"))


def parse_task(raw: Any) -> Task:
    return task_from(_convert(raw, RawTask, "task"))


def parse_time(value: Any) -> float:
    """A time string from an Engine object read as a plain dict (benchmarks, tests): RFC 3339 with up to
    nanoseconds (as the Engine writes it) -> epoch seconds; 0.0 when absent or odd."""
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        # Fast path (two per task, every cycle): Python >= 3.11 reads "Z" and truncates 7-9 fractional
        # digits to microseconds itself, as the normalisation below does.
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Older fromisoformat took at most 6 fractional digits (the Engine writes 9); keep it for odd inputs.
    main, sep, rest = text.partition(".")
    if sep:
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{main}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
