"""What every planner returns: actions for the executor, findings for a person, and when to be asked again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orcastra.domain.actions import Action


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
    # backoff that expires. The loop wakes up then instead of waiting for the next resync.
    wake_at: float | None = None
    # What each planner reports of the state it planned for (colocation: one GroupStatus per anchor group), so
    # status pages and metrics read the cycle's own plan instead of planning again.
    status: tuple[object, ...] = ()

    def __add__(self, other: Plan) -> Plan:
        wakes = [w for w in (self.wake_at, other.wake_at) if w is not None]
        return Plan(
            self.actions + other.actions,
            self.findings + other.findings,
            min(wakes, default=None),
            self.status + other.status,
        )
