"""The controllers one reconcile cycle runs, in order: each wraps a feature's pure planner with the settings
it reads from the configuration. The registry maps their names to them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Protocol

from orcastra.config import Config
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Snapshot
from orcastra.features.colocation import plan as colocation
from orcastra.features.colocation.plan import AnchorGroup, ColocationSettings
from orcastra.features.rebalance import pins, tracking
from orcastra.features.rebalance.settings import ServiceRebalance
from orcastra.features.rebalance.tracking import MoveTracking
from orcastra.features.static_labels import plan as static_labels
from orcastra.features.static_labels.plan import StaticLabelSettings


class Controller(Protocol):
    name: str

    def plan(self, snapshot: Snapshot, config: Config) -> Plan: ...

    def history_needed(self, snapshot: Snapshot, config: Config) -> Collection[str]:
        """IDs of the services whose finished tasks ``plan`` reads (the rest of the snapshot holds only tasks
        desired to run). Asked on a snapshot of nodes and services only: tasks are read after."""
        ...


def colocation_settings(config: Config) -> ColocationSettings:
    """The anchor groups of the ``anchors:`` section with full service names, and the reconcile graces."""
    default_restart = config.reconcile.restart_dependents
    groups = []
    for name, a in sorted(config.anchors.items()):
        stack = a.stack if a.stack is not None else config.stack
        groups.append(
            AnchorGroup(
                anchor=config.service_name(name, stack),
                dependents=tuple(config.service_name(d, stack) for d in a.dependents),
                restart_dependents=default_restart if a.restart_dependents is None else a.restart_dependents,
                retry_intervals=tuple(a.retry_intervals),
                source="config",
            )
        )
    return ColocationSettings(
        groups=tuple(groups),
        restart_dependents=default_restart,
        pending_grace_seconds=config.reconcile.pending_grace_seconds,
        misplaced_grace_seconds=config.reconcile.misplaced_grace_seconds,
    )


def static_label_settings(config: Config) -> StaticLabelSettings:
    return StaticLabelSettings(
        labels=MappingProxyType({host: MappingProxyType(dict(node.labels)) for host, node in config.nodes.items()}),
        prune=config.labels.prune,
    )


def rebalance_overrides(config: Config) -> Mapping[str, ServiceRebalance]:
    """``rebalance.services`` by full service name: the keys are short names, resolved with the config's
    ``stack`` like anchors are."""
    return MappingProxyType({config.service_name(name): s for name, s in config.rebalance.services.items()})


def move_tracking(snapshot: Snapshot, config: Config) -> MoveTracking:
    """The rebalancing moves followed through on ``snapshot``, at the snapshot's own time: exactly what the
    Pins controller plans from it (the runtime reads the moves' outcomes from the same call)."""
    groups, _ = colocation.resolve_groups(snapshot, colocation_settings(config))
    return tracking.track_moves(snapshot, groups, config.rebalance, snapshot.taken_at)


class StaticLabels:
    """Static node labels from the config's ``nodes:`` section."""

    name = static_labels.CONTROLLER

    def plan(self, snapshot: Snapshot, config: Config) -> Plan:
        return static_labels.plan_static_labels(snapshot, static_label_settings(config))

    def history_needed(self, snapshot: Snapshot, config: Config) -> frozenset[str]:
        return frozenset()  # reads running tasks only


class Colocation:
    """Anchor-following."""

    name = colocation.CONTROLLER

    def plan(self, snapshot: Snapshot, config: Config) -> Plan:
        # The snapshot's own time stands in for "now", keeping the planner free of clocks.
        return colocation.plan_colocation(snapshot, colocation_settings(config), snapshot.taken_at).plan

    def history_needed(self, snapshot: Snapshot, config: Config) -> frozenset[str]:
        """Every service of an anchor group: restart backoff and the misplaced grace read finished tasks."""
        return colocation.group_service_ids(snapshot, colocation_settings(config))


class Pins:
    """Follows rebalancing moves through (converged, or rolled back when they do not converge in time) and
    keeps the pins healthy, every cycle: any leader, a new one too, finishes what another one started."""

    name = pins.CONTROLLER

    def plan(self, snapshot: Snapshot, config: Config) -> Plan:
        moves = move_tracking(snapshot, config)
        return pins.plan_pins(snapshot, snapshot.taken_at, skip=moves.changed_services) + moves.plan

    def history_needed(self, snapshot: Snapshot, config: Config) -> frozenset[str]:
        return frozenset()  # reads running tasks only


def registry() -> dict[str, Callable[[], Controller]]:
    """Controller names -> factories, in the order they plan each cycle."""
    return {StaticLabels.name: StaticLabels, Colocation.name: Colocation, Pins.name: Pins}
