"""Membership changes (bootstrap and healing), each through the Engine of the node it concerns: init, join,
promote, demote, remove. The executor hands them here; they are writes like any other (one outcome, one audit
line), only not to the manager's spec.

Join tokens are read from a manager at the moment a node joins and go straight into the join call: they are
never part of an action, an outcome, a log line or an audit line. A node entry removed for being Down too long
keeps its labels: they are written into the Swarm's labels (``orcastra.removed-node-labels.<hostname>``) before
the removal, and given back (the keys the new entry lacks) when that node joins again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping

from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.domain.actions import Action, DemoteNode, InitSwarm, JoinSwarm, PromoteNode, RemoveNode
from orcastra.domain.labels import REMOVED_NODE_LABELS_PREFIX
from orcastra.errors import EngineConflictError, EngineError, EngineNotFoundError, OrcastraError

log = logging.getLogger(__name__)

Connect = Callable[[str], SwarmEngine]
# A join can block this long in the Engine before answering "will continue in the background".
JOIN_TIMEOUT_SECONDS = 60.0
JOIN_POLL_SECONDS = 0.5
# How long a removal right after a demotion may wait for Swarm to drop the node from the Raft membership.
REMOVE_TIMEOUT_SECONDS = 20.0
CAS_ATTEMPTS = 5


class Membership:
    """Applies membership actions. ``endpoints`` maps inventory names to Engine endpoints (read at apply time,
    so a hot-reloaded config counts)."""

    def __init__(self, connect: Connect | None, endpoints: Callable[[], Mapping[str, str]]) -> None:
        self._connect = connect
        self._endpoints = endpoints

    def apply(self, action: Action) -> str:
        """Apply one action; returns a detail for its outcome (raises an ``OrcastraError`` on failure)."""
        if isinstance(action, InitSwarm):
            with self._engine(action.node) as engine:
                engine.init_swarm(action.address)
        elif isinstance(action, JoinSwarm):
            return self._join(action)
        elif isinstance(action, PromoteNode | DemoteNode):
            role = "manager" if isinstance(action, PromoteNode) else "worker"
            with self._engine(action.manager) as engine:
                if not engine.set_role(action.node_id, role):
                    return f"already a {role}"
        elif isinstance(action, RemoveNode):
            self._remove(action)
        else:
            raise OrcastraError(f"unknown action kind {action.kind}")
        return ""

    def _engine(self, name: str) -> SwarmEngine:
        if self._connect is None:
            raise OrcastraError("membership changes need node endpoints (nodes.<host>.endpoint)")
        endpoint = self._endpoints().get(name)
        if not endpoint:
            raise OrcastraError(f"{name} has no endpoint in the configuration (nodes.{name}.endpoint)")
        return self._connect(endpoint)

    def _remove(self, action: RemoveNode) -> None:
        with self._engine(action.manager) as engine:
            if action.keep_labels:
                _set_swarm_label(engine, REMOVED_NODE_LABELS_PREFIX + action.node, json.dumps(dict(action.keep_labels)))
            deadline = time.monotonic() + REMOVE_TIMEOUT_SECONDS
            while True:
                try:
                    engine.remove_node(action.node_id)
                    return
                except EngineNotFoundError:
                    return  # already gone: what we wanted
                except EngineError as e:
                    # Right after a demotion Swarm still counts the node in the Raft membership (the role
                    # manager removes it asynchronously) and refuses the removal for a moment.
                    if time.monotonic() >= deadline:
                        raise
                    log.debug("bootstrap: removing %s not possible yet: %s", action.node, e)
                    time.sleep(JOIN_POLL_SECONDS)

    def _join(self, action: JoinSwarm) -> str:
        with self._engine(action.manager) as manager:
            tokens = manager.join_tokens()
        with self._engine(action.node) as engine:
            if engine.local_swarm().local_state in ("pending", "error"):
                # A join stuck in the background never recovers by itself (lab notes); start over.
                engine.leave_swarm()
            try:
                engine.join_swarm(action.manager_address, tokens.for_role(action.role), action.address)
            except EngineError as e:
                # "Timeout was reached before node joined": the join goes on in the background; the
                # node's own state below decides.
                log.info("bootstrap: join of %s answered: %s; waiting for it", action.node, e)
            deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
            while True:
                state = engine.local_swarm().local_state
                if state == "active":
                    break
                if time.monotonic() >= deadline:
                    raise EngineError(f"{action.node} did not become an active Swarm member (state {state})")
                time.sleep(JOIN_POLL_SECONDS)
        with self._engine(action.manager) as manager:
            return restore_labels(manager, action.node)


def restore_labels(manager: SwarmEngine, hostname: str) -> str:
    """Give a node that joined again the labels its removed entry had (kept in the Swarm's labels)."""
    key = REMOVED_NODE_LABELS_PREFIX + hostname
    raw = manager.swarm_labels().get(key)
    if raw is None:
        return ""
    try:
        kept = json.loads(raw)
    except ValueError:
        kept = None
    if not isinstance(kept, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in kept.items()):
        log.warning("bootstrap: the labels kept for %s (Swarm label %s) are not a JSON object of strings; dropped",
                    hostname, key)  # fmt: skip
        _set_swarm_label(manager, key, None)
        return ""
    added = manager.add_node_labels(hostname, kept)
    _set_swarm_label(manager, key, None)
    return f"labels given back: {', '.join(added)}" if added else ""


def _set_swarm_label(engine: SwarmEngine, key: str, value: str | None) -> None:
    """One Swarm label set (or removed, with None) with a compare-and-set, re-read on a conflict."""
    for _ in range(CAS_ATTEMPTS):
        _, version = engine.swarm_labels_with_version()
        try:
            engine.set_swarm_labels({key: value}, version)
            return
        except EngineConflictError:
            continue
    raise EngineConflictError(f"the Swarm kept changing while setting its label {key}")
