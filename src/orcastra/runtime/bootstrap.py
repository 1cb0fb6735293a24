"""Applying bootstrap actions through each node's own Engine, and ``run_bootstrap`` (observe, plan, apply).

Join tokens are read from the manager at the moment a node joins and go straight into the join call: they
are never part of an action, an outcome, a log line or an audit line. A failed action stops the batch
(the rest of the plan was made for a Swarm that did not turn out as expected); the next cycle re-plans.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from orcastra.adapters.engine import EngineSettings
from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.config.model import Config
from orcastra.errors import EngineError, EngineNotFoundError, OrcastraError
from orcastra.features.bootstrap.model import (
    BootstrapAction,
    BootstrapPlan,
    DemoteNode,
    InitSwarm,
    JoinSwarm,
    PromoteNode,
    RemoveNode,
)
from orcastra.features.bootstrap.plan import plan_bootstrap
from orcastra.features.inventory import NodeSettings
from orcastra.runtime.bootstrap_observe import Connect, observe_bootstrap
from orcastra.runtime.executor import AuditLog, Outcome

log = logging.getLogger(__name__)

# A join can block this long in the Engine before answering "will continue in the background".
JOIN_TIMEOUT_SECONDS = 60.0
JOIN_POLL_SECONDS = 0.5
# How long a removal right after a demotion may wait for Swarm to drop the node from the Raft membership.
REMOVE_TIMEOUT_SECONDS = 20.0

BootstrapResult = Literal["ok", "dry-run", "error", "skipped"]


@dataclass(frozen=True)
class BootstrapOutcome:
    action: BootstrapAction
    result: BootstrapResult
    detail: str = ""


@dataclass(frozen=True)
class BootstrapRun:
    """One bootstrap cycle: the plan and what came of each action."""

    plan: BootstrapPlan
    outcomes: tuple[BootstrapOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.plan.refused and all(o.result in ("ok", "dry-run") for o in self.outcomes)


def _audit(audit: AuditLog | None, outcome: BootstrapOutcome, *, dry_run: bool) -> None:
    if audit is None:
        return
    # AuditLog reads only kind/target/describe()/reason/controller, which every bootstrap action has; the
    # cast stands in until Outcome.action's type names the bootstrap actions too.
    audit.write(Outcome(cast(Any, outcome.action), cast(Any, outcome.result), outcome.detail), dry_run=dry_run)


class BootstrapExecutor:
    """Applies bootstrap actions, each through the Engine of the node it concerns (or its manager)."""

    dry_run = False

    def __init__(self, endpoints: Mapping[str, str], connect: Connect, audit: AuditLog | None = None) -> None:
        self._endpoints = dict(endpoints)  # inventory name -> Engine endpoint
        self._connect = connect
        self._audit = audit

    def apply(self, actions: Sequence[BootstrapAction]) -> list[BootstrapOutcome]:
        outcomes: list[BootstrapOutcome] = []
        failed = False
        for action in actions:
            if failed:
                outcome = BootstrapOutcome(action, "skipped", "an earlier bootstrap action failed; re-planning")
            else:
                outcome = self._apply_one(action)
                failed = outcome.result == "error"
            _audit(self._audit, outcome, dry_run=False)
            level = logging.WARNING if outcome.result == "error" else logging.INFO
            log.log(
                level,
                "%s %s: %s (%s) -> %s %s",
                action.kind,
                action.target,
                action.describe(),
                action.reason,
                outcome.result,
                outcome.detail,
            )
            outcomes.append(outcome)
        return outcomes

    def _engine(self, name: str) -> SwarmEngine:
        return self._connect(self._endpoints[name])

    def _apply_one(self, action: BootstrapAction) -> BootstrapOutcome:
        try:
            if isinstance(action, InitSwarm):
                with self._engine(action.node) as engine:
                    engine.init_swarm(action.address)
            elif isinstance(action, JoinSwarm):
                self._join(action)
            elif isinstance(action, PromoteNode | DemoteNode):
                role = "manager" if isinstance(action, PromoteNode) else "worker"
                with self._engine(action.manager) as engine:
                    if not engine.set_role(action.node_id, role):
                        return BootstrapOutcome(action, "ok", f"already a {role}")
            elif isinstance(action, RemoveNode):
                self._remove(action)
        except (OrcastraError, KeyError) as e:
            return BootstrapOutcome(action, "error", str(e))
        return BootstrapOutcome(action, "ok")

    def _remove(self, action: RemoveNode) -> None:
        with self._engine(action.manager) as engine:
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

    def _join(self, action: JoinSwarm) -> None:
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
                    return
                if time.monotonic() >= deadline:
                    raise EngineError(f"{action.node} did not become an active Swarm member (state {state})")
                time.sleep(JOIN_POLL_SECONDS)


class DryRunBootstrapExecutor:
    """Changes nothing: logs and audits what it would do."""

    dry_run = True

    def __init__(self, audit: AuditLog | None = None) -> None:
        self._audit = audit

    def apply(self, actions: Sequence[BootstrapAction]) -> list[BootstrapOutcome]:
        outcomes = []
        for action in actions:
            outcome = BootstrapOutcome(action, "dry-run", "would apply")
            _audit(self._audit, outcome, dry_run=True)
            log.info("would %s %s: %s (%s)", action.kind, action.target, action.describe(), action.reason)
            outcomes.append(outcome)
        return outcomes


def engine_connector(config: Config) -> Callable[[str], SwarmEngine]:
    """Endpoint -> a SwarmEngine with the config's timeout, and its TLS material for tcp:// endpoints."""
    docker = config.docker
    tls = docker.tls

    def connect(endpoint: str) -> SwarmEngine:
        use_tls = tls is not None and endpoint.startswith("tcp://")
        return SwarmEngine(
            EngineSettings(
                host=endpoint,
                timeout_seconds=max(docker.timeout_seconds, JOIN_TIMEOUT_SECONDS),
                tls=use_tls,
                tls_ca_cert=str(tls.ca_cert) if use_tls and tls is not None and tls.ca_cert else None,
                tls_client_cert=str(tls.client_cert) if use_tls and tls is not None and tls.client_cert else None,
                tls_client_key=str(tls.client_key) if use_tls and tls is not None and tls.client_key else None,
                tls_verify=tls.verify if tls is not None else True,
            )
        )

    return connect


def run_bootstrap(
    config: Config,
    *,
    dry_run: bool,
    audit: AuditLog | None,
    remove_down_after_seconds: float | None = None,
    connect: Connect | None = None,
) -> BootstrapRun:
    """Observe the inventory, plan, and apply (or, with ``dry_run``, only log and audit) one bootstrap cycle."""
    connect = connect or engine_connector(config)
    inventory: dict[str, NodeSettings] = {name: n for name, n in config.nodes.items() if n.endpoint}
    observation = observe_bootstrap(inventory, connect, self_endpoint=config.docker.host, now=time.time())
    plan = plan_bootstrap(observation, inventory, config.bootstrap, remove_down_after_seconds=remove_down_after_seconds)
    for finding in plan.findings:
        log.warning("bootstrap: %s", finding)
    executor = (
        DryRunBootstrapExecutor(audit)
        if dry_run
        else BootstrapExecutor({name: n.endpoint or "" for name, n in inventory.items()}, connect, audit)
    )
    outcomes = executor.apply(plan.actions)
    return BootstrapRun(plan=plan, outcomes=tuple(outcomes))
