"""Raw Engine JSON -> frozen snapshot dataclasses. The one place that knows the Engine's field names.

Field names follow the Engine API reference (v1.41 .. v1.5x, unchanged for these objects):
Node{ID, Version.Index, Spec{Name, Labels, Role, Availability}, Description{Hostname, Engine, Resources},
Status{State, Addr}, ManagerStatus{Leader, Reachability}}, Service{ID, Version.Index, Spec{Name, Labels,
Mode, TaskTemplate{ContainerSpec, Placement, Resources, ForceUpdate}}}, Task{ID, ServiceID, NodeID, Slot,
DesiredState, Status{State, Message, Err, Timestamp, ContainerStatus{ContainerID}}}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orcastra.snapshot import Node, Service, Task, frozen_labels

JSON = dict[str, Any]

STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"


def _d(obj: Any, *keys: str) -> Any:
    """Walk nested dicts; a missing or null step gives None."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _labels(obj: Any) -> dict[str, str]:
    if not isinstance(obj, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in obj.items()}


def parse_node(raw: JSON) -> Node:
    spec = raw.get("Spec") or {}
    return Node(
        id=str(raw.get("ID", "")),
        version=int(_d(raw, "Version", "Index") or 0),
        hostname=str(_d(raw, "Description", "Hostname") or spec.get("Name") or ""),
        role=str(spec.get("Role") or ""),
        availability=str(spec.get("Availability") or ""),
        state=str(_d(raw, "Status", "State") or "unknown"),
        addr=str(_d(raw, "Status", "Addr") or ""),
        labels=frozen_labels(_labels(spec.get("Labels"))),
        spec_name=str(spec.get("Name") or ""),
        leader=bool(_d(raw, "ManagerStatus", "Leader")),
        manager_reachability=str(_d(raw, "ManagerStatus", "Reachability") or ""),
        engine_version=str(_d(raw, "Description", "Engine", "EngineVersion") or ""),
        memory_bytes=int(_d(raw, "Description", "Resources", "MemoryBytes") or 0),
        nano_cpus=int(_d(raw, "Description", "Resources", "NanoCPUs") or 0),
        updated_at=parse_time(raw.get("UpdatedAt")),
    )


def _mode(spec: JSON) -> tuple[str, int | None]:
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        return "global", None
    if "GlobalJob" in mode:
        return "global-job", None
    if "ReplicatedJob" in mode:
        return "replicated-job", None
    replicas = _d(mode, "Replicated", "Replicas")
    return "replicated", int(replicas) if replicas is not None else 1


def parse_service(raw: JSON) -> Service:
    spec = raw.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    labels = _labels(spec.get("Labels"))
    mode, replicas = _mode(spec)
    constraints = _d(template, "Placement", "Constraints") or []
    return Service(
        id=str(raw.get("ID", "")),
        version=int(_d(raw, "Version", "Index") or 0),
        name=str(spec.get("Name") or ""),
        labels=frozen_labels(labels),
        mode=mode,
        replicas=replicas,
        constraints=tuple(str(c) for c in constraints),
        image=str(_d(template, "ContainerSpec", "Image") or ""),
        stack=labels.get(STACK_NAMESPACE_LABEL),
        force_update=int(template.get("ForceUpdate") or 0),
        memory_reservation_bytes=int(_d(template, "Resources", "Reservations", "MemoryBytes") or 0),
        memory_limit_bytes=int(_d(template, "Resources", "Limits", "MemoryBytes") or 0),
    )


def parse_task(raw: JSON) -> Task:
    status = raw.get("Status") or {}
    slot = raw.get("Slot")
    return Task(
        id=str(raw.get("ID", "")),
        service_id=str(raw.get("ServiceID") or ""),
        node_id=str(raw.get("NodeID") or ""),
        slot=int(slot) if slot is not None else None,
        desired_state=str(raw.get("DesiredState") or ""),
        state=str(status.get("State") or ""),
        message=str(status.get("Message") or ""),
        error=str(status.get("Err") or ""),
        container_id=str(_d(status, "ContainerStatus", "ContainerID") or ""),
        updated_at=parse_time(status.get("Timestamp")),
        created_at=parse_time(raw.get("CreatedAt")),
    )


def parse_time(value: Any) -> float:
    """RFC 3339 with up to nanoseconds (as the Engine writes it) -> epoch seconds; 0.0 when absent/odd."""
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
