"""One bootstrap/heal cycle: observe every inventory node through its own Engine, plan (pure), apply through the
runtime's one executor (which applies membership actions through the Engine of the node they concern).

Observing may wait on unreachable nodes (a connect timeout each), so it runs on the caller's thread: the start
of ``orcastra run``, the bootstrap ticker, the ``bootstrap`` command. Only the apply step needs the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from orcastra.adapters.engine import EngineSettings
from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.config.model import Config
from orcastra.domain.actions import JoinSwarm
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import OrcastraError
from orcastra.features.bootstrap.model import BootstrapPlan
from orcastra.features.bootstrap.plan import plan_bootstrap
from orcastra.features.inventory import NodeSettings
from orcastra.runtime.bootstrap_observe import Connect, observe_bootstrap
from orcastra.runtime.executor import Executor, Outcome
from orcastra.runtime.membership import JOIN_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

NO_INVENTORY = "no node in the configuration has an endpoint (nodes.<host>.endpoint): nothing to observe or join"


@dataclass(frozen=True)
class BootstrapRun:
    """One bootstrap cycle: the plan and what came of each action."""

    plan: BootstrapPlan
    outcomes: tuple[Outcome, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.plan.refused and all(o.result in ("ok", "dry-run") for o in self.outcomes)

    def summary(self) -> str:
        """What the operator reads: ``bootstrap: <actions and results> (findings)``; raises when refused/failed."""
        done = [f"{o.action.describe()} {o.result}" for o in self.outcomes]
        if self.plan.refused:
            raise OrcastraError("bootstrap refused: " + "; ".join(str(f) for f in self.plan.findings))
        if not self.ok:
            raise OrcastraError("bootstrap: " + "; ".join(done))
        said = "; ".join(done) if done else "nothing to do"
        if self.plan.findings:  # e.g. an inventory node not reachable: the operator should see it
            said += " (" + "; ".join(str(f) for f in self.plan.findings) + ")"
        return "bootstrap: " + said


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


def plan_bootstrap_cycle(config: Config, *, connect: Connect | None = None) -> BootstrapPlan:
    """Observe the inventory (every node with an endpoint) and plan; findings are logged."""
    connect = connect or engine_connector(config)
    inventory: dict[str, NodeSettings] = {name: n for name, n in config.nodes.items() if n.endpoint}
    observation = observe_bootstrap(inventory, connect, self_endpoint=config.docker.host, now=time.time())
    plan = plan_bootstrap(
        observation,
        inventory,
        config.bootstrap,
        remove_down_after_seconds=config.bootstrap.remove_down_after_seconds,
    )
    insecure = insecure_token_paths(plan, config)
    if insecure:
        plan = replace(plan, findings=(*plan.findings, *insecure))
    for finding in plan.findings:
        log.warning("bootstrap: %s", finding)
    return plan


def insecure_token_paths(plan: BootstrapPlan, config: Config) -> list[str]:
    """A join sends a join token (the key to the Swarm: a manager token makes a manager) to the joining node's
    Engine, read from a manager's: over ``tcp://`` without verified TLS, anyone on the path can read it."""
    tls = config.docker.tls
    verified = tls is not None and tls.verify
    out = []
    for action in plan.actions:
        if not isinstance(action, JoinSwarm):
            continue
        for name in (action.manager, action.node):
            endpoint = config.nodes[name].endpoint if name in config.nodes else None
            if endpoint and endpoint.startswith("tcp://") and not verified:
                why = "without TLS" if tls is None else "with TLS verification off"
                out.append(
                    f"{action.node}: the {action.role} join token goes through {name}'s Engine at {endpoint} "
                    f"{why}: anyone on that network can read it; use TLS (docker.tls) or ssh:// endpoints"
                )
    return list(dict.fromkeys(out))


def run_bootstrap(config: Config, writes: Executor, *, connect: Connect | None = None) -> BootstrapRun:
    """Observe, plan and apply one bootstrap cycle; ``writes`` is the runtime's executor (or, off the loop's
    thread, the proxy that hands the actions to the loop)."""
    if not any(n.endpoint for n in config.nodes.values()):
        # Nothing to observe: bootstrap works through each inventory node's own Engine.
        return BootstrapRun(plan=BootstrapPlan(findings=(NO_INVENTORY,)))
    plan = plan_bootstrap_cycle(config, connect=connect)
    outcomes = writes.apply(list(plan.actions), Snapshot((), (), ())) if plan.actions else []
    return BootstrapRun(plan=plan, outcomes=tuple(outcomes))
