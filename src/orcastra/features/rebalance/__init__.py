"""Memory-aware rebalancing: move units (anchor groups or single services) off nodes that stay above
``high`` to a node the planner chose, without flapping. Pure; docs/rebalancing.md explains it.

- ``settings``: the ``rebalance:`` config section (``RebalanceSettings``, per-service ``ServiceRebalance``);
- ``discovery``: the node_exporter URLs found in the snapshot (``discover_node_exporters``: nodes running a
  task of a service labelled ``orcastra.role=node-exporter``);
- ``labels``: the values of its labels (the keys are in ``orcastra.domain.labels``);
- ``history``: the above-high clocks (``update_history``) and the moves read back from the services'
  labels (``with_recorded_moves``);
- ``plan``: ``plan_rebalance(RebalanceInput(...))``: units, eligibility, placement and anti-flap, returning a
  ``RebalancePlan`` (``types``); ``explain`` words each move and what was left over;
- ``optimize``: ``choose_moves`` on plain arrays (the part the benchmark compares with a MILP optimum);
- ``pins``: how a move is carried out (pin label and constraint) and the pins kept healthy every cycle;
- ``tracking``: ``track_moves``, every move followed through by level (converged, in flight, or rolled back
  when it does not converge within ``move_timeout_seconds``), with its status (``TrackedMove``).
"""

from __future__ import annotations

from orcastra.features.rebalance.history import (
    MoveRecord,
    RebalanceHistory,
    assume_sustained,
    recorded_moves,
    update_history,
    with_recorded_moves,
)
from orcastra.features.rebalance.optimize import MoveProblem, Score, choose_moves, evaluate
from orcastra.features.rebalance.plan import plan_rebalance
from orcastra.features.rebalance.settings import RebalanceSettings, ServiceRebalance
from orcastra.features.rebalance.tracking import MoveResult, MoveTracking, TrackedMove, track_moves
from orcastra.features.rebalance.types import NodeReport, PlannedMove, RebalanceInput, RebalancePlan

__all__ = [
    "MoveProblem",
    "MoveRecord",
    "MoveResult",
    "MoveTracking",
    "NodeReport",
    "PlannedMove",
    "RebalanceHistory",
    "RebalanceInput",
    "RebalancePlan",
    "RebalanceSettings",
    "Score",
    "ServiceRebalance",
    "TrackedMove",
    "assume_sustained",
    "choose_moves",
    "evaluate",
    "plan_rebalance",
    "recorded_moves",
    "track_moves",
    "update_history",
    "with_recorded_moves",
]
