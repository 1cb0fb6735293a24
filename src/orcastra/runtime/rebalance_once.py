"""Shared by ``orcastra plan`` and the ``rebalance`` command: one rebalancing plan made on demand."""

from __future__ import annotations

import time

from orcastra.adapters.memory import collect_memory
from orcastra.config import Config
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.features.colocation.plan import resolve_groups
from orcastra.features.rebalance import (
    RebalanceHistory,
    RebalancePlan,
    plan_rebalance,
    update_history,
)
from orcastra.runtime.controllers import colocation_settings, rebalance_overrides
from orcastra.runtime.rebalancer import history_with_recorded_moves


def one_shot_rebalance_plan(config: Config, snapshot: Snapshot) -> tuple[RebalancePlan, MemoryView]:
    """Read memory now and plan. A single read cannot know for how long a node has been above `high`, so
    nodes above it count as if the sustained period had passed (the daemon's own loop does wait for it);
    cooldowns and every other rule apply as usual."""
    now = time.time()
    memory = collect_memory(config, snapshot, now)
    settings = config.rebalance
    history = update_history(RebalanceHistory(), memory, settings, now - settings.sustained_seconds)
    history = history_with_recorded_moves(history, snapshot)
    groups, _ = resolve_groups(snapshot, colocation_settings(config))
    return plan_rebalance(
        snapshot, memory, groups, settings, history, now, overrides=rebalance_overrides(config)
    ), memory
