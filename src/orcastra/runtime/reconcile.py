"""One reconcile cycle: snapshot -> every controller's plan -> the executor; re-read and re-plan on conflict."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from orcastra.adapters.engine.api import EngineApi
from orcastra.config import Config
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Snapshot
from orcastra.runtime.controllers import Controller
from orcastra.runtime.executor import Executor, Outcome

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 3


def plan_all(snapshot: Snapshot, config: Config, controllers: Sequence[Controller]) -> Plan:
    plan = Plan()
    for controller in controllers:
        plan = plan + controller.plan(snapshot, config)
    return plan


def history_needed(snapshot: Snapshot, config: Config, controllers: Sequence[Controller]) -> frozenset[str]:
    """The services whose finished tasks some controller reads; the snapshot reads only those in full."""
    out: set[str] = set()
    for controller in controllers:
        out.update(controller.history_needed(snapshot, config))
    return frozenset(out)


@dataclass
class CycleResult:
    plan: Plan
    snapshot: Snapshot
    outcomes: list[Outcome] = field(default_factory=list)
    attempts: int = 1
    engine_calls: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(o.result in ("error", "conflict") for o in self.outcomes)


def run_cycle(
    engine: EngineApi, executor: Executor | None, config: Config, controllers: Sequence[Controller]
) -> CycleResult:
    """Snapshot, plan, apply. A version conflict means the Swarm changed under the plan: read it again and
    plan again (bounded), never retry the stale write. Without an executor (a follower) it only plans."""
    started = time.monotonic()
    calls_before = engine.calls
    all_outcomes: list[Outcome] = []
    plan = Plan()
    snapshot = Snapshot((), (), ())
    attempt = 0
    for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
        snapshot = engine.snapshot(history=lambda first: history_needed(first, config, controllers))
        plan = plan_all(snapshot, config, controllers)
        outcomes = executor.apply(plan.actions, snapshot) if plan.actions and executor is not None else []
        all_outcomes.extend(outcomes)
        if not any(o.result == "conflict" for o in outcomes):
            break
        log.info("version conflict: re-reading the Swarm and re-planning (attempt %d)", attempt + 1)
    return CycleResult(
        plan=plan,
        snapshot=snapshot,
        outcomes=all_outcomes,
        attempts=attempt,
        engine_calls=engine.calls - calls_before,
        seconds=time.monotonic() - started,
    )
