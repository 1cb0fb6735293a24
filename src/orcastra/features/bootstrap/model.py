"""Bootstrap's data: what was observed of each inventory node and the Swarm, and the plan (its actions are
``orcastra.domain.actions``: the one executor applies them like every other write).

Pure data (frozen dataclasses), shared by the observer, the pure planner and the executor. Nothing here
holds a join token: actions carry only the role to join with, and the executor reads the token from a
manager at the moment it joins a node.
"""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.actions import BootstrapAction
from orcastra.domain.snapshot import Node


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
    system_time: float | None = None  # the node's own clock (GET /info SystemTime), epoch seconds


@dataclass(frozen=True)
class BootstrapObservation:
    """Every inventory node's own view, plus one manager's node list (GET /nodes), taken at ``now``."""

    nodes: tuple[NodeObservation, ...]
    members: tuple[Node, ...] = ()  # the Swarm's nodes as ``manager`` lists them
    manager: str | None = None  # inventory name of the manager whose node list was read
    self_node_id: str = ""  # the Swarm node ID of the Engine Orcastra itself talks to (docker.host)
    now: float = 0.0  # epoch seconds when observed, on the manager's clock when it told it: the planner has none

    def node(self, name: str) -> NodeObservation | None:
        return next((n for n in self.nodes if n.name == name), None)


@dataclass(frozen=True)
class BootstrapPlan:
    """What to do, and findings that explain what was refused or left alone (and why)."""

    actions: tuple[BootstrapAction, ...] = ()
    findings: tuple[str, ...] = ()
    refused: bool = False  # True: bootstrap refused to act at all (split brain)
