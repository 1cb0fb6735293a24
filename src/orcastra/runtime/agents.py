"""The controller's view of the node agents: which node's agent answers, and what it last reported.

Pull, not push: the loop already reads every task each cycle; after a cycle, ``AgentPoller.watch`` takes the
agent's tasks from the snapshot (``features.agents.view.agent_targets``: one per node, with its task's overlay
address) and the Swarm's facts (``features.agents.facts``: what only managers can read, which the agents' garbage
collection needs). The poller thread (owns ``AgentTable``'s writes) then asks each running task
``POST /v1/report`` (the facts in, the report out; with the API token) every
``agent.report_poll_interval_seconds``, a few at a time, each with a short timeout, outside the loop and its
Engine budget: a slow or dead agent delays nothing but its own row. The table is read by the API
(``GET /v1/agents``) and exported as ``orcastra_agent_up{node}``. Every replica polls (not only the leader):
each one's ``orcastra status`` and API then show the same picture, and it changes nothing in the Swarm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orcastra.adapters.agent_client import fetch_report, fetch_table
from orcastra.adapters.http import Request, Response, Route
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import OrcastraError
from orcastra.features.agents.facts import SwarmFacts, encode_facts
from orcastra.features.agents.report import AGENTS_PATH, AgentEntry, AgentReport, AgentTable, encode
from orcastra.features.agents.view import AgentTarget, agent_targets
from orcastra.runtime.triggers import Trigger
from orcastra.runtime.watchers import Watcher

log = logging.getLogger(__name__)

MAX_PARALLEL_FETCHES = 8
# ``orcastra status`` asks the local controller for its table this long at most.
STATUS_FETCH_TIMEOUT_SECONDS = 2.0
# Before the first cycle has named the agent's tasks, look again this often.
WAIT_FOR_TARGETS_SECONDS = 1.0

Fetch = Callable[[str, int, float, bytes | None, str], AgentReport]


class AgentTableState:
    """Node ID -> the last fetch's entry. Written by the poller, read by API threads (hence the lock)."""

    def __init__(self, poll_interval_seconds: float) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, AgentEntry] = {}
        self.poll_interval_seconds = poll_interval_seconds

    def update(self, targets: tuple[AgentTarget, ...], results: dict[str, AgentReport | str], now: float) -> None:
        """One round's results (a report, or the error text) for ``targets``; nodes no longer listed go."""
        with self._lock:
            old = self._entries
            self._entries = {t.node_id: _entry(t, results.get(t.node_id), old.get(t.node_id), now) for t in targets}

    def table(self) -> AgentTable:
        with self._lock:
            entries = tuple(self._entries.values())
        return AgentTable(poll_interval_seconds=self.poll_interval_seconds, agents=entries)

    def up_by_node(self) -> dict[str, bool]:
        with self._lock:
            return {e.hostname or e.node_id: e.up for e in self._entries.values()}


def _entry(target: AgentTarget, result: AgentReport | str | None, old: AgentEntry | None, now: float) -> AgentEntry:
    base = {
        "node_id": target.node_id,
        "hostname": target.hostname,
        "task_state": target.task_state,
        "address": target.address,
    }
    if isinstance(result, AgentReport):
        if result.node_id and result.node_id != target.node_id:
            result = f"the report is from node {result.node_id[:25]}, not this one (a stale address?)"
        else:
            return AgentEntry(**base, up=True, checked_at=now, last_ok_at=now, report=result)
    if result is None:
        result = "no running agent task" if target.task_state else "no agent task on this node"
    # Keep the last good report (marked down): what the agent said last is still worth showing.
    last_ok = old.last_ok_at if old is not None else None
    report = old.report if old is not None else None
    return AgentEntry(**base, up=False, checked_at=now, last_ok_at=last_ok, error=result, report=report)


class AgentPoller(Watcher):
    """Fetches every agent's report each interval (see the module docstring); owns ``state``'s writes."""

    def __init__(  # noqa: PLR0913 - collaborators, injected for tests; fetch and token keyword-only
        self,
        trigger: Trigger,
        state: AgentTableState,
        port: int,
        timeout_seconds: float,
        *,
        fetch: Fetch = fetch_report,
        token: str | None = None,
    ) -> None:
        super().__init__("orcastra-agents", trigger)
        self.state, self.port, self.timeout, self._fetch = state, port, timeout_seconds, fetch
        self._token = token or ""
        self._lock = threading.Lock()
        self._targets: tuple[AgentTarget, ...] | None = None
        self._facts: bytes | None = None
        self.on_round: Callable[[AgentTableState], None] | None = None

    def watch(self, targets: tuple[AgentTarget, ...], facts: SwarmFacts | None = None) -> None:
        """The agent's tasks as the last cycle saw them, and the Swarm's facts to hand every agent (called
        from the loop thread)."""
        body = encode_facts(facts) if facts is not None else None
        with self._lock:
            self._targets = targets
            if body is not None:
                self._facts = body

    def poll_once(self, now: float | None = None) -> None:
        with self._lock:
            targets = self._targets or ()
        running = [t for t in targets if t.address]
        results: dict[str, AgentReport | str] = {}
        if running:
            with ThreadPoolExecutor(min(MAX_PARALLEL_FETCHES, len(running)), "orcastra-agent-fetch") as pool:
                for target, result in zip(running, pool.map(self._fetch_one, running), strict=True):
                    results[target.node_id] = result
        self.state.update(targets, results, time.time() if now is None else now)
        if self.on_round is not None:
            self.on_round(self.state)

    def _fetch_one(self, target: AgentTarget) -> AgentReport | str:
        try:
            with self._lock:
                facts = self._facts
            return self._fetch(target.address, self.port, self.timeout, facts, self._token)
        except OrcastraError as e:
            log.debug("agent on %s: %s", target.hostname, e)
            return str(e)

    def body(self) -> None:
        while not self.trigger.stopped:
            with self._lock:
                known = self._targets is not None
            if not known:
                self.trigger.sleep(WAIT_FOR_TARGETS_SECONDS)
                continue
            self.poll_once()
            self.trigger.sleep(self.state.poll_interval_seconds)


def agents_routes(state: AgentTableState) -> dict[tuple[str, str], Route]:
    """``GET /v1/agents``: read-only, no token (what /metrics tells, per node; no secrets: docs/agent.md)."""

    def agents(request: Request) -> Response:
        return Response(200, encode(state.table()))

    return {("GET", AGENTS_PATH): agents}


def agent_rows(snapshot: Snapshot, api_listen: str) -> list[tuple[AgentTarget, AgentEntry | None]]:
    """For ``orcastra status``: each node's agent task, with the local controller's entry for it (None when
    its API does not answer); empty when there is no agent service."""
    from orcastra.adapters.http import parse_listen_address

    targets = agent_targets(snapshot)
    if not targets:
        return []
    entries: dict[str, AgentEntry] = {}
    try:
        host, port, _ = parse_listen_address(api_listen)
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        entries = {e.node_id: e for e in fetch_table(host, port, STATUS_FETCH_TIMEOUT_SECONDS).agents}
    except (OrcastraError, ValueError) as e:
        log.debug("no agent table from the controller's API on %s: %s", api_listen, e)
    return [(t, entries.get(t.node_id)) for t in targets]
