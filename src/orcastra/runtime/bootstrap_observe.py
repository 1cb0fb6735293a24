"""Observing for bootstrap: every inventory node's own view (GET /info) and one manager's node list.

Each node is asked through its own Engine endpoint; a node that does not answer is recorded as
unreachable, never an error for the whole cycle. The node list comes from the Engine Orcastra talks to
when it is a manager, else from the first inventory manager that answers.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Callable, Mapping

from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.domain.snapshot import Node
from orcastra.errors import EngineError
from orcastra.features.bootstrap.model import BootstrapObservation, NodeObservation
from orcastra.features.inventory import NodeSettings

log = logging.getLogger(__name__)

Connect = Callable[[str], SwarmEngine]


def endpoint_address(endpoint: str) -> str:
    """The IP of a tcp:// or ssh:// endpoint when it is written as an IP literal, else ''."""
    host = urllib.parse.urlparse(endpoint).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def observe_node(name: str, settings: NodeSettings, engine: SwarmEngine) -> NodeObservation:
    endpoint = settings.endpoint or ""
    try:
        local = engine.local_swarm()
    except EngineError as e:
        return NodeObservation(name=name, endpoint=endpoint, reachable=False, error=str(e))
    # The inventory's ip wins: it is what the operator wants advertised; a member's NodeAddr is what it
    # advertises already; a tcp:// endpoint's IP is the last guess (the Engine cannot tell us its own IP).
    address = settings.ip or local.node_addr or endpoint_address(endpoint)
    return NodeObservation(
        name=name,
        endpoint=endpoint,
        reachable=True,
        local_state=local.local_state,
        node_id=local.node_id,
        cluster_id=local.cluster_id,
        control_available=local.control_available,
        address=address,
        system_time=local.system_time,
    )


def observe_bootstrap(
    inventory: Mapping[str, NodeSettings],
    connect: Connect,
    *,
    self_endpoint: str | None,
    now: float,
) -> BootstrapObservation:
    """Ask every inventory node with an endpoint, then one manager for the node list. ``now`` (Orcastra's clock)
    is replaced by that manager's own time when it reported it."""
    nodes: list[NodeObservation] = []
    for name, settings in inventory.items():
        if not settings.endpoint:
            continue
        with connect(settings.endpoint) as engine:
            nodes.append(observe_node(name, settings, engine))

    self_node_id = ""
    known = {o.endpoint: o for o in nodes}
    if self_endpoint:
        if self_endpoint in known:
            self_node_id = known[self_endpoint].node_id
        else:
            with connect(self_endpoint) as engine:
                try:
                    self_node_id = engine.local_swarm().node_id
                except EngineError as e:
                    log.info("bootstrap: the Engine Orcastra talks to (%s) did not answer: %s", self_endpoint, e)

    managers = [o for o in nodes if o.reachable and o.control_available]
    managers.sort(key=lambda o: o.node_id != self_node_id)  # Orcastra's own Engine first
    members: tuple[Node, ...] = ()
    manager: str | None = None
    for o in managers:
        with connect(o.endpoint) as engine:
            try:
                members = engine.list_nodes()
            except EngineError as e:
                log.info("bootstrap: %s could not list the Swarm's nodes: %s", o.name, e)
                continue
        manager = o.name
        # Node times (UpdatedAt) are the managers' clocks: compare them with the manager's own time, so a
        # skewed Orcastra host never sees a node Down for longer than it was.
        now = o.system_time or now
        break
    return BootstrapObservation(
        nodes=tuple(nodes), members=members, manager=manager, self_node_id=self_node_id, now=now
    )
