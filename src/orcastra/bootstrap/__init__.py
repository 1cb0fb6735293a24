"""Swarm bootstrap and healing: observe the node inventory, plan (pure), apply through each node's Engine.

``run_bootstrap(config, dry_run=..., audit=...)`` runs one cycle; see docs/bootstrap.md.
"""

from orcastra.bootstrap.execute import BootstrapOutcome, BootstrapRun, run_bootstrap
from orcastra.bootstrap.model import (
    BootstrapAction,
    BootstrapObservation,
    BootstrapPlan,
    DemoteNode,
    InitSwarm,
    JoinSwarm,
    NodeObservation,
    PromoteNode,
    RemoveNode,
)
from orcastra.bootstrap.plan import plan_bootstrap

__all__ = [
    "BootstrapAction",
    "BootstrapObservation",
    "BootstrapOutcome",
    "BootstrapPlan",
    "BootstrapRun",
    "DemoteNode",
    "InitSwarm",
    "JoinSwarm",
    "NodeObservation",
    "PromoteNode",
    "RemoveNode",
    "plan_bootstrap",
    "run_bootstrap",
]
