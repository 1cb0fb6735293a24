"""The executors: the only code that changes the Swarm. ``EngineExecutor`` applies actions through the
adapter; ``DryRunExecutor`` records and logs what it would do. Both write one JSON audit line per action.

Every write carries the object's ``version`` from the snapshot the plan was made from; a conflict stops
the batch and is reported as such, so the caller re-reads the Swarm and re-plans instead of overwriting
somebody else's change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from orcastra.adapters.engine import EngineAdapter
from orcastra.domain.actions import (
    Action,
    SetNodeAvailability,
    UpdateNodeLabels,
    UpdateService,
    merge_node_label_updates,
)
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import EngineConflictError, OrcastraError

log = logging.getLogger(__name__)

Result = Literal["ok", "dry-run", "conflict", "error", "skipped"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: Result
    detail: str = ""


def _utc_now_ms() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AuditLog:
    """Appends one JSON object per line: time, action, target, reason, result (and detail, dry_run)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None) -> None:
        self._path = path
        self._stream = stream
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, outcome: Outcome, *, dry_run: bool) -> None:
        a = outcome.action
        line = json.dumps(
            {
                "time": _utc_now_ms(),
                "action": a.kind,
                "target": a.target,
                "change": a.describe(),
                "reason": a.reason,
                "controller": a.controller,
                "result": outcome.result,
                "detail": outcome.detail,
                "dry_run": dry_run,
            },
            sort_keys=False,
        )
        with self._lock:
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")
            elif self._stream is not None:
                self._stream.write(line + "\n")
                self._stream.flush()
            else:
                logging.getLogger("orcastra.audit").info("%s", line)


class Executor(Protocol):
    dry_run: bool

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]: ...


OutcomeHook = Callable[[Outcome], None]


class EngineExecutor:
    """Applies actions to the Swarm, one Engine write each, with the snapshot's object versions."""

    dry_run = False

    def __init__(self, engine: EngineAdapter, audit: AuditLog, on_outcome: OutcomeHook | None = None) -> None:
        self._engine = engine
        self._audit = audit
        self._on_outcome = on_outcome

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        outcomes: list[Outcome] = []
        conflicted = False
        for action in merge_node_label_updates(list(actions)):
            if conflicted:
                # The Swarm changed under us: the rest of this plan may be stale too. Re-plan first.
                outcome = Outcome(action, "skipped", "an earlier action hit a version conflict; re-planning")
            else:
                outcome = self._apply_one(action, snapshot)
                conflicted = outcome.result == "conflict"
            self._record(outcome)
            outcomes.append(outcome)
        return outcomes

    def _record(self, outcome: Outcome) -> None:
        self._audit.write(outcome, dry_run=False)
        level = logging.INFO if outcome.result in ("ok", "skipped") else logging.WARNING
        log.log(
            level,
            "%s %s: %s (%s) -> %s %s",
            outcome.action.kind,
            outcome.action.target,
            outcome.action.describe(),
            outcome.action.reason,
            outcome.result,
            outcome.detail,
        )
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _apply_one(self, action: Action, snapshot: Snapshot) -> Outcome:
        try:
            if isinstance(action, UpdateNodeLabels):
                return self._update_node_labels(action, snapshot)
            if isinstance(action, UpdateService):
                return self._update_service(action, snapshot)
            if isinstance(action, SetNodeAvailability):
                return self._set_availability(action, snapshot)
        except EngineConflictError as e:
            return Outcome(action, "conflict", str(e))
        except OrcastraError as e:
            return Outcome(action, "error", str(e))
        return Outcome(action, "error", f"unknown action kind {action.kind}")

    def _update_node_labels(self, action: UpdateNodeLabels, snapshot: Snapshot) -> Outcome:
        node = snapshot.node(action.node_id)
        if node is None or node.version != action.node_version:
            return Outcome(action, "conflict", "node not in the snapshot the plan was made from")
        labels = dict(node.labels)
        for key in action.remove_labels:
            labels.pop(key, None)
        labels.update(action.set_labels)
        self._engine.update_node_spec(node, labels)
        return Outcome(action, "ok")

    def _set_availability(self, action: SetNodeAvailability, snapshot: Snapshot) -> Outcome:
        node = snapshot.node(action.node_id)
        if node is None or node.version != action.node_version:
            return Outcome(action, "conflict", "node not in the snapshot the plan was made from")
        self._engine.update_node_spec(node, node.labels, availability=action.availability)
        return Outcome(action, "ok")

    def _update_service(self, action: UpdateService, snapshot: Snapshot) -> Outcome:
        service = next((s for s in snapshot.services if s.id == action.service_id), None)
        if service is None or service.version != action.service_version:
            return Outcome(action, "conflict", "service not in the snapshot the plan was made from")
        self._engine.update_service(
            service,
            add_constraints=action.add_constraints,
            remove_constraints=action.remove_constraints,
            set_labels=action.set_labels,
            remove_labels=action.remove_labels,
            force=action.force,
        )
        return Outcome(action, "ok")


class DryRunExecutor:
    """Changes nothing: logs and audits what it would do."""

    dry_run = True

    def __init__(self, audit: AuditLog, on_outcome: OutcomeHook | None = None) -> None:
        self._audit = audit
        self._on_outcome = on_outcome
        self.recorded: list[Action] = []

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        outcomes = []
        for action in merge_node_label_updates(list(actions)):
            outcome = Outcome(action, "dry-run", "would apply")
            self.recorded.append(action)
            self._audit.write(outcome, dry_run=True)
            log.info("would %s %s: %s (%s)", action.kind, action.target, action.describe(), action.reason)
            if self._on_outcome is not None:
                self._on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes
