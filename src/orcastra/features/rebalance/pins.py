"""Placement pins: how a rebalancing move lands on the node the planner chose, and stays there.

A move of service ``S`` (an anchor, or a plain service) to node ``N``:
- node ``N`` gets the Orcastra-owned label ``orcastra.place.S=true`` (and the node ``S`` was pinned to before,
  if any, loses it: labels are added before they are removed);
- ``S`` gets the placement constraint ``node.labels.orcastra.place.S==true`` if it lacks it (that update
  reschedules its tasks, onto ``N``, the only node carrying the label); a later move only moves the label, and
  Swarm's constraint enforcer moves the tasks;
- ``S``'s own labels record the move (``orcastra.rebalance.moved-from/-to/-at``, ``move-state=moving``): the
  anti-flap memory of recent moves (``history.with_recorded_moves``) and the moves in flight live in the
  Swarm and survive an Orcastra restart or a change of leader.

Every cycle the move is followed through (``tracking.track_moves``: converged, or rolled back when it does not
converge within ``move_timeout_seconds``) and ``plan_pins`` keeps pins healthy:
- a pin constraint removed by ``docker stack deploy`` is put back (the pin is not undone by a deploy);
- a pin whose node is not Ready or not active (failed, drained, paused) for ``release_after_seconds`` is
  released (label and constraint removed) so Swarm can run the service elsewhere: a pin must never keep a
  service down;
- labels of services that no longer exist, and constraints whose label no node carries, are removed.

Pure: no I/O, no clock (``now`` is a parameter).
"""

from __future__ import annotations

from collections.abc import Collection
from types import MappingProxyType

from orcastra.domain.actions import Action, UpdateNodeLabels, UpdateService
from orcastra.domain.labels import MOVE_STATE_LABEL, MOVED_AT_LABEL, MOVED_FROM_LABEL, MOVED_TO_LABEL, PIN_LABEL_PREFIX
from orcastra.domain.placement import has_constraint
from orcastra.domain.plan import Finding, Plan
from orcastra.domain.snapshot import Node, Service, Snapshot
from orcastra.features.rebalance.labels import MOVING, ROLLED_BACK, pin_label_key

RELEASE_AFTER_SECONDS = 30.0
CONTROLLER = "pins"


def pin_constraint(service: str) -> str:
    return f"node.labels.{pin_label_key(service)}==true"


def has_pin_constraint(svc: Service) -> bool:
    return has_constraint(svc.constraints, pin_constraint(svc.name))


def pinned_nodes(snapshot: Snapshot, service: str) -> list[Node]:
    key = pin_label_key(service)
    return [n for n in snapshot.nodes if n.labels.get(key) == "true"]


def plan_move(  # noqa: PLR0913 - the move's parts: what, where to, where from, when and why
    snapshot: Snapshot, pin_service: str, to_node: str, from_node: str, *, now: float, reason: str
) -> list[Action]:
    """The actions that move ``pin_service`` to ``to_node``: label the target, unlabel a previous pin, add
    the constraint if missing, and record the move in the service's labels."""
    svc = snapshot.service(pin_service)
    target = snapshot.node_by_hostname(to_node)
    if svc is None or target is None:
        return []
    key = pin_label_key(pin_service)
    actions: list[Action] = [
        UpdateNodeLabels(
            node_id=target.id,
            hostname=target.hostname,
            node_version=target.version,
            set_labels=MappingProxyType({key: "true"}),
            reason=f"rebalance: pin {pin_service} here ({reason})",
            controller="rebalance",
        )
    ]
    for old in pinned_nodes(snapshot, pin_service):
        if old.id != target.id:
            actions.append(
                UpdateNodeLabels(
                    node_id=old.id,
                    hostname=old.hostname,
                    node_version=old.version,
                    remove_labels=(key,),
                    reason=f"rebalance: {pin_service} moves to {to_node}",
                    controller="rebalance",
                )
            )
    actions.append(
        UpdateService(
            service_id=svc.id,
            service_name=svc.name,
            service_version=svc.version,
            add_constraints=() if has_pin_constraint(svc) else (pin_constraint(svc.name),),
            set_labels=MappingProxyType(
                {
                    MOVED_FROM_LABEL: from_node,
                    MOVED_TO_LABEL: to_node,
                    MOVED_AT_LABEL: f"{now:.0f}",
                    MOVE_STATE_LABEL: MOVING,
                }
            ),
            reason=f"rebalance: move {from_node} -> {to_node} ({reason})",
            controller="rebalance",
        )
    )
    return actions


def plan_release(snapshot: Snapshot, service: str, reason: str) -> list[Action]:
    """Undo a pin: remove the label from every node and the constraint from the service; a move still
    ``moving`` is marked ``rolled-back`` (in the same service update)."""
    key = pin_label_key(service)
    actions: list[Action] = [
        UpdateNodeLabels(
            node_id=n.id,
            hostname=n.hostname,
            node_version=n.version,
            remove_labels=(key,),
            reason=f"release pin of {service}: {reason}",
            controller=CONTROLLER,
        )
        for n in pinned_nodes(snapshot, service)
    ]
    svc = snapshot.service(service)
    if svc is None:
        return actions
    constraint = (pin_constraint(svc.name),) if has_pin_constraint(svc) else ()
    moving = svc.labels.get(MOVE_STATE_LABEL) == MOVING
    if constraint or moving:
        actions.append(
            UpdateService(
                service_id=svc.id,
                service_name=svc.name,
                service_version=svc.version,
                remove_constraints=constraint,
                set_labels=MappingProxyType({MOVE_STATE_LABEL: ROLLED_BACK} if moving else {}),
                reason=f"release pin: {reason}",
                controller=CONTROLLER,
            )
        )
    return actions


def plan_pins(
    snapshot: Snapshot,
    now: float,
    release_after_seconds: float = RELEASE_AFTER_SECONDS,
    *,
    skip: Collection[str] = frozenset(),
) -> Plan:
    """Keep every pin healthy (see the module docstring). ``skip``: services whose pin another plan of this
    cycle changes already (``tracking.MoveTracking.changed_services``); they are looked at next cycle."""
    actions: list[Action] = []
    findings: list[Finding] = []
    wake_at: float | None = None
    pinned: dict[str, list[Node]] = {}
    for node in snapshot.nodes:
        for key, value in node.labels.items():
            if key.startswith(PIN_LABEL_PREFIX) and value == "true":
                pinned.setdefault(key[len(PIN_LABEL_PREFIX) :], []).append(node)
    for service, nodes in sorted(pinned.items()):
        if service in skip:
            continue
        svc = snapshot.service(service)
        if svc is None:
            actions += plan_release(snapshot, service, "the service no longer exists")
            continue
        healthy = [n for n in nodes if n.ready and n.availability == "active"]
        if not healthy:
            since = max(n.updated_at for n in nodes)
            if now - since >= release_after_seconds:
                actions += plan_release(
                    snapshot, service, f"pinned node {', '.join(n.hostname for n in nodes)} is not Ready/active"
                )
                findings.append(
                    Finding(
                        service, "pinned node is not available: pin released so Swarm can run it elsewhere", "warning"
                    )
                )
            else:
                due = since + release_after_seconds
                wake_at = due if wake_at is None else min(wake_at, due)
                findings.append(Finding(service, f"pinned node not available; releasing the pin at +{due - now:.0f}s"))
            continue
        if not has_pin_constraint(svc):
            actions.append(
                UpdateService(
                    service_id=svc.id,
                    service_name=svc.name,
                    service_version=svc.version,
                    add_constraints=(pin_constraint(svc.name),),
                    reason=f"rebalance pin to {', '.join(n.hostname for n in healthy)} lost its constraint "
                    "(a stack deploy?); restored",
                    controller=CONTROLLER,
                )
            )
    for svc in snapshot.services:
        if has_pin_constraint(svc) and svc.name not in pinned and svc.name not in skip:
            actions += plan_release(
                snapshot, svc.name, "pin constraint without a pinned node (its tasks could never be scheduled)"
            )
    return Plan(tuple(actions), tuple(findings), wake_at)
