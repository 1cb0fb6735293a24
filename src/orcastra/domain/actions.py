"""Actions: every change Orcastra makes to the Swarm, as data. The runtime's one executor is the only thing that
applies them (or, in a dry run, only records them).

- node spec: ``UpdateNodeLabels``, ``SetNodeAvailability``;
- service spec: ``UpdateService``, ``CreateService`` (the leader lease's 0-replica placeholder);
- the Swarm's own spec: ``SetSwarmLabels`` (the pause flag, the reboot lock);
- Swarm configs (command requests): ``UpdateConfigLabels`` (claim, finish), ``RemoveConfig`` (retention);
- membership, through each node's own Engine: ``InitSwarm``, ``JoinSwarm``, ``PromoteNode``, ``DemoteNode``,
  ``RemoveNode`` (bootstrap and healing).

Every action names its ``target``, says what it changes (``describe()``) and why (``reason``), and the
controller that planned it; versioned writes carry the version they were planned on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from orcastra.domain.snapshot import EMPTY_LABELS, Node


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

    @classmethod
    def removing(cls, node: Node, keys: tuple[str, ...], reason: str, controller: str) -> UpdateNodeLabels:
        """Remove ``keys`` from ``node`` (at the version it was read at)."""
        return cls(node.id, node.hostname, node.version, remove_labels=keys, reason=reason, controller=controller)

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
    # A routine write (a lease renewal every few seconds): logged at debug, counted, not audited.
    quiet: bool = False
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


@dataclass(frozen=True)
class CreateService:
    """Create a service with 0 replicas that runs nothing and only holds ``labels`` (the leader lease). A name
    already taken is a conflict: someone else created it first."""

    service_name: str
    labels: Mapping[str, str]
    image: str
    reason: str = ""
    controller: str = ""
    quiet: bool = False
    kind: Literal["create-service"] = field(default="create-service", init=False)

    @property
    def target(self) -> str:
        return f"service/{self.service_name}"

    def describe(self) -> str:
        return "create (0 replicas) " + " ".join(f"label {k}={v}" for k, v in sorted(self.labels.items()))


@dataclass(frozen=True)
class SetSwarmLabels:
    """Change labels of the Swarm itself (``None`` removes a key), at ``swarm_version``: a compare-and-set, so a
    write planned on a Swarm that changed since is a conflict, never an overwrite."""

    changes: Mapping[str, str | None]
    swarm_version: int
    reason: str = ""
    controller: str = ""
    quiet: bool = False
    kind: Literal["set-swarm-labels"] = field(default="set-swarm-labels", init=False)

    @property
    def target(self) -> str:
        return "swarm"

    def describe(self) -> str:
        return "labels " + " ".join(f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(self.changes.items()))


# --- membership (bootstrap and healing) ------------------------------------------------------------

Role = Literal["manager", "worker"]


@dataclass(frozen=True)
class InitSwarm:
    """POST /swarm/init on ``node``, advertising ``address``:2377."""

    node: str
    address: str
    reason: str = ""
    controller: str = "bootstrap"
    kind: Literal["init-swarm"] = field(default="init-swarm", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return f"swarm init (advertise {self.address})"


@dataclass(frozen=True)
class JoinSwarm:
    """POST /swarm/join on ``node`` as ``role``, through ``manager`` (its address and a token read at apply time)."""

    node: str
    role: Role
    manager: str
    address: str
    manager_address: str
    reason: str = ""
    controller: str = "bootstrap"
    kind: Literal["join-swarm"] = field(default="join-swarm", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return f"swarm join as {self.role} via {self.manager} ({self.manager_address})"


@dataclass(frozen=True)
class PromoteNode:
    """Set Spec.Role = manager on node ``node_id``, through ``manager``."""

    node: str
    node_id: str
    manager: str
    reason: str = ""
    controller: str = "bootstrap"
    kind: Literal["promote-node"] = field(default="promote-node", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return "role manager"


@dataclass(frozen=True)
class DemoteNode:
    """Set Spec.Role = worker on node ``node_id``, through ``manager``."""

    node: str
    node_id: str
    manager: str
    reason: str = ""
    controller: str = "bootstrap"
    kind: Literal["demote-node"] = field(default="demote-node", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return "role worker"


@dataclass(frozen=True)
class RemoveNode:
    """DELETE /nodes/{node_id} (force) through ``manager``: a node entry that is Down for good. ``keep_labels``
    (the entry's labels) are kept in the Swarm's labels and given back to the node when it joins again."""

    node: str
    node_id: str
    manager: str
    reason: str = ""
    keep_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    controller: str = "bootstrap"
    kind: Literal["remove-node"] = field(default="remove-node", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return f"remove node entry {self.node_id[:12]}"


@dataclass(frozen=True)
class UpdateConfigLabels:
    """Set and remove labels of one Swarm config at ``config_version`` (its data never changes): claiming a
    command request (a stale version is a conflict: someone else took it) and recording its result."""

    config_id: str
    config_name: str
    config_version: int
    set_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    remove_labels: tuple[str, ...] = ()
    reason: str = ""
    controller: str = "commands"
    quiet: bool = True  # the command's own result is journaled and audited through what it changes
    kind: Literal["update-config-labels"] = field(default="update-config-labels", init=False)

    @property
    def target(self) -> str:
        return f"config/{self.config_name}"

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.set_labels.items())]
        parts += [f"-{k}" for k in sorted(self.remove_labels)]
        return f"labels {' '.join(parts)}"


@dataclass(frozen=True)
class RemoveConfig:
    """DELETE /configs/{config_id}: a finished command request past its retention."""

    config_id: str
    config_name: str
    reason: str = ""
    controller: str = "commands"
    quiet: bool = True
    kind: Literal["remove-config"] = field(default="remove-config", init=False)

    @property
    def target(self) -> str:
        return f"config/{self.config_name}"

    def describe(self) -> str:
        return "remove"


BootstrapAction = InitSwarm | JoinSwarm | PromoteNode | DemoteNode | RemoveNode
Action = (
    UpdateNodeLabels
    | UpdateService
    | SetNodeAvailability
    | CreateService
    | SetSwarmLabels
    | InitSwarm
    | JoinSwarm
    | PromoteNode
    | DemoteNode
    | RemoveNode
    | UpdateConfigLabels
    | RemoveConfig
)


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
