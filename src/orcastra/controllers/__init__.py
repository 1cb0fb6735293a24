"""Controllers: pure planners, one module each, all of the same shape (settings, plan), and their registry.

A controller turns (snapshot, settings) into a Plan: actions for the executor plus findings a person reads
in ``orcastra plan`` / ``status``. Controllers never import the Engine adapter or do I/O (import-linter
enforces it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from orcastra.actions import Action

if TYPE_CHECKING:
    from orcastra.config import Config
    from orcastra.snapshot import Snapshot


@dataclass(frozen=True)
class Finding:
    """Something a planner noticed and did not (or could not) act on, for a person to read."""

    subject: str
    message: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    findings: tuple[Finding, ...] = ()
    # The earliest time (epoch seconds) a planner wants to be asked again even if nothing changes: a
    # backoff that expires. The daemon wakes up then instead of waiting for the next resync.
    wake_at: float | None = None

    def __add__(self, other: Plan) -> Plan:
        wakes = [w for w in (self.wake_at, other.wake_at) if w is not None]
        return Plan(self.actions + other.actions, self.findings + other.findings, min(wakes, default=None))


class Controller(Protocol):
    name: str

    def plan(self, snapshot: Snapshot, config: Config) -> Plan: ...

    def history_needed(self, snapshot: Snapshot, config: Config) -> Collection[str]:
        """IDs of the services whose finished tasks ``plan`` reads (the rest of the snapshot holds only tasks
        desired to run). Asked on a snapshot of nodes and services only: tasks are read after."""
        ...


def registry() -> dict[str, Callable[[], Controller]]:
    """Controller names -> factories, in the order they plan each cycle."""
    from orcastra.controllers.colocation import Colocation
    from orcastra.controllers.pins import Pins
    from orcastra.controllers.static_labels import StaticLabels

    return {StaticLabels.name: StaticLabels, Colocation.name: Colocation, Pins.name: Pins}
