"""Bootstrap's data: what was observed of each inventory node and the Swarm, and the actions to apply.

Pure data (frozen dataclasses), shared by the observer, the pure planner and the executor. Nothing here
holds a join token: actions carry only the role to join with, and the executor reads the token from a
manager at the moment it joins a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orcastra.domain.snapshot import Node

LocalNodeState = Literal["inactive", "pending", "active", "error", "locked", ""]
Role = Literal["manager", "worker"]


@dataclass(frozen=True)
class NodeObservation:
    """One inventory node as its own Engine reports it (GET /info -> Swarm)."""

    name: str  # the inventory key (the node's hostname in config)
    endpoint: str
    reachable: bool
    error: str = ""  # why it was not reachable
    local_state: str = ""  # Swarm.LocalNodeState: inactive | pending | active | error | locked
    node_id: str = ""  # Swarm.NodeID (empty when not in a swarm)
    cluster_id: str = ""  # Swarm.Cluster.ID: only managers report it
    control_available: bool = False  # Swarm.ControlAvailable: this node is a manager
    address: str = ""  # the address the node advertises (inventory ip, else Swarm.NodeAddr, else tcp host)


@dataclass(frozen=True)
class BootstrapObservation:
    """Every inventory node's own view, plus one manager's node list (GET /nodes), taken at ``now``."""

    nodes: tuple[NodeObservation, ...]
    members: tuple[Node, ...] = ()  # the Swarm's nodes as ``manager`` lists them
    manager: str | None = None  # inventory name of the manager whose node list was read
    self_node_id: str = ""  # the Swarm node ID of the Engine Orcastra itself talks to (docker.host)
    now: float = 0.0  # epoch seconds when observed: the planner has no clock

    def node(self, name: str) -> NodeObservation | None:
        return next((n for n in self.nodes if n.name == name), None)


# --- actions ---------------------------------------------------------------------------------------


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
    """DELETE /nodes/{node_id} (force) through ``manager``: a node entry that is Down for good."""

    node: str
    node_id: str
    manager: str
    reason: str = ""
    controller: str = "bootstrap"
    kind: Literal["remove-node"] = field(default="remove-node", init=False)

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def describe(self) -> str:
        return f"remove node entry {self.node_id[:12]}"


BootstrapAction = InitSwarm | JoinSwarm | PromoteNode | DemoteNode | RemoveNode


@dataclass(frozen=True)
class BootstrapPlan:
    """What to do, and findings that explain what was refused or left alone (and why)."""

    actions: tuple[BootstrapAction, ...] = ()
    findings: tuple[str, ...] = ()
    refused: bool = False  # True: bootstrap refused to act at all (split brain)
