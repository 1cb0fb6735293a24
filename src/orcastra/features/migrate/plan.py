"""The label migration planner: the earlier tool's anchor labels and constraints moved to Orcastra's.

The earlier tool put the plain label ``<anchor>=true`` (the ``dependencies.yml`` key) on the node where an
anchor ran, and users wrote ``node.labels.<anchor>==true`` on its dependents. Orcastra's colocation uses
``orcastra.anchor.<full service name>`` and ``node.labels.orcastra.anchor.<service>==true`` (see
``features.colocation``). A dependent left with both constraints needs both labels on one node: once the old
label stays behind on a node the anchor left, it can run nowhere.

The move never leaves a dependent without a node. Each step is planned from a fresh snapshot, and a step only
when the previous one is observed done (level-based: run it again at any point and it picks up where it is):

1. on every node where the anchor runs: Orcastra's label, and the old label too (so the anchor's node
   satisfies both constraints); on every service with the old constraint: Orcastra's constraint added (the
   old one kept);
2. once every service concerned is settled (its tasks run, none pending): the old constraints removed;
3. once those services have settled again: the old labels removed from every node.

An anchor that runs nowhere is left as it is (a note says so): there is no node to give the new label to.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from orcastra.domain.actions import Action, UpdateNodeLabels, UpdateService
from orcastra.domain.labels import ADDED_CONSTRAINT_LABEL, LABEL_TRUE
from orcastra.domain.placement import NODE_LABEL_PREFIX, has_constraint, parse_constraint
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.features.colocation.plan import anchor_constraint, anchor_label_key

CONTROLLER = "migrate"


@dataclass(frozen=True)
class OldAnchor:
    """An anchor as the earlier tool named it: ``old_key`` (its label key) and its full service name."""

    old_key: str
    service: str
    dependents: tuple[str, ...] = ()


@dataclass(frozen=True)
class MigrationPlan:
    """``step``: 1, 2 or 3 (what ``actions`` do), 0 when the snapshot must settle first, None when there is
    nothing (left) to migrate. ``found``: what old-style labels and constraints remain; ``notes``: why
    something is left as it is."""

    step: int | None
    actions: tuple[Action, ...] = ()
    found: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    waiting_for: tuple[str, ...] = field(default=())

    @property
    def done(self) -> bool:
        return self.step is None


def old_constraint_of(svc: Service, old_key: str) -> str | None:
    """The constraint ``node.labels.<old_key>==true`` as written on ``svc``, if it has one."""
    for expression in svc.constraints:
        c = parse_constraint(expression)
        if c is not None and c.equal and c.value.casefold() == LABEL_TRUE and c.key == NODE_LABEL_PREFIX + old_key:
            return expression
    return None


def _settled(snapshot: Snapshot, svc: Service) -> bool:
    """Every task Swarm wants running runs (none pending, starting or being replaced)."""
    live = [t for t in snapshot.tasks_of(svc.id) if t.desired_state == "running"]
    running = snapshot.running_tasks(svc.id)
    return len(running) == len(live) and (svc.replicas is None or len(running) >= svc.replicas)


def plan_migration(snapshot: Snapshot, anchors: tuple[OldAnchor, ...]) -> MigrationPlan:
    """The next step of the migration for ``snapshot`` (see the module docstring)."""
    found: list[str] = []
    notes: list[str] = []
    step1: list[Action] = []
    label_sets: dict[str, dict[str, str]] = {}
    movable: list[tuple[OldAnchor, list[Service]]] = []
    for a in anchors:
        labelled = [n for n in snapshot.nodes if n.labels.get(a.old_key, "").casefold() == LABEL_TRUE]
        constrained = [s for s in snapshot.services if old_constraint_of(s, a.old_key) is not None]
        found += [f"node {n.hostname}: label {a.old_key}=true" for n in labelled]
        found += [f"service {s.name}: constraint {old_constraint_of(s, a.old_key)}" for s in constrained]
        if not labelled and not constrained:
            continue
        anchor = snapshot.service(a.service)
        nodes = sorted({t.node_id for t in snapshot.running_tasks(anchor.id)}) if anchor is not None else []
        if not nodes:
            notes.append(f"{a.service} runs nowhere: its old labels and constraints stay until it runs")
            continue
        movable.append((a, constrained))
        for node_id in nodes:
            node = snapshot.node(node_id)
            want = {anchor_label_key(a.service): LABEL_TRUE, a.old_key: LABEL_TRUE}
            if node is not None and any(node.labels.get(k) != v for k, v in want.items()):
                label_sets.setdefault(node_id, {}).update(want)
        for svc in constrained:
            if not has_constraint(svc.constraints, anchor_constraint(a.service)):
                follows = svc.name in a.dependents
                step1.append(
                    UpdateService(
                        service_id=svc.id,
                        service_name=svc.name,
                        service_version=svc.version,
                        add_constraints=(anchor_constraint(a.service),),
                        # Orcastra's to remove again if it stops following (as colocation marks what it adds).
                        set_labels=MappingProxyType({ADDED_CONSTRAINT_LABEL: a.service} if follows else {}),
                        reason=f"migrate step 1: {anchor_constraint(a.service)} beside the old constraint",
                        controller=CONTROLLER,
                    )
                )
    step1 = [*_label_actions(snapshot, label_sets), *step1]
    if step1:
        return MigrationPlan(1, tuple(step1), tuple(found), tuple(notes))
    return _later_steps(snapshot, movable, tuple(found), tuple(notes))


def _label_actions(snapshot: Snapshot, label_sets: Mapping[str, Mapping[str, str]]) -> list[Action]:
    out: list[Action] = []
    for node_id, labels in sorted(label_sets.items()):
        node = snapshot.node(node_id)
        if node is not None:
            out.append(
                UpdateNodeLabels(
                    node_id=node.id,
                    hostname=node.hostname,
                    node_version=node.version,
                    set_labels=MappingProxyType(dict(labels)),
                    reason="migrate step 1: the anchor runs here (Orcastra's label, and the old one kept)",
                    controller=CONTROLLER,
                )
            )
    return out


def _later_steps(
    snapshot: Snapshot, movable: list[tuple[OldAnchor, list[Service]]], found: tuple[str, ...], notes: tuple[str, ...]
) -> MigrationPlan:
    """Steps 2 and 3, once step 1 is done: each only when the services concerned have settled."""
    # Every service placed by a moved anchor: those just updated are rolling their tasks.
    services = {
        s.name: s
        for a, constrained in movable
        for s in snapshot.services
        if s in constrained or has_constraint(s.constraints, anchor_constraint(a.service))
    }
    unsettled = tuple(sorted(name for name, s in services.items() if not _settled(snapshot, s)))
    if unsettled:
        return MigrationPlan(0, (), found, notes, unsettled)
    step2: list[Action] = []
    for a, constrained in movable:
        for svc in constrained:
            old = old_constraint_of(svc, a.old_key)
            step2.append(
                UpdateService(
                    service_id=svc.id,
                    service_name=svc.name,
                    service_version=svc.version,
                    remove_constraints=(old or "",),
                    reason=f"migrate step 2: the old constraint {old} goes ({anchor_constraint(a.service)} stays)",
                    controller=CONTROLLER,
                )
            )
    if step2:
        return MigrationPlan(2, tuple(step2), found, notes)
    step3: list[Action] = []
    for node in snapshot.nodes:
        old_keys = tuple(sorted(a.old_key for a, _ in movable if a.old_key in node.labels))
        if old_keys:
            reason = "migrate step 3: no service names the old labels any more"
            step3.append(UpdateNodeLabels.removing(node, old_keys, reason, CONTROLLER))
    if step3:
        return MigrationPlan(3, tuple(step3), found, notes)
    return MigrationPlan(None, (), found, notes)
