"""Which services follow which anchor: the config's ``anchors:`` merged with ``orcastra.follow`` labels.

A service labelled ``orcastra.follow=<anchor>`` joins that anchor's group (a group only labels declare takes
its restart and retry settings from the anchor service's own labels). Where the labels and the config
disagree, the config wins and a finding says so; chains (an anchor that follows another) are refused.

Pure: reads the snapshot, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from orcastra.domain.labels import FOLLOW_LABEL, RESTART_DEPENDENTS_LABEL, RETRY_INTERVALS_LABEL
from orcastra.domain.plan import Finding
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.features.colocation.settings import (
    DEFAULT_RETRY_INTERVALS_SECONDS,
    MISPLACED_GRACE_SECONDS,
    PENDING_GRACE_SECONDS,
)


@dataclass(frozen=True)
class AnchorGroup:
    """An anchor service and the services that must run beside it (full Swarm service names)."""

    anchor: str
    dependents: tuple[str, ...]
    restart_dependents: bool = True
    retry_intervals: tuple[float, ...] = DEFAULT_RETRY_INTERVALS_SECONDS
    source: str = "config"


@dataclass(frozen=True)
class ColocationSettings:
    """The configured groups (labels may add more: ``resolve_groups``) and the planner's grace periods."""

    groups: tuple[AnchorGroup, ...] = ()
    restart_dependents: bool = True
    pending_grace_seconds: float = PENDING_GRACE_SECONDS
    misplaced_grace_seconds: float = MISPLACED_GRACE_SECONDS


def resolve_groups(snapshot: Snapshot, settings: ColocationSettings) -> tuple[list[AnchorGroup], list[Finding]]:
    """Merge the config's anchors with ``orcastra.follow`` labels on services; report conflicts (config wins)."""
    groups: dict[str, AnchorGroup] = {g.anchor: g for g in settings.groups}
    follower_of = {d: g.anchor for g in settings.groups for d in g.dependents}
    from_labels, findings = _label_followers(snapshot, groups, follower_of)
    follower_of.update({d: anchor for anchor, deps in from_labels.items() for d in deps})
    for anchor, deps in from_labels.items():
        if anchor in follower_of:
            findings.append(
                Finding(anchor, f"is followed by {', '.join(deps)} but itself follows {follower_of[anchor]}", "warning")
            )
            continue
        existing = groups.get(anchor)
        if existing is not None:
            groups[anchor] = AnchorGroup(
                anchor=anchor,
                dependents=existing.dependents + tuple(deps),
                restart_dependents=existing.restart_dependents,
                retry_intervals=existing.retry_intervals,
                source="config+labels",
            )
            continue
        groups[anchor] = _group_from_labels(snapshot, settings, anchor, deps, findings)
    return [groups[k] for k in sorted(groups)], findings


def group_service_ids(snapshot: Snapshot, settings: ColocationSettings) -> frozenset[str]:
    """The IDs of every anchor and dependent service (the services the colocation controller writes)."""
    groups, _ = resolve_groups(snapshot, settings)
    out = set()
    for g in groups:
        for name in (g.anchor, *g.dependents):
            svc = snapshot.service(name)
            if svc is not None:
                out.add(svc.id)
    return frozenset(out)


def _label_followers(
    snapshot: Snapshot, anchors: Collection[str], follower_of: dict[str, str]
) -> tuple[dict[str, list[str]], list[Finding]]:
    """The services an ``orcastra.follow`` label adds to a group, by anchor (in service name order), and a
    finding for each label that is ignored."""
    followers: dict[str, list[str]] = {}
    findings: list[Finding] = []
    for svc in sorted(snapshot.services, key=lambda s: s.name):
        target = svc.labels.get(FOLLOW_LABEL, "").strip()
        if not target:
            continue
        anchor = _resolve_anchor_name(snapshot, target, svc.stack)
        problem = _follow_problem(svc, target, anchor, anchors, follower_of.get(svc.name))
        if problem is not None:
            findings.append(Finding(svc.name, problem, "warning"))
        elif svc.name not in follower_of:
            followers.setdefault(anchor, []).append(svc.name)
    return followers, findings


def _follow_problem(
    svc: Service, target: str, anchor: str, anchors: Collection[str], configured: str | None
) -> str | None:
    """Why ``svc``'s ``orcastra.follow`` label is ignored, or None when it is not."""
    if anchor == svc.name:
        return f"{FOLLOW_LABEL}={target} names the service itself; ignored"
    if svc.name in anchors:
        return f"is an anchor and also follows {anchor}; anchors cannot be chained"
    if configured is not None and configured != anchor:
        return f"label {FOLLOW_LABEL}={target} says it follows {anchor}, the config says {configured}; the config wins"
    return None


def _resolve_anchor_name(snapshot: Snapshot, target: str, stack: str | None) -> str:
    """``orcastra.follow=db`` on a service of stack ``app`` means ``app_db`` if it exists, else ``db``."""
    if stack and snapshot.service(f"{stack}_{target}") is not None:
        return f"{stack}_{target}"
    if stack and snapshot.service(target) is None:
        return f"{stack}_{target}"
    return target


def _group_from_labels(
    snapshot: Snapshot, settings: ColocationSettings, anchor: str, dependents: list[str], findings: list[Finding]
) -> AnchorGroup:
    """A group that only labels declare: the anchor service's own labels may set whether its dependents
    restart with it and its retry intervals (an unreadable list is reported and the default used)."""
    restart = settings.restart_dependents
    intervals: tuple[float, ...] = DEFAULT_RETRY_INTERVALS_SECONDS
    anchor_svc = snapshot.service(anchor)
    if anchor_svc is not None:
        raw_restart = anchor_svc.labels.get(RESTART_DEPENDENTS_LABEL)
        if raw_restart is not None:
            restart = raw_restart.strip().lower() in ("true", "1", "yes", "on")
        raw_intervals = anchor_svc.labels.get(RETRY_INTERVALS_LABEL)
        if raw_intervals is not None:
            parsed = _parse_intervals(raw_intervals)
            if parsed is None:
                findings.append(
                    Finding(
                        anchor,
                        f"label {RETRY_INTERVALS_LABEL}={raw_intervals!r} is not a non-decreasing list of "
                        "positive seconds (e.g. 2,10,60); using the default",
                        "warning",
                    )
                )
            else:
                intervals = parsed
    return AnchorGroup(anchor, tuple(dependents), restart, intervals, source="labels")


def _parse_intervals(raw: str) -> tuple[float, ...] | None:
    try:
        values = tuple(float(p) for p in raw.split(",") if p.strip())
    except ValueError:
        return None
    if not values or any(v <= 0 for v in values) or list(values) != sorted(values):
        return None
    return values
