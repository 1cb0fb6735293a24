"""``orcastra migrate``: runs the label migration planner (``features.migrate``) against the Swarm.

A dry run (the default) reads one snapshot and shows the next step. ``--apply`` runs the steps through the
executor (every write at the object's version), reading a fresh snapshot before each step and polling while
the services concerned settle, until nothing is left or the time runs out. A version conflict needs nothing
special: the next snapshot plans the step again. Running it again when done finds nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from orcastra.adapters.engine.api import EngineApi
from orcastra.config import Config
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import OrcastraError
from orcastra.features.migrate.plan import MigrationPlan, OldAnchor, plan_migration
from orcastra.runtime.executor import Executor

MIGRATE_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 2.0


def old_anchors(config: Config) -> tuple[OldAnchor, ...]:
    """The configured anchors as the earlier tool named them: its label key is the ``anchors:`` key."""
    out = []
    for name, a in sorted(config.anchors.items()):
        stack = a.stack if a.stack is not None else config.stack
        deps = tuple(config.service_name(d, stack) for d in a.dependents)
        out.append(OldAnchor(name, config.service_name(name, stack), deps))
    return tuple(out)


def migration_hint(snapshot: Snapshot, config: Config) -> str | None:
    """One line for ``plan`` and ``status`` while old-style labels or constraints remain, else None."""
    plan = plan_migration(snapshot, old_anchors(config))
    if not plan.found:
        return None
    return (
        f"old-style anchor labels/constraints remain ({len(plan.found)}: {plan.found[0]}"
        f"{', ...' if len(plan.found) > 1 else ''}): run `orcastra migrate` (docs/migrating.md)"
    )


def describe_step(plan: MigrationPlan) -> list[str]:
    """What a plan says, one line each."""
    if plan.done:
        lines = ["nothing to migrate" if not plan.found else "nothing can be migrated now"]
    elif plan.step == 0:
        lines = [f"waiting for {', '.join(plan.waiting_for)} to settle (tasks pending or being replaced)"]
    else:
        lines = [f"step {plan.step}: {a.target} {a.describe()} ({a.reason})" for a in plan.actions]
    return lines + [f"note: {n}" for n in plan.notes]


@dataclass
class Migration:
    """Runs the steps; ``echo`` gets one line per thing done or waited for."""

    engine: EngineApi
    executor: Executor
    anchors: tuple[OldAnchor, ...]
    echo: Callable[[str], object]
    sleep: Callable[[float], object] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def preview(self) -> MigrationPlan:
        plan = plan_migration(self.engine.snapshot(), self.anchors)
        for line in describe_step(plan):
            self.echo(line)
        if not plan.done:
            self.echo("(dry run: nothing changed; `orcastra migrate --apply` runs every step)")
        return plan

    def apply(
        self, timeout_seconds: float = MIGRATE_TIMEOUT_SECONDS, poll_seconds: float = POLL_SECONDS
    ) -> MigrationPlan:
        deadline = self.monotonic() + timeout_seconds
        last_wait: tuple[str, ...] = ()
        while True:
            snapshot = self.engine.snapshot()
            plan = plan_migration(snapshot, self.anchors)
            if plan.done:
                for line in describe_step(plan):
                    self.echo(line)
                return plan
            if self.monotonic() > deadline:
                raise OrcastraError(f"migrate: not done after {timeout_seconds:.0f} s: {describe_step(plan)[0]}")
            if plan.step == 0:
                if plan.waiting_for != last_wait:
                    self.echo(describe_step(plan)[0])
                last_wait = plan.waiting_for
                self.sleep(poll_seconds)
                continue
            last_wait = ()
            for outcome in self.executor.apply(plan.actions, snapshot):
                self.echo(f"step {plan.step}: {outcome.action.target} {outcome.action.describe()}: {outcome.result}")
                if outcome.result == "error":
                    raise OrcastraError(f"migrate: {outcome.action.target}: {outcome.detail}")
