"""Memory-aware rebalancing: move units (anchor groups or single services) off nodes that stay above
``high`` to a node the planner chose, without flapping. Pure planner; docs/rebalancing.md explains it.

- ``settings``: the ``rebalance:`` config section (``RebalanceSettings``, per-service ``ServiceRebalance``);
- ``types``: the label keys, the history kept between cycles (``update_history``, ``record_move``) and the
  plan (``PlannedMove``, ``NodeReport``);
- ``plan``: ``plan_rebalance(snapshot, memory, groups, settings, history, now, overrides=)``: units,
  eligibility, placement, anti-flap and explanations;
- ``optimize``: ``choose_moves`` on plain arrays (the part the benchmark compares with a MILP optimum).
"""

from __future__ import annotations

from orcastra.features.rebalance.optimize import MoveProblem, Score, choose_moves, evaluate
from orcastra.features.rebalance.plan import plan_rebalance
from orcastra.features.rebalance.types import (
    LEASE_LABEL,
    PREFERRED_NODE_LABEL,
    REBALANCE_LABEL,
    MoveRecord,
    NodeReport,
    PlannedMove,
    RebalanceHistory,
    RebalancePlan,
    record_move,
    update_history,
)

__all__ = [
    "LEASE_LABEL",
    "PREFERRED_NODE_LABEL",
    "REBALANCE_LABEL",
    "MoveProblem",
    "MoveRecord",
    "NodeReport",
    "PlannedMove",
    "RebalanceHistory",
    "RebalancePlan",
    "Score",
    "choose_moves",
    "evaluate",
    "plan_rebalance",
    "record_move",
    "update_history",
]
