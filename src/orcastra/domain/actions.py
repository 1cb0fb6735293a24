"""Actions: what a planner wants done, as data. The executor is the only thing that applies them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from orcastra.domain.snapshot import EMPTY_LABELS


@dataclass(frozen=True)
class UpdateNodeLabels:
    """Set and remove labels on one node, based on the node spec at ``node_version``.

    ``set_labels`` are written (added or changed); ``remove_labels`` are deleted if present. The
    executor sends the whole spec with ``node_version``; a stale version is a conflict, not an overwrite.
    """

    node_id: str
    hostname: str
    node_version: int
    set_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    remove_labels: tuple[str, ...] = ()
    reason: str = ""
    controller: str = ""
    kind: Literal["update-node-labels"] = field(default="update-node-labels", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.hostname}"

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.set_labels.items())]
        parts += [f"-{k}" for k in sorted(self.remove_labels)]
        return f"labels {' '.join(parts)}"


@dataclass(frozen=True)
class UpdateService:
    """Change one service at ``service_version``: add placement constraints, set/remove service labels,
    and optionally force a rolling restart of its tasks (``ForceUpdate`` + 1).

    Service labels (``Spec.Labels``) are not part of the task template, so changing only them restarts
    nothing; adding a constraint or forcing does (Swarm replaces the tasks, honouring update_config).
    """

    service_id: str
    service_name: str
    service_version: int
    add_constraints: tuple[str, ...] = ()
    remove_constraints: tuple[str, ...] = ()
    set_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    remove_labels: tuple[str, ...] = ()
    force: bool = False
    reason: str = ""
    controller: str = ""
    kind: Literal["update-service"] = field(default="update-service", init=False)

    @property
    def target(self) -> str:
        return f"service/{self.service_name}"

    def describe(self) -> str:
        parts = [f"+constraint {c}" for c in self.add_constraints]
        parts += [f"-constraint {c}" for c in self.remove_constraints]
        parts += [f"label {k}={v}" for k, v in sorted(self.set_labels.items())]
        parts += [f"-label {k}" for k in sorted(self.remove_labels)]
        if self.force:
            parts.insert(0, "force restart")
        return ", ".join(parts) or "no change"


@dataclass(frozen=True)
class SetNodeAvailability:
    """Set a node's availability (active | pause | drain) at ``node_version``; its labels stay as they are."""

    node_id: str
    hostname: str
    node_version: int
    availability: Literal["active", "pause", "drain"]
    reason: str = ""
    controller: str = ""
    kind: Literal["set-node-availability"] = field(default="set-node-availability", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.hostname}"

    def describe(self) -> str:
        return f"availability {self.availability}"


Action = UpdateNodeLabels | UpdateService | SetNodeAvailability


def merge_node_label_updates(actions: list[Action] | tuple[Action, ...]) -> list[Action]:
    """One label update per node: several controllers may plan labels for the same node in a cycle, and
    two updates at the same ``version`` would make the second a conflict. Later sets win; a key both set
    and removed is set (removal only ever concerns keys nobody wants). Other actions keep their order."""
    merged: dict[str, Action] = {}
    order: list[str] = []
    for i, a in enumerate(actions):
        if not isinstance(a, UpdateNodeLabels):
            merged[f"#{i}"] = a
            order.append(f"#{i}")
            continue
        prev = merged.get(a.node_id)
        if not isinstance(prev, UpdateNodeLabels):
            merged[a.node_id] = a
            order.append(a.node_id)
            continue
        sets = {**prev.set_labels, **a.set_labels}
        removes = tuple(sorted((set(prev.remove_labels) | set(a.remove_labels)) - sets.keys()))
        merged[a.node_id] = UpdateNodeLabels(
            node_id=a.node_id,
            hostname=a.hostname,
            node_version=min(prev.node_version, a.node_version),
            set_labels=sets,
            remove_labels=removes,
            reason=f"{prev.reason}; {a.reason}",
            controller=f"{prev.controller}+{a.controller}" if prev.controller != a.controller else a.controller,
        )
    out = [merged[k] for k in order]
    # Label removals go last: Swarm's constraint enforcer evicts running tasks from a node the moment it
    # loses a label they need, so the node that gains the label must have it first (else the tasks sit
    # Pending in between). A stable sort keeps every other order as planned.
    return sorted(out, key=lambda a: isinstance(a, UpdateNodeLabels) and bool(a.remove_labels))
