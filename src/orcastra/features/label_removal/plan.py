"""The ``remove_all_labels`` planner: every node label Orcastra owns, removed, one label update per node.

What Orcastra owns on a node: the keys recorded in its ``orcastra.owned-labels`` (static labels from the
config), every ``orcastra.*`` node label (anchor labels ``orcastra.anchor.*``, rebalancing pins
``orcastra.place.*``), and the ownership record itself. Labels the operator set by hand are left alone.

While an anchor runs, its ``orcastra.anchor.<service>`` label is what places its dependents (their constraint
``node.labels.orcastra.anchor.<service>==true``): removing it leaves them no node, and Swarm evicts their
tasks. So the plan names the anchors that run (the caller refuses unless forced). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.actions import UpdateNodeLabels
from orcastra.domain.labels import ANCHOR_LABEL_PREFIX, ORCASTRA_LABEL_PREFIX, OWNED_LABELS_KEY
from orcastra.domain.snapshot import Node, Snapshot

CONTROLLER = "remove_all_labels"


@dataclass(frozen=True)
class LabelRemovalPlan:
    """One ``UpdateNodeLabels`` per node that carries a label Orcastra owns, and the anchors that run now
    (their labels still place dependents)."""

    actions: tuple[UpdateNodeLabels, ...]
    running_anchors: tuple[str, ...]

    @property
    def label_count(self) -> int:
        return sum(len(a.remove_labels) for a in self.actions)


def owned_node_labels(node: Node) -> tuple[str, ...]:
    """The keys of ``node``'s labels that Orcastra owns (present on the node), sorted."""
    recorded = {k.strip() for k in node.labels.get(OWNED_LABELS_KEY, "").split(",") if k.strip()}
    return tuple(sorted(k for k in node.labels if k in recorded or k.startswith(ORCASTRA_LABEL_PREFIX)))


def plan_remove_all_labels(snapshot: Snapshot) -> LabelRemovalPlan:
    """Remove every label Orcastra owns from every node; report the anchors whose label is on a node and that
    have a running task (whatever declared them: the label is what dependents' constraints name)."""
    actions = []
    for node in sorted(snapshot.nodes, key=lambda n: n.hostname):
        keys = owned_node_labels(node)
        if keys:
            reason = "operator command: remove_all_labels (every label Orcastra owns)"
            actions.append(UpdateNodeLabels.removing(node, keys, reason, CONTROLLER))
    labelled = {
        k.removeprefix(ANCHOR_LABEL_PREFIX)
        for n in snapshot.nodes
        for k in n.labels
        if k.startswith(ANCHOR_LABEL_PREFIX)
    }
    running = sorted(a for a in labelled if (svc := snapshot.service(a)) is not None and snapshot.running_tasks(svc.id))
    return LabelRemovalPlan(tuple(actions), tuple(running))
