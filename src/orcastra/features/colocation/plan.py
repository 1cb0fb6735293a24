"""The colocation planner: dependents run on the node(s) where their anchor runs.

Mechanism (Swarm cannot say "run where service X runs"):
- every node running a task of anchor ``S`` carries the node label ``orcastra.anchor.S=true`` (``S`` is the
  full service name, ``<stack>_<name>``, so keys never collide across stacks);
- every dependent carries the placement constraint ``node.labels.orcastra.anchor.S==true`` (added if missing);
- when the anchor moves, the new node gets the label first, then the old node loses it; Swarm's constraint
  enforcer then evicts the dependents' tasks from the old node and the orchestrator starts them beside the
  anchor. A forced update is used only when that did not happen within a grace period.

An anchor with no running task is restarted (forced update) with exponential backoff; the attempt count
and time live in the anchor service's own labels (``orcastra.restart.*``), so the backoff survives an
Orcastra restart and a move to another manager. It resets only once the group is colocated.

Which services form a group is ``groups`` (config + ``orcastra.follow`` labels); what the planner reports is
``status``. Pure: ``plan_colocation(snapshot, settings, now)`` reads the snapshot and returns actions; no I/O,
no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from orcastra.domain.actions import Action, UpdateNodeLabels, UpdateService
from orcastra.domain.labels import (
    ADDED_CONSTRAINT_LABEL,
    ANCHOR_LABEL_PREFIX,
    DEPENDENTS_PENDING_LABEL,
    LABEL_TRUE,
    RESTART_AT_LABEL,
    RESTART_ATTEMPTS_LABEL,
)
from orcastra.domain.placement import NODE_LABEL_PREFIX, has_constraint, parse_constraint
from orcastra.domain.plan import Finding, Plan
from orcastra.domain.snapshot import LIVE_DESIRED_STATES, TERMINAL_TASK_STATES, Service, Snapshot, Task
from orcastra.features.colocation.groups import AnchorGroup, ColocationSettings, group_service_ids, resolve_groups
from orcastra.features.colocation.status import ColocationPlan, DependentStatus, GroupStatus, group_statuses

# The names below from ``groups`` and ``status`` are also importable from here for modules that import them
# this way today (runtime/, features/rebalance/); anything else imports them from their own module.
__all__ = [
    "CONTROLLER",
    "AnchorGroup",
    "ColocationSettings",
    "anchor_constraint",
    "anchor_label_key",
    "group_service_ids",
    "group_statuses",
    "plan_colocation",
    "resolve_groups",
]

CONTROLLER = "colocation"


def anchor_label_key(anchor: str) -> str:
    return ANCHOR_LABEL_PREFIX + anchor


def anchor_constraint(anchor: str) -> str:
    return f"node.labels.{anchor_label_key(anchor)}==true"


def _anchor_constraints(constraints: tuple[str, ...]) -> list[tuple[str, str]]:
    """(anchor, the constraint as written) for each ``node.labels.orcastra.anchor.<S>==true`` constraint."""
    out = []
    for expression in constraints:
        c = parse_constraint(expression)
        if c is None or not c.equal or c.value.casefold() != LABEL_TRUE:
            continue
        if c.key.casefold().startswith(NODE_LABEL_PREFIX):
            label = c.key[len(NODE_LABEL_PREFIX) :]
            if label.startswith(ANCHOR_LABEL_PREFIX):
                out.append((label[len(ANCHOR_LABEL_PREFIX) :], expression))
    return out


def plan_colocation(snapshot: Snapshot, settings: ColocationSettings, now: float) -> ColocationPlan:
    groups, findings = resolve_groups(snapshot, settings)
    planner = _Planner(snapshot, settings, now)
    planner.findings.extend(findings)
    statuses = tuple(planner.plan_group(g) for g in groups)
    planner.orphan_labels(groups)
    planner.orphan_constraints(groups)
    return ColocationPlan(Plan(tuple(planner.actions()), tuple(planner.findings), planner.wake_at, statuses), statuses)


@dataclass
class _ServiceChange:
    service: Service
    add_constraints: list[str] = field(default_factory=list)
    remove_constraints: list[str] = field(default_factory=list)
    set_labels: dict[str, str] = field(default_factory=dict)
    remove_labels: list[str] = field(default_factory=list)
    force: bool = False
    reasons: list[str] = field(default_factory=list)

    def action(self) -> UpdateService:
        return UpdateService(
            service_id=self.service.id,
            service_name=self.service.name,
            service_version=self.service.version,
            add_constraints=tuple(self.add_constraints),
            remove_constraints=tuple(self.remove_constraints),
            set_labels=MappingProxyType(dict(self.set_labels)),
            remove_labels=tuple(self.remove_labels),
            force=self.force,
            reason="; ".join(self.reasons),
            controller=CONTROLLER,
        )


def _int_label(labels: Mapping[str, str], key: str) -> int:
    try:
        return max(0, int(labels.get(key, "0")))
    except ValueError:
        return 0


def _float_label(labels: Mapping[str, str], key: str) -> float:
    try:
        return float(labels.get(key, "0"))
    except ValueError:
        return 0.0


def _newest(tasks: tuple[Task, ...]) -> Task | None:
    return max(tasks, key=lambda t: (t.updated_at, t.created_at), default=None)


def _task_problem(task: Task | None) -> str:
    if task is None:
        return "no task"
    detail = task.error or task.message
    return f"{task.state}" + (f": {detail}" if detail else "")


@dataclass(frozen=True)
class _AnchorPlacement:
    """Where an anchor runs, since when, and whether its labels are being moved this cycle."""

    nodes: frozenset[str]
    started_at: float
    labels_changed_at: float
    labels_moving: bool


class _Planner:
    def __init__(self, snapshot: Snapshot, settings: ColocationSettings, now: float) -> None:
        self.snapshot = snapshot
        self.settings = settings
        self.now = now
        self.node_sets: dict[str, dict[str, str]] = {}
        self.node_removes: dict[str, list[str]] = {}
        self.node_reasons: dict[str, list[str]] = {}
        self.changes: dict[str, _ServiceChange] = {}
        self.findings: list[Finding] = []
        self.wake_at: float | None = None

    def wake(self, at: float) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def change(self, svc: Service) -> _ServiceChange:
        return self.changes.setdefault(svc.id, _ServiceChange(svc))

    def hostname(self, node_id: str) -> str:
        node = self.snapshot.node(node_id)
        return node.hostname if node is not None else node_id[:12]

    def label_node(self, node_id: str, key: str, reason: str) -> None:
        self.node_sets.setdefault(node_id, {})[key] = LABEL_TRUE
        self.node_reasons.setdefault(node_id, []).append(reason)

    def unlabel_node(self, node_id: str, key: str, reason: str) -> None:
        self.node_removes.setdefault(node_id, []).append(key)
        self.node_reasons.setdefault(node_id, []).append(reason)

    def plan_group(self, group: AnchorGroup) -> GroupStatus:
        anchor = self.snapshot.service(group.anchor)
        if anchor is None:
            self.findings.append(Finding(group.anchor, "anchor service not found in the Swarm", "warning"))
            return GroupStatus(group.anchor, group.source, (), False, "anchor service not found")
        where = self.label_anchor_nodes(group, anchor)
        restart_attempts = _int_label(anchor.labels, RESTART_ATTEMPTS_LABEL)
        next_restart_at: float | None = None
        why_not: list[str] = []
        if not where.nodes:
            next_restart_at, why = self.plan_anchor_restart(group, anchor)
            why_not.append(why)
        elif anchor.labels.get(DEPENDENTS_PENDING_LABEL) == LABEL_TRUE:
            self.restart_dependents(group, anchor)
        dep_statuses = tuple(self.plan_dependent(group, dep_name, where) for dep_name in group.dependents)
        colocated = bool(where.nodes) and all(d.colocated for d in dep_statuses)
        why_not += [f"{d.name}: {d.why}" for d in dep_statuses if not d.colocated]
        if colocated:
            self.reset_group_backoff(group, anchor)
            restart_attempts = 0
        return GroupStatus(
            anchor=group.anchor,
            source=group.source,
            anchor_nodes=tuple(sorted(self.hostname(n) for n in where.nodes)),
            colocated=colocated,
            why="; ".join(why_not),
            dependents=dep_statuses,
            restart_attempts=restart_attempts,
            next_restart_at=next_restart_at,
        )

    def label_anchor_nodes(self, group: AnchorGroup, anchor: Service) -> _AnchorPlacement:
        """Give the anchor label to the nodes the anchor runs on and take it from the others (none changes
        while the anchor runs nowhere: its dependents stay where they are); where the anchor runs."""
        snap = self.snapshot
        key = anchor_label_key(group.anchor)
        running = snap.running_tasks(anchor.id)
        anchor_nodes = sorted({t.node_id for t in running})
        labelled = sorted(n.id for n in snap.nodes if key in n.labels)
        if anchor_nodes:
            for node_id in anchor_nodes:
                node = snap.node(node_id)
                if node is not None and node.labels.get(key) != LABEL_TRUE:
                    self.label_node(node_id, key, f"anchor {group.anchor} runs here")
            for node_id in labelled:
                if node_id not in anchor_nodes:
                    self.unlabel_node(node_id, key, f"anchor {group.anchor} no longer runs here")
        return _AnchorPlacement(
            nodes=frozenset(anchor_nodes),
            started_at=max((t.updated_at for t in running), default=0.0),
            labels_changed_at=max(
                (n.updated_at for n_id in anchor_nodes if (n := snap.node(n_id)) is not None), default=0.0
            ),
            labels_moving=bool(anchor_nodes) and (set(anchor_nodes) != set(labelled)),
        )

    def restart_dependents(self, group: AnchorGroup, anchor: Service) -> None:
        """The anchor runs again after Orcastra restarted it: now restart its dependents (fresh connections
        to the restarted anchor), once."""
        c = self.change(anchor)
        c.remove_labels.append(DEPENDENTS_PENDING_LABEL)
        c.reasons.append("anchor runs again; dependents restarted")
        for dep_name in group.dependents:
            dep = self.snapshot.service(dep_name)
            if dep is not None:
                dc = self.change(dep)
                dc.force = True
                dc.reasons.append(f"restart_dependents: anchor {group.anchor} was restarted")

    def reset_group_backoff(self, group: AnchorGroup, anchor: Service) -> None:
        self.reset_backoff(anchor)
        for dep_name in group.dependents:
            dep = self.snapshot.service(dep_name)
            if dep is not None:
                self.reset_backoff(dep)

    def reset_backoff(self, svc: Service) -> None:
        stale = [k for k in (RESTART_ATTEMPTS_LABEL, RESTART_AT_LABEL) if k in svc.labels]
        if stale:
            c = self.change(svc)
            c.remove_labels.extend(stale)
            c.reasons.append("group colocated: backoff reset")

    def backoff_due(self, svc: Service, intervals: tuple[float, ...], since: float) -> tuple[int, float, float]:
        """(attempts so far, the delay of the next attempt, when it is due)."""
        attempts = _int_label(svc.labels, RESTART_ATTEMPTS_LABEL)
        delay = intervals[min(attempts, len(intervals) - 1)]
        last = _float_label(svc.labels, RESTART_AT_LABEL) if attempts else since
        return attempts, delay, last + delay

    def plan_anchor_restart(self, group: AnchorGroup, anchor: Service) -> tuple[float | None, str]:
        if anchor.mode == "replicated" and anchor.replicas == 0:
            return None, "anchor is scaled to 0"
        snap = self.snapshot
        every = snap.tasks_of(anchor.id)
        # Swarm's own next try: desired running, or ready while it waits out the restart delay. A task still
        # "running" on a node that is not Ready is dead; Swarm replaces it by itself.
        wanted = tuple(t for t in every if t.desired_state in LIVE_DESIRED_STATES)
        lost = tuple(t for t in wanted if t.node_id and not snap.on_ready_node(t))
        live = tuple(t for t in wanted if t not in lost)
        newest = _newest(live) or _newest(lost) or _newest(every)
        problem = _task_problem(newest)
        if newest is not None and newest in lost:
            node = snap.node(newest.node_id)
            problem = f"its node {self.hostname(newest.node_id)} is {node.state if node else 'gone'}"
            # Swarm reschedules the tasks of a node it sees down: give it the same grace as a pending task.
            lost_at = max(newest.updated_at, node.updated_at if node is not None else 0.0)
            since = lost_at + self.settings.pending_grace_seconds
        elif newest is not None and newest.state not in TERMINAL_TASK_STATES and newest.state != "running":
            # Still on its way (ready for a restart delay, pending, assigned, preparing: an image pull can
            # take a while).
            since = (newest.created_at or newest.updated_at) + self.settings.pending_grace_seconds
        elif newest is not None:
            since = newest.updated_at
        else:
            since = 0.0
        attempts, delay, due = self.backoff_due(anchor, group.retry_intervals, since)
        if self.now < due:
            self.wake(due)
            when = (
                f"attempt {attempts + 1} at +{due - self.now:.0f}s"
                if attempts
                else f"restart at +{due - self.now:.0f}s"
            )
            return due, f"anchor not running ({problem}); backing off ({when})"
        c = self.change(anchor)
        c.force = True
        c.set_labels[RESTART_ATTEMPTS_LABEL] = str(attempts + 1)
        c.set_labels[RESTART_AT_LABEL] = f"{self.now:.0f}"
        if group.restart_dependents:
            c.set_labels[DEPENDENTS_PENDING_LABEL] = LABEL_TRUE
        c.reasons.append(f"anchor has no running task ({problem}); restart attempt {attempts + 1} (after {delay:g}s)")
        next_delay = group.retry_intervals[min(attempts + 1, len(group.retry_intervals) - 1)]
        self.wake(self.now + next_delay)
        return self.now + next_delay, f"anchor not running ({problem}); restarting (attempt {attempts + 1})"

    def plan_dependent(self, group: AnchorGroup, name: str, where: _AnchorPlacement) -> DependentStatus:
        snap = self.snapshot
        dep = snap.service(name)
        if dep is None:
            self.findings.append(Finding(name, f"dependent of {group.anchor} not found in the Swarm", "warning"))
            return DependentStatus(name, (), 0, None, False, False, "service not found")
        running = snap.running_tasks(dep.id)
        nodes = tuple(sorted({self.hostname(t.node_id) for t in running}))
        desired = dep.replicas if dep.mode == "replicated" else None

        def status(constrained: bool, colocated: bool, why: str = "") -> DependentStatus:
            return DependentStatus(name, nodes, len(running), desired, constrained, colocated, why)

        if not has_constraint(dep.constraints, anchor_constraint(group.anchor)):
            self.add_anchor_constraint(group, dep)
            return status(False, False, "constraint missing (adding)")
        if desired == 0:
            return status(True, True, "scaled to 0")
        if not where.nodes:
            return status(True, False, "waiting for the anchor")
        why = self.why_not_colocated(dep, running, desired, where.nodes)
        if why is None:
            return status(True, True)
        if where.labels_moving:
            return status(True, False, why + "; labels moving now")
        return status(True, False, f"{why}; {self.retry_dependent(group, dep, why, where)}")

    def add_anchor_constraint(self, group: AnchorGroup, dep: Service) -> None:
        constraint = anchor_constraint(group.anchor)
        c = self.change(dep)
        c.add_constraints.append(constraint)
        c.set_labels[ADDED_CONSTRAINT_LABEL] = group.anchor  # ours to remove when it no longer follows
        c.reasons.append(
            f"placement constraint {constraint} missing (follows {group.anchor}); added. Put it in the stack "
            "file to avoid a restart after every deploy"
        )
        self.findings.append(Finding(dep.name, f"constraint {constraint} was missing: adding it", "warning"))

    def why_not_colocated(
        self, dep: Service, running: tuple[Task, ...], desired: int | None, anchor_nodes: frozenset[str]
    ) -> str | None:
        """What keeps a dependent from being colocated, or None when every task it wants runs beside the anchor."""
        misplaced = sorted({self.hostname(t.node_id) for t in running if t.node_id not in anchor_nodes})
        short = desired is not None and len(running) < desired
        if not misplaced and not short and running:
            return None
        if misplaced:
            anchor_hosts = ", ".join(sorted(self.hostname(n) for n in anchor_nodes))
            return f"running on {', '.join(misplaced)}, anchor on {anchor_hosts}"
        if not running:
            newest = _newest(tuple(t for t in self.snapshot.tasks_of(dep.id) if t.desired_state in LIVE_DESIRED_STATES))
            return f"no running task ({_task_problem(newest)})"
        return f"{len(running)}/{desired} running"

    def retry_dependent(self, group: AnchorGroup, dep: Service, why: str, where: _AnchorPlacement) -> str:
        """Force an update of a dependent that is still not colocated after the grace period (with backoff);
        what it does, for the status."""
        # Labels are right. Swarm's constraint enforcer and orchestrator move the tasks by themselves; only
        # when that has not happened within the grace period is a forced update worth its rolling restart.
        # The grace counts from the last thing that could have set Swarm moving: the anchor starting, a
        # label change on its node(s), the dependent's newest task.
        newest_dep = _newest(self.snapshot.tasks_of(dep.id))
        since = (
            max(
                where.started_at,
                where.labels_changed_at,
                newest_dep.created_at if newest_dep is not None else 0.0,
            )
            + self.settings.misplaced_grace_seconds
        )
        attempts, _, due = self.backoff_due(dep, group.retry_intervals, since)
        if self.now < due:
            self.wake(due)
            return f"waiting (retry at +{due - self.now:.0f}s)"
        c = self.change(dep)
        c.force = True
        c.set_labels[RESTART_ATTEMPTS_LABEL] = str(attempts + 1)
        c.set_labels[RESTART_AT_LABEL] = f"{self.now:.0f}"
        c.reasons.append(f"not colocated with {group.anchor} ({why}); forced update, attempt {attempts + 1}")
        return "forcing an update"

    def orphan_labels(self, groups: list[AnchorGroup]) -> None:
        """Anchor labels of anchors no longer declared anywhere are removed (they are Orcastra's own)."""
        known = {anchor_label_key(g.anchor) for g in groups}
        for node in self.snapshot.nodes:
            for key in node.labels:
                if key.startswith(ANCHOR_LABEL_PREFIX) and key not in known:
                    self.unlabel_node(node.id, key, f"{key[len(ANCHOR_LABEL_PREFIX) :]} is no longer an anchor")

    def orphan_constraints(self, groups: list[AnchorGroup]) -> None:
        """An anchor constraint on a service that no longer follows that anchor (the anchor was removed from the
        config or its labels, or renamed by a ``stack`` typo): its tasks could only ever run where Orcastra puts
        that anchor's label, which it no longer does, so they could never be scheduled again. The constraint
        Orcastra added (recorded in ``orcastra.added-constraint``) is removed; one the user wrote is reported."""
        anchors = {g.anchor for g in groups}
        follows = {d: g.anchor for g in groups for d in g.dependents}
        for svc in self.snapshot.services:
            for anchor, written in _anchor_constraints(svc.constraints):
                if follows.get(svc.name) == anchor:
                    continue
                constraint = anchor_constraint(anchor)
                if svc.labels.get(ADDED_CONSTRAINT_LABEL) == anchor:
                    c = self.change(svc)
                    c.remove_constraints.append(written)
                    c.remove_labels.append(ADDED_CONSTRAINT_LABEL)
                    c.reasons.append(f"no longer follows {anchor}: the constraint Orcastra added is removed")
                elif anchor not in anchors:
                    self.findings.append(
                        Finding(
                            svc.name,
                            f"placement constraint {constraint} names {anchor}, which is no anchor (any more): "
                            "Orcastra no longer puts that label on any node, so these tasks can never be scheduled. "
                            "Remove the constraint from the stack file, or declare the anchor again",
                            "warning",
                        )
                    )

    def actions(self) -> list[Action]:
        out: list[Action] = []
        for node_id in sorted(set(self.node_sets) | set(self.node_removes)):
            node = self.snapshot.node(node_id)
            if node is None:
                continue
            out.append(
                UpdateNodeLabels(
                    node_id=node.id,
                    hostname=node.hostname,
                    node_version=node.version,
                    set_labels=MappingProxyType(self.node_sets.get(node_id, {})),
                    remove_labels=tuple(sorted(set(self.node_removes.get(node_id, [])))),
                    reason="; ".join(self.node_reasons.get(node_id, [])),
                    controller=CONTROLLER,
                )
            )
        out += [c.action() for c in self.changes.values()]
        return out
