"""Compare-and-set on the Swarm's own labels, through an executor: read them with the Swarm's version, and if a
check accepts them, write the changes at that version. A write that lost a race with an unrelated change of the
Swarm is tried again at the new version. The pause flag and the reboot lock are written this way."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orcastra.adapters.engine.api import EngineApi
from orcastra.domain.actions import SetSwarmLabels
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import OrcastraError
from orcastra.runtime.executor import Executor

CAS_ATTEMPTS = 5
NO_OBJECTS = Snapshot((), (), ())


class SwarmLabelWriteError(OrcastraError):
    """The Engine refused the write of the Swarm's labels (not a version conflict); the message is its detail."""


def compare_and_set(  # noqa: PLR0913 - the Swarm, the writer, what to write, and why, keyword-only after those
    engine: EngineApi,
    writes: Executor,
    changes: Mapping[str, str | None],
    *,
    reason: str,
    controller: str,
    check: Callable[[dict[str, str]], bool] = lambda labels: True,
) -> str:
    """Returns "ok", "dry-run", "refused" (``check`` said no) or "conflict" (the Swarm kept changing); raises
    ``SwarmLabelWriteError`` when the write failed otherwise."""
    for _ in range(CAS_ATTEMPTS):
        labels, version = engine.swarm_labels_with_version()
        if not check(labels):
            return "refused"
        action = SetSwarmLabels(changes, version, reason=reason, controller=controller)
        (outcome,) = writes.apply([action], NO_OBJECTS)
        if outcome.result == "conflict":
            continue
        if outcome.result == "error":
            raise SwarmLabelWriteError(outcome.detail)
        return outcome.result
    return "conflict"
