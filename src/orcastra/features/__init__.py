"""Controllers: pure planners, one module each, all of the same shape (settings, plan), and their registry.

A controller turns (snapshot, settings) into a Plan: actions for the executor plus findings a person reads
in ``orcastra plan`` / ``status``. Controllers never import the Engine adapter or do I/O (import-linter
enforces it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from orcastra.domain.plan import Plan

if TYPE_CHECKING:
    from orcastra.config import Config
    from orcastra.domain.snapshot import Snapshot


class Controller(Protocol):
    name: str

    def plan(self, snapshot: Snapshot, config: Config) -> Plan: ...

    def history_needed(self, snapshot: Snapshot, config: Config) -> Collection[str]:
        """IDs of the services whose finished tasks ``plan`` reads (the rest of the snapshot holds only tasks
        desired to run). Asked on a snapshot of nodes and services only: tasks are read after."""
        ...


def registry() -> dict[str, Callable[[], Controller]]:
    """Controller names -> factories, in the order they plan each cycle."""
    from orcastra.features.colocation.plan import Colocation
    from orcastra.features.rebalance.pins import Pins
    from orcastra.features.static_labels.plan import StaticLabels

    return {StaticLabels.name: StaticLabels, Colocation.name: Colocation, Pins.name: Pins}
