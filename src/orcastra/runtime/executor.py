"""The one write seam: every change Orcastra makes to the Swarm is an action (``orcastra.domain.actions``)
applied here, with one ``Outcome`` type and one JSON audit line per action.

``EngineExecutor`` applies actions: spec writes (node labels and availability, services, the Swarm's labels,
the labels of command requests kept as Swarm configs)
through the manager's Engine adapter, each with the object's ``version`` from the snapshot the plan was made
from; membership changes (bootstrap and healing) through the Engine of the node they concern
(``membership``). ``DryRunExecutor``
changes nothing: it logs and audits "would ...". Which of the two a run uses is decided once, when the
runtime is wired (``run --dry-run``); nothing else in Orcastra asks whether it is a dry run.

A version conflict stops the batch (the rest of the plan was made for a Swarm that has changed), and so does a
failed membership change; the caller re-reads the Swarm and re-plans instead of overwriting somebody else's
change. Outcomes are data: nothing raised by the Engine escapes ``apply``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from orcastra.adapters.engine.api import EngineApi
from orcastra.domain.actions import (
    Action,
    CreateService,
    DemoteNode,
    InitSwarm,
    JoinSwarm,
    PromoteNode,
    RemoveConfig,
    RemoveNode,
    SetNodeAvailability,
    SetSwarmLabels,
    UpdateConfigLabels,
    UpdateNodeLabels,
    UpdateService,
    merge_node_label_updates,
)
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import EngineConflictError, OrcastraError
from orcastra.runtime.membership import Connect, Membership

log = logging.getLogger(__name__)

Result = Literal["ok", "dry-run", "conflict", "error", "skipped"]
MEMBERSHIP_ACTIONS = (InitSwarm, JoinSwarm, PromoteNode, DemoteNode, RemoveNode)
# A dry run keeps this many recorded actions (the newest) for tests and ``orcastra plan``-like reports.
DRY_RUN_RECORD_LIMIT = 1000


@dataclass(frozen=True)
class Outcome:
    action: Action
    result: Result
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.result in ("conflict", "error")


def _utc_now_ms() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AuditLog:
    """Appends one JSON object per line: time, action, target, change, reason, controller, result (and detail,
    dry_run). A write that fails (a full disk) is logged and counted, never raised: the change it records has
    already been made, and the caller must still learn its outcome."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None) -> None:
        self._path = path
        self._stream = stream
        self._lock = threading.Lock()
        self.failed_writes = 0
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
            try:
                if self._path is not None:
                    with self._path.open("a", encoding="utf-8") as f:
                        f.write(line + "\n")
                elif self._stream is not None:
                    self._stream.write(line + "\n")
                    self._stream.flush()
                else:
                    logging.getLogger("orcastra.audit").info("%s", line)
            except (OSError, ValueError) as e:
                self.failed_writes += 1
                log.error("audit: could not write to %s (%s): %s", self._path or "the audit stream", e, line)


class Executor(Protocol):
    """Applies actions planned on ``snapshot`` (the versions they carry come from it); never raises for an
    Engine failure: each action's fate is its ``Outcome``."""

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]: ...


OutcomeHook = Callable[[Outcome], None]


def _quiet(action: Action) -> bool:
    return bool(getattr(action, "quiet", False))


class _Recorder:
    """What both executors do with an outcome: the audit line, the log line, the hook."""

    def __init__(self, audit: AuditLog, on_outcome: OutcomeHook | None, *, dry_run: bool) -> None:
        self._audit = audit
        self._on_outcome = on_outcome
        self._dry_run = dry_run

    def record(self, outcome: Outcome) -> None:
        a = outcome.action
        if _quiet(a):
            # Routine bookkeeping (the lease, renewed every few seconds, contended at every takeover): logged and
            # counted, never audited; the audit log is the record of changes to the operator's Swarm.
            level = logging.INFO if outcome.failed else logging.DEBUG
            log.log(level, "%s %s: %s -> %s %s", a.kind, a.target, a.describe(), outcome.result, outcome.detail)
        else:
            self._audit.write(outcome, dry_run=self._dry_run)
            if self._dry_run:
                log.info("would %s %s: %s (%s)", a.kind, a.target, a.describe(), a.reason)
            else:
                level = logging.WARNING if outcome.failed else logging.INFO
                log.log(
                    level,
                    "%s %s: %s (%s) -> %s %s",
                    a.kind,
                    a.target,
                    a.describe(),
                    a.reason,
                    outcome.result,
                    outcome.detail,
                )
        if self._on_outcome is not None:
            self._on_outcome(outcome)


class EngineExecutor:
    """Applies actions to the Swarm: one Engine write each (a join is a few calls on two nodes)."""

    def __init__(
        self,
        engine: EngineApi,
        audit: AuditLog,
        on_outcome: OutcomeHook | None = None,
        *,
        connect: Connect | None = None,
        endpoints: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._engine = engine
        self._recorder = _Recorder(audit, on_outcome, dry_run=False)
        self._membership = Membership(connect, endpoints)

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        outcomes: list[Outcome] = []
        stopped = ""
        for action in merge_node_label_updates(list(actions)):
            if stopped:
                outcome = Outcome(action, "skipped", stopped)
            else:
                outcome = self._apply_one(action, snapshot)
                if outcome.result == "conflict":
                    # The Swarm changed under us: the rest of this plan may be stale too. Re-plan first.
                    stopped = "an earlier action hit a version conflict; re-planning"
                elif outcome.result == "error" and isinstance(action, MEMBERSHIP_ACTIONS):
                    stopped = "an earlier membership change failed; re-planning"
            self._recorder.record(outcome)
            outcomes.append(outcome)
        return outcomes

    def _apply_one(self, action: Action, snapshot: Snapshot) -> Outcome:
        try:
            detail = self._write(action, snapshot)
        except EngineConflictError as e:
            return Outcome(action, "conflict", str(e))
        except (OrcastraError, KeyError) as e:
            return Outcome(action, "error", str(e))
        if detail is None:
            return Outcome(action, "conflict", f"{action.target} is not in the snapshot the plan was made from")
        return Outcome(action, "ok", detail)

    def _write(self, action: Action, snapshot: Snapshot) -> str | None:
        """Apply one action; None when the snapshot does not hold the object at the planned version."""
        if isinstance(action, UpdateNodeLabels | SetNodeAvailability):
            node = snapshot.node(action.node_id)
            if node is None or node.version != action.node_version:
                return None
            if isinstance(action, SetNodeAvailability):
                self._engine.update_node_spec(node, node.labels, availability=action.availability)
            else:
                labels = {k: v for k, v in node.labels.items() if k not in action.remove_labels}
                self._engine.update_node_spec(node, labels | dict(action.set_labels))
            return ""
        if isinstance(action, UpdateService):
            service = next((s for s in snapshot.services if s.id == action.service_id), None)
            if service is None or service.version != action.service_version:
                return None
            self._engine.update_service(
                service,
                add_constraints=action.add_constraints,
                remove_constraints=action.remove_constraints,
                set_labels=action.set_labels,
                remove_labels=action.remove_labels,
                force=action.force,
            )
            return ""
        if isinstance(action, CreateService):
            self._engine.create_placeholder_service(action.service_name, action.labels, action.image)
            return ""
        if isinstance(action, SetSwarmLabels):
            self._engine.set_swarm_labels(action.changes, action.swarm_version)
            return ""
        if isinstance(action, UpdateConfigLabels):
            self._engine.update_config_labels(
                action.config_id, action.config_version, action.set_labels, action.remove_labels
            )
            return ""
        if isinstance(action, RemoveConfig):
            self._engine.remove_config(action.config_id)
            return ""
        return self._membership.apply(action)


class DryRunExecutor:
    """Changes nothing: logs and audits what it would do, and keeps the newest actions in ``recorded``."""

    def __init__(self, audit: AuditLog, on_outcome: OutcomeHook | None = None) -> None:
        self._recorder = _Recorder(audit, on_outcome, dry_run=True)
        self.recorded: deque[Action] = deque(maxlen=DRY_RUN_RECORD_LIMIT)

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        outcomes = []
        for action in merge_node_label_updates(list(actions)):
            outcome = Outcome(action, "dry-run", "would apply")
            self.recorded.append(action)
            self._recorder.record(outcome)
            outcomes.append(outcome)
        return outcomes
