"""What the colocation planner reports: each anchor group's status, and the plan that carries them.

``GroupStatus`` travels in a combined ``Plan``'s ``status`` (``group_statuses`` picks them out): the CLI
renders it, the daemon exports it as metrics and watches the anchors' tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.plan import Plan


@dataclass(frozen=True)
class DependentStatus:
    name: str
    nodes: tuple[str, ...]
    running: int
    desired: int | None
    has_constraint: bool
    colocated: bool
    why: str = ""


@dataclass(frozen=True)
class GroupStatus:
    anchor: str
    source: str
    anchor_nodes: tuple[str, ...]
    colocated: bool
    why: str
    dependents: tuple[DependentStatus, ...] = ()
    restart_attempts: int = 0
    next_restart_at: float | None = None


@dataclass(frozen=True)
class ColocationPlan:
    plan: Plan
    groups: tuple[GroupStatus, ...]


def group_statuses(plan: Plan) -> tuple[GroupStatus, ...]:
    """The anchor groups' status in a (combined) plan."""
    return tuple(s for s in plan.status if isinstance(s, GroupStatus))
