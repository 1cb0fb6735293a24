"""``orcastra run``: wires the runtime together and runs it.

::

    Engine events ─┐
    task poll ─────┤                        ┌── controllers (pure plans) ──┐
    memory reads ──┼─► trigger ─► LOOP ─────┤                              ├─► executor ─► Swarm
    config file ───┤   + queue   (one       └── requests (commands, the ──┘      (audit,
    resync, wakes ─┘      ▲       thread)       writes of reboots and             dry-run)
                          │                     bootstrap)
    command file ─► runner ┤
    HTTP API ─────► runner ┤   lease keeper ─► executor (the lease only)
    Swarm configs ► runner ┘   (command requests: the leader takes them; a follower's API puts them there)

Only the leader (see ``leadership``) executes actions; followers plan (keeping their snapshot warm and their
status current) and take over when the lease expires.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from orcastra.adapters.engine import EngineEvent
from orcastra.adapters.engine.connect import make_engine, node_engine
from orcastra.adapters.http import ApiServer
from orcastra.commands import CommandRunner, command_routes, load_token
from orcastra.commands.legacy_file import legacy_command_runner
from orcastra.config import Config
from orcastra.errors import OrcastraError
from orcastra.runtime.agents import AgentPoller, AgentTableState, agents_routes
from orcastra.runtime.command_queue import SwarmCommandWatcher, engine_factory, forwarding_submit
from orcastra.runtime.controllers import Controller, registry
from orcastra.runtime.executor import AuditLog, Outcome
from orcastra.runtime.handlers import CommandHandlers
from orcastra.runtime.leadership import LeaderLease, LeaseKeeper, new_holder_id
from orcastra.runtime.loop import Loop
from orcastra.runtime.observe import HealthState, Metrics, status_routes
from orcastra.runtime.reconcile import CycleResult
from orcastra.runtime.triggers import EchoFilter, Trigger
from orcastra.runtime.watchers import (
    POLL_INTERVAL_WITH_NODE_EVENTS_SECONDS,
    BootstrapTicker,
    CommandFileWatcher,
    EventWatcher,
    MemoryWatcher,
    RebootScheduler,
    TaskPoller,
    Watcher,
)
from orcastra.runtime.wiring import make_executor

log = logging.getLogger(__name__)

# On SIGTERM, how long a command request in hand may still run before the stop goes on (the stack gives 30 s).
DRAIN_TIMEOUT_SECONDS = 20.0


class Daemon:
    """Builds the loop, its watchers, the lease keeper and the API listener; starts and stops them."""

    _ticker: BootstrapTicker | None = None  # bootstrap.mode loop/watch
    _queue: SwarmCommandWatcher | None = None  # the Swarm's command requests (not in a dry run)

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        env: Mapping[str, str],
        *,
        dry_run: bool,
        controllers: list[Controller] | None = None,
    ) -> None:
        self.env = env
        self.trigger = Trigger()
        le = config.leader_election
        self.echo = EchoFilter(frozenset({le.lease_name}))
        self.metrics, self.audit = Metrics(), AuditLog(path=config.audit.path)
        self.health = HealthState(stale_after_seconds=3 * config.reconcile.resync_interval_seconds)
        engine = make_engine(config, env)
        self._watchers: list[Watcher] = []
        self._poller: TaskPoller | None = None
        self.lease_keeper: LeaseKeeper | None = None
        self._lease_stop = threading.Event()
        self._api: ApiServer | None = None
        executor = make_executor(
            config,
            engine,
            dry_run=dry_run,
            audit=self.audit,
            on_outcome=self._on_outcome,
            current_config=lambda: self.loop.config,
        )
        if le.enabled and not dry_run:  # a dry run writes nothing, the lease included
            lease_engine = make_engine(config, env)
            lease = LeaderLease(
                lease_engine,
                make_executor(config, lease_engine, dry_run=False, audit=self.audit, on_outcome=self._on_outcome),
                name=le.lease_name,
                ttl_seconds=le.ttl_seconds,
            )
            self.lease_keeper = LeaseKeeper(
                lease, self._on_leadership, self._lease_sleep, on_crash=self.metrics.observe_thread_restart
            )
        keeper = self.lease_keeper
        self.loop = Loop(
            config=config,
            config_path=config_path,
            env=env,
            engine=engine,
            executor=executor,
            controllers=controllers if controllers is not None else [f() for f in registry().values()],
            metrics=self.metrics,
            health=self.health,
            trigger=self.trigger,
            leadership=(lambda: keeper.lease.is_leader) if keeper is not None else (lambda: True),
        )
        self.agents = AgentTableState(config.agent.report_poll_interval_seconds)
        self.loop.after_cycle += [self._watch_anchor_tasks, self._watch_agent_tasks]
        self._agent_poller: AgentPoller | None = None
        self.command_runner = CommandRunner.from_settings(config.commands, CommandHandlers(self.loop))
        self.dry_run = dry_run
        self.holder = keeper.lease.holder if keeper is not None else new_holder_id()

    @property
    def config(self) -> Config:
        return self.loop.config

    @functools.cached_property
    def legacy_command_runner(self) -> CommandRunner | None:
        """The earlier tool's command file's runner, when its directory exists (docs/migrating.md)."""
        return legacy_command_runner(self.config.commands, self.command_runner.ctx, self.env)

    # --- hooks (called from other threads) -------------------------------------------------------------

    def _on_outcome(self, outcome: Outcome) -> None:
        self.echo.expect(outcome)
        self.metrics.observe_action(outcome.action.kind, outcome.result)

    def _on_leadership(self, leader: bool) -> None:
        self.loop.leadership_changed(leader)

    def _on_manager_event(self, event: EngineEvent) -> None:
        if self.echo.is_echo(event):
            log.debug("ignoring the echo of our own change: %s %s", event.type, event.actor_id[:12])
            return
        self.trigger.fire(f"event {event.type} {event.action} {event.actor_id[:12]}")
        if event.type == "node" and self._ticker is not None and self.config.bootstrap.mode == "watch":
            self._ticker.poke()

    def _on_node_event(self, event: EngineEvent) -> None:
        if self._poller is not None:
            self._poller.poke()

    def _watch_anchor_tasks(self, result: CycleResult) -> None:
        if self._poller is not None:
            from orcastra.features.colocation.plan import group_statuses

            snapshot = result.snapshot
            groups = group_statuses(result.plan)
            self._poller.watch_services(
                tuple(sorted(s.id for g in groups if (s := snapshot.service(g.anchor)) is not None))
            )

    def _watch_agent_tasks(self, result: CycleResult) -> None:
        if self._agent_poller is not None:
            from orcastra.features.agents.facts import facts_from
            from orcastra.features.agents.view import agent_targets

            self._agent_poller.watch(agent_targets(result.snapshot), facts_from(result.snapshot, time.time()))

    # --- start-up ---------------------------------------------------------------------------------------

    def _start_watchers(self) -> None:
        config, env = self.config, self.env
        rc = config.reconcile
        if rc.event_mode:
            self._watchers.append(
                EventWatcher(
                    "orcastra-events",
                    lambda: make_engine(self.config, env),
                    {"type": ["node", "service"]},
                    self.trigger,
                    self._on_manager_event,
                )
            )
            interval = rc.task_poll_interval_seconds
            if any(n.endpoint for n in config.nodes.values()):
                # Container events from the nodes make the poll look at once (and quickly for a moment),
                # so the steady poll only covers what events miss: poll less, cost less when idle.
                interval = max(interval, POLL_INTERVAL_WITH_NODE_EVENTS_SECONDS)
            self._poller = TaskPoller(lambda: make_engine(self.config, env), self.trigger, interval)
            self._watchers.append(self._poller)
            for hostname, node in sorted(config.nodes.items()):
                if node.endpoint:
                    self._watchers.append(
                        EventWatcher(
                            f"orcastra-events-{hostname}",
                            functools.partial(node_engine, config, node.endpoint),
                            {"type": ["container"], "event": ["start", "die", "health_status"]},
                            self.trigger,
                            self._on_node_event,
                        )
                    )
        self._watchers.append(MemoryWatcher(self.loop))
        self._watchers.append(RebootScheduler(self.loop))
        if config.bootstrap.mode in ("loop", "watch"):
            self._ticker = BootstrapTicker(self.loop)
            self._watchers.append(self._ticker)
        self._agent_poller = self._make_agent_poller()
        self._watchers.append(self._agent_poller)
        if self.lease_keeper is not None:
            self.lease_keeper.check()  # know our role before the first cycle
            self.lease_keeper.start()
        else:
            self.loop.leadership_changed(True)
        path = config.commands.file
        if path.parent.is_dir():
            # The command file: watched by every instance, run by the leader only. The leader's first pass also
            # reports what a crash interrupted (a follower must not: it would mark the leader's running command).
            self._watchers.append(CommandFileWatcher(self.loop, self.command_runner))
        else:
            log.info("command file %s: its directory does not exist; commands only through the API", path)
        if self.legacy_command_runner is not None:
            log.info("also watching the earlier tool's command file %s", self.legacy_command_runner.command_file)
            self._watchers.append(CommandFileWatcher(self.loop, self.legacy_command_runner, "orcastra-commands-legacy"))
        if not self.dry_run:  # a dry run claims nothing, so it would only leave requests pending
            self._watchers.append(self._make_queue())
        for w in self._watchers:
            w.on_crash = self.metrics.observe_thread_restart
            w.start()

    def _make_queue(self) -> SwarmCommandWatcher:
        submit = functools.partial(self.command_runner.submit, source="swarm")
        self._queue = SwarmCommandWatcher(self.loop, submit, self.holder)
        return self._queue

    def _make_agent_poller(self) -> AgentPoller:
        from orcastra.adapters.http import parse_listen_address

        a = self.config.agent
        port, token = parse_listen_address(a.listen)[1], load_token(self.config.api)
        poller = AgentPoller(self.trigger, self.agents, port, a.report_timeout_seconds, token=token)
        poller.on_round = lambda state: self.metrics.set_agent_up(state.up_by_node())
        return poller

    def _start_api(self) -> None:
        listen = self.config.api.listen
        runner = self.command_runner
        # A follower forwards a command into the Swarm's command requests and waits for the leader's result.
        submit = forwarding_submit(lambda: self.loop.is_leader, runner.submit, engine_factory(self.loop))
        routes = command_routes(submit, load_token(self.config.api), results=runner.results)
        builtin = status_routes(self.metrics, self.health) | agents_routes(self.agents)
        self._api = ApiServer(listen, routes, builtin=builtin)
        self._api.start()
        log.info("HTTP listener on %s (/healthz, /metrics, /v1/agents, /v1/commands)", listen)

    def _bootstrap_at_start(self) -> None:
        # Before anything else: without a Swarm there is nothing to watch (and no lease to hold).
        if self.config.bootstrap.mode == "off":
            return
        try:
            log.info("%s", self.loop.bootstrap())
        except OrcastraError as e:
            log.error("%s", e)

    # --- running ----------------------------------------------------------------------------------------

    def run_single_cycle(self) -> bool:
        """``run --once``: bootstrap first (when enabled), take the lease if it is free, run one cycle, give the
        lease back. True when every action succeeded."""
        self._bootstrap_at_start()
        keeper = self.lease_keeper
        if keeper is not None and not keeper.check():
            log.warning(
                "another Orcastra holds the leader lease (%s): planning only, changing nothing",
                keeper.lease.state.holder,
            )
        try:
            return not self.loop.run_cycle().failed
        finally:
            if keeper is not None:
                keeper.lease.release()
                keeper.lease.engine.close()

    def run_forever(self) -> None:
        self._install_signal_handlers()
        self._bootstrap_at_start()
        self.loop.attach()  # from here on, other threads' writes queue for this thread
        try:
            self._start_api()
            self._start_watchers()
            self.loop.run()
        finally:
            self.shutdown()

    def _drain_then_stop(self) -> None:
        """A stop: the Swarm's command request in hand (if any) is finished first, the loop still serving it."""
        queue = self._queue
        if queue is not None and not queue.drain(DRAIN_TIMEOUT_SECONDS):
            log.warning("stopping: a command request still runs after %.0f s; stopping anyway", DRAIN_TIMEOUT_SECONDS)
        self.trigger.stop()

    def _lease_sleep(self, seconds: float) -> bool:
        """The lease keeper's sleep. It stops (and releases the lease) only once the loop and the watchers are
        done (``shutdown``): a follower must not start acting while this instance finishes its last command."""
        return not self._lease_stop.wait(seconds)

    def shutdown(self) -> None:
        self.trigger.stop()
        for w in self._watchers:
            w.stop()
        threads: list[threading.Thread] = [*self._watchers]
        for t in threads:
            _join(t)
        self._lease_stop.set()  # now the lease goes (see _lease_sleep)
        if self.lease_keeper is not None:
            _join(self.lease_keeper)
        if self._api is not None:
            self._api.stop()
            self._api = None
        self.loop.engine.close()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            threading.Thread(target=self._drain_then_stop, name="orcastra-stop", daemon=True).start()

        def hangup(signum: int, _frame: FrameType | None) -> None:
            # The earlier Orcastra re-ran its bootstrap on SIGHUP; here it also re-reads the config. Never exits.
            self.loop.hangup()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGHUP, hangup)


def _join(thread: threading.Thread, timeout: float = 5.0) -> None:
    """Wait for a stopping thread; say which one keeps the stop waiting (a stop should take well under 1 s)."""
    if not thread.is_alive():
        return
    started = time.monotonic()
    thread.join(timeout)
    if thread.is_alive() or time.monotonic() - started > 1.0:
        log.warning(
            "stopping: %s took %.1f s%s",
            thread.name,
            time.monotonic() - started,
            " and is still running" if thread.is_alive() else "",
        )
