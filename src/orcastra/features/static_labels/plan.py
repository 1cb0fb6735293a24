"""Static node labels: the labels the config declares for each node, with recorded ownership.

Ownership: Orcastra writes the keys it created on a node into that node's label ``orcastra.owned-labels``
(comma-separated). It only ever removes keys recorded there, so a label set by hand is never removed.
A configured key that already exists with another value is overwritten (the config is the declared
state) but not taken into ownership, so it is never pruned later either. With ``prune``, owned keys the
config no longer declares are removed; without it they are kept and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from orcastra.domain.actions import UpdateNodeLabels
from orcastra.domain.labels import OWNED_LABELS_KEY
from orcastra.domain.plan import Finding, Plan
from orcastra.domain.snapshot import Node, Snapshot

CONTROLLER = "static-labels"


@dataclass(frozen=True)
class StaticLabelSettings:
    """Desired labels per node hostname, and whether to prune owned labels no longer configured."""

    labels: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    prune: bool = False


def owned_keys(node: Node) -> frozenset[str]:
    raw = node.labels.get(OWNED_LABELS_KEY, "")
    return frozenset(k for k in (p.strip() for p in raw.split(",")) if k)


def plan_node_labels(
    node: Node, desired: Mapping[str, str], prune: bool
) -> tuple[UpdateNodeLabels | None, list[Finding]]:
    """The one label update (or none) that brings ``node`` to ``desired``, and what to tell a person."""
    current = node.labels
    owned = owned_keys(node)
    findings: list[Finding] = []
    set_labels: dict[str, str] = {}
    remove: list[str] = []
    reasons: list[str] = []
    new_owned = {k for k in owned if k in current}  # a key removed by hand is no longer ours

    for key, value in sorted(desired.items()):
        if key not in current:
            set_labels[key] = value
            new_owned.add(key)
            reasons.append(f"add {key}={value}")
        elif current[key] != value:
            set_labels[key] = value
            if key in owned:
                reasons.append(f"change {key} {current[key]!r} -> {value!r}")
            else:
                reasons.append(f"change hand-set {key} {current[key]!r} -> {value!r}")
                findings.append(
                    Finding(
                        node.hostname,
                        f"label {key} was set by someone else to {current[key]!r}; config says {value!r} "
                        "(overwritten, not owned, so never removed)",
                        "warning",
                    )
                )

    for key in sorted(new_owned - desired.keys()):
        if prune:
            remove.append(key)
            new_owned.discard(key)
            reasons.append(f"prune {key} (no longer configured)")
        else:
            findings.append(Finding(node.hostname, f"label {key} is no longer configured; kept (labels.prune is off)"))

    owner_value = ",".join(sorted(new_owned))
    if owner_value != current.get(OWNED_LABELS_KEY, ""):
        if owner_value:
            set_labels[OWNED_LABELS_KEY] = owner_value
        elif OWNED_LABELS_KEY in current:
            remove.append(OWNED_LABELS_KEY)
    if not set_labels and not remove:
        return None, findings
    action = UpdateNodeLabels(
        node_id=node.id,
        hostname=node.hostname,
        node_version=node.version,
        set_labels=MappingProxyType(set_labels),
        remove_labels=tuple(remove),
        reason="static labels: " + ("; ".join(reasons) if reasons else "record label ownership"),
        controller=CONTROLLER,
    )
    return action, findings


def plan_static_labels(snapshot: Snapshot, settings: StaticLabelSettings) -> Plan:
    actions: list[UpdateNodeLabels] = []
    findings: list[Finding] = []
    for hostname in sorted(settings.labels):
        if snapshot.node_by_hostname(hostname) is None:
            findings.append(Finding(hostname, "configured in nodes: but no Swarm node has this hostname", "warning"))
    for node in sorted(snapshot.nodes, key=lambda n: n.hostname):
        desired = settings.labels.get(node.hostname, MappingProxyType({}))
        action, node_findings = plan_node_labels(node, desired, settings.prune)
        findings.extend(node_findings)
        if action is not None:
            actions.append(action)
    return Plan(tuple(actions), tuple(findings))
