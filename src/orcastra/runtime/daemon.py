"""``orcastra run``: the long-running loop. Watches the Swarm and runs one reconcile cycle per trigger.

Watchers (each a thread, each with its own Engine connection):
- manager events (``node``, ``service``): any change may matter, so it triggers a cycle (debounced);
- a cheap task poll: one filtered ``GET /tasks`` of the anchors' tasks every ``task_poll_interval_seconds``;
  a changed fingerprint (a task started, stopped or moved) triggers a cycle. Managers emit no task events;
- container events from node endpoints, where configured: a container start/die makes the task poll look
  at once, instead of at its next tick;
- the config file (hot reload), and the periodic resync (``RELABEL_TIME``).
Triggers are level-based: an event only says "look again"; the cycle reads the whole Swarm, so a missed or
duplicated event costs a delay until the next resync, never a wrong action.

Only the leader (see ``lease``) executes actions; followers plan (keeping their snapshot warm and their
status current) and take over when the lease expires.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from orcastra.adapters.engine import EngineAdapter, EngineEvent
from orcastra.adapters.engine.adapter import EventStream
from orcastra.adapters.engine.connect import make_engine, node_engine
from orcastra.adapters.http import ApiServer
from orcastra.adapters.memory import collect_memory
from orcastra.commands import CommandRunner, CommandWatcher, command_routes, load_token
from orcastra.config import Config, load_config
from orcastra.domain.actions import UpdateService
from orcastra.domain.snapshot import LIVE_DESIRED_STATES, Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.errors import ConfigError, OrcastraError
from orcastra.features.colocation.plan import plan_colocation
from orcastra.runtime.controllers import Controller, colocation_settings, registry
from orcastra.runtime.executor import AuditLog, Executor, Outcome
from orcastra.runtime.handlers import PAUSED_LABEL, DaemonCommands
from orcastra.runtime.leadership import LeaderLease
from orcastra.runtime.observe import HealthState, Metrics, status_routes
from orcastra.runtime.rebalancer import Rebalancer
from orcastra.runtime.reconcile import CycleResult, run_cycle
from orcastra.runtime.wiring import make_executor

log = logging.getLogger(__name__)

CONFIG_POLL_INTERVAL_SECONDS = 1.0
EVENT_RECONNECT_DELAY_SECONDS = 2.0
# After a container event on some node, the manager learns the task's new state a little later: poll
# quickly for a short while so the change is seen within tens of milliseconds, not at the next tick.
POKE_BURST_SECONDS = 1.5
POKE_BURST_INTERVAL_SECONDS = 0.05
POLL_INTERVAL_WITH_NODE_EVENTS_SECONDS = 2.0
ERROR_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class FileStamp:
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path | None) -> FileStamp | None:
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size)


class Trigger:
    """A debounced "reconcile soon" flag shared by the watchers and the main loop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending_since: float | None = None
        self._reasons: list[str] = []
        self.stopped = False

    def fire(self, reason: str) -> None:
        with self._cond:
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._reasons.append(reason)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopped."""
        with self._cond:
            end = time.monotonic() + seconds
            while not self.stopped:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def wait(self, timeout: float, debounce: float) -> list[str]:
        """Wait up to ``timeout`` for a trigger; then let ``debounce`` seconds of further triggers gather."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending_since is None and not self.stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if self.stopped or self._pending_since is None:
                return []
            while not self.stopped:
                remaining = self._pending_since + debounce - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            reasons, self._reasons, self._pending_since = self._reasons, [], None
            return reasons


class EchoFilter:
    """Recognises the events of Orcastra's own writes, so they do not trigger another cycle."""

    def __init__(self, ignored_service_names: frozenset[str] = frozenset()) -> None:
        self._lock = threading.Lock()
        self._expected: dict[tuple[str, str], int] = {}
        self.ignored_service_names = ignored_service_names

    def expect(self, outcome: Outcome) -> None:
        if outcome.result != "ok":
            return
        a = outcome.action
        key = ("service", a.service_id) if isinstance(a, UpdateService) else ("node", a.node_id)
        with self._lock:
            self._expected[key] = self._expected.get(key, 0) + 1

    def is_echo(self, event: EngineEvent) -> bool:
        if event.type == "service" and event.attributes.get("name") in self.ignored_service_names:
            return True
        if event.action != "update" or event.attributes.get("updatestate.new"):
            # Rolling-update progress events are not our write's echo: tasks are changing.
            return False
        key = (event.type, event.actor_id)
        with self._lock:
            n = self._expected.get(key, 0)
            if n <= 0:
                return False
            if n == 1:
                del self._expected[key]
            else:
                self._expected[key] = n - 1
            return True


class Watcher(threading.Thread):
    """Base of the watcher threads: a loop that reconnects after errors until stopped."""

    def __init__(self, name: str, trigger: Trigger) -> None:
        super().__init__(name=name, daemon=True)
        self.trigger = trigger
        self._closers_lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []

    def closing(self, fn: Callable[[], None]) -> None:
        with self._closers_lock:
            self._closers.append(fn)

    def stop(self) -> None:
        with self._closers_lock:
            closers, self._closers = self._closers, []
        for fn in closers:
            fn()


class EventWatcher(Watcher):
    """Follows one Engine's event stream and hands each event to ``on_event``."""

    def __init__(
        self,
        name: str,
        engine_factory: Callable[[], EngineAdapter],
        filters: Mapping[str, list[str]],
        trigger: Trigger,
        on_event: Callable[[EngineEvent], None],
    ) -> None:
        super().__init__(name, trigger)
        self._engine_factory = engine_factory
        self._filters = filters
        self._on_event = on_event

    def run(self) -> None:
        since: float | None = None
        while not self.trigger.stopped:
            engine = self._engine_factory()
            self.closing(engine.close)
            try:
                stream: EventStream = engine.events(self._filters, since=since)
                self.closing(stream.close)
                for event in stream:
                    if event.time_nano:
                        since = event.time_nano / 1e9
                    self._on_event(event)
            except OrcastraError as e:
                log.debug("%s: %s", self.name, e)
            finally:
                engine.close()
            if not self.trigger.stopped:
                # The stream ended (daemon restart, leader change): a cycle covers what was missed.
                self._on_event(EngineEvent(type="watch", action="reconnect", actor_id=self.name))
                self.trigger.sleep(EVENT_RECONNECT_DELAY_SECONDS)


class TaskPoller(Watcher):
    """Lists the anchors' tasks cheaply and often; fires the trigger when where/how they run changes."""

    def __init__(self, engine_factory: Callable[[], EngineAdapter], trigger: Trigger, interval: float) -> None:
        super().__init__("orcastra-task-poll", trigger)
        self._engine_factory = engine_factory
        self.interval = interval
        self._wake = threading.Event()
        self._burst_until = 0.0
        self._lock = threading.Lock()
        self._service_ids: tuple[str, ...] = ()
        self._fingerprint: frozenset[tuple[str, str, str, str]] | None = None

    def watch_services(self, service_ids: tuple[str, ...]) -> None:
        with self._lock:
            if service_ids != self._service_ids:
                self._service_ids = service_ids
                self._fingerprint = None

    def poke(self) -> None:
        """Look now, and keep looking quickly for a moment (a container started or died somewhere)."""
        self._burst_until = time.monotonic() + POKE_BURST_SECONDS
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def run(self) -> None:
        engine = self._engine_factory()
        self.closing(engine.close)
        try:
            while not self.trigger.stopped:
                bursting = time.monotonic() < self._burst_until
                self._wake.wait(POKE_BURST_INTERVAL_SECONDS if bursting else self.interval)
                self._wake.clear()
                with self._lock:
                    ids = self._service_ids
                if not ids or self.trigger.stopped:
                    continue
                try:
                    fp = engine.task_states({"service": list(ids), "desired-state": sorted(LIVE_DESIRED_STATES)})
                except OrcastraError as e:
                    log.debug("task poll: %s", e)
                    engine.close()
                    continue
                with self._lock:
                    changed = self._fingerprint is not None and fp != self._fingerprint
                    self._fingerprint = fp
                if changed:
                    self.trigger.fire("anchor tasks changed")
        finally:
            engine.close()


class MemoryWatcher(Watcher):
    """Reads memory (node_exporter, Prometheus, container stats) every monitor interval, off the main loop."""

    def __init__(self, owner: Daemon) -> None:
        super().__init__("orcastra-memory", owner.trigger)
        self.owner = owner

    def run(self) -> None:
        while not self.trigger.stopped:
            config = self.owner.config
            snapshot = self.owner.latest_snapshot()
            if config.rebalance.enabled and snapshot is not None and self.owner.is_leader:
                try:
                    self.owner.memory_read(collect_memory(config, snapshot, time.time()))
                except OrcastraError as e:  # collect_memory reports problems as data; this is a last guard
                    log.warning("memory read failed: %s", e)
            self.trigger.sleep(config.rebalance.monitor_interval_seconds)


class BootstrapLoop(Watcher):
    """BOOTSTRAP_MODE=loop: a bootstrap/heal cycle every loop interval, by the leader."""

    def __init__(self, owner: Daemon) -> None:
        super().__init__("orcastra-bootstrap", owner.trigger)
        self.owner = owner

    def run(self) -> None:
        while not self.trigger.stopped:
            self.trigger.sleep(self.owner.config.bootstrap.loop_interval_seconds)
            if self.trigger.stopped or not self.owner.is_leader or self.owner.paused:
                continue
            try:
                log.info("%s", self.owner.run_bootstrap_cycle())
            except OrcastraError as e:
                log.error("%s", e)


class ScheduledReboots(Watcher):
    """reboot.schedule: reboot nodes whose reboot-required sentinel is set, inside the window, one at a time."""

    def __init__(self, owner: Daemon) -> None:
        super().__init__("orcastra-reboots", owner.trigger)
        self.owner = owner

    def run(self) -> None:
        from orcastra.runtime.reboot import run_scheduled_reboot

        while not self.trigger.stopped:
            schedule = self.owner.config.reboot.schedule
            self.trigger.sleep(schedule.check_interval_seconds)
            if self.trigger.stopped or not schedule.enabled or not self.owner.is_leader or self.owner.paused:
                continue
            try:
                with make_engine(self.owner.config, self.owner.env) as engine:
                    message = run_scheduled_reboot(engine, self.owner.executor, self.owner.config)
                if message:
                    log.info("scheduled reboot: %s", message)
            except OrcastraError as e:
                log.error("scheduled reboot: %s", e)


class CommandFileWatcher(Watcher):
    """Polls the command file; the leader takes and runs what it holds (followers leave it alone)."""

    def __init__(self, owner: Daemon, runner: CommandRunner) -> None:
        super().__init__("orcastra-commands", owner.trigger)
        self.owner = owner
        self.runner = runner
        self._watch = CommandWatcher(runner.command_file, self._changed)

    def _changed(self) -> None:
        if self.owner.is_leader:
            for result in self.runner.process_file():
                log.info("command %s: %s %s", result.command, result.result, result.message)

    def run(self) -> None:
        self._watch.run()

    def stop(self) -> None:
        super().stop()
        self._watch.stop()


class LeaseKeeper(Watcher):
    """Ticks the leader lease; fires the trigger when this instance becomes the leader."""

    def __init__(self, lease: LeaderLease, trigger: Trigger, on_change: Callable[[bool], None]) -> None:
        super().__init__("orcastra-lease", trigger)
        self.lease = lease
        self._on_change = on_change
        self.was_leader: bool | None = None  # unknown until the first tick, which always reports the role

    def run(self) -> None:
        try:
            while not self.trigger.stopped:
                leader = self.check()
                # A follower looks often, to take over soon after a lease expires; the leader only needs to
                # renew, every third of the ttl (each look is a list call, each renewal a read and a write).
                self.trigger.sleep(max(0.2, self.lease.ttl / (3 if leader else 5)))
        finally:
            self.lease.release()
            self.lease.engine.close()

    def check(self) -> bool:
        leader = self.lease.tick()
        if leader != self.was_leader:
            self.was_leader = leader
            self._on_change(leader)
            if leader:
                self.trigger.fire("became leader")
        return leader


class Daemon:
    """Wires the watchers, the controllers, the lease, the API listener and one executor."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        env: Mapping[str, str],
        *,
        dry_run: bool,
        controllers: list[Controller] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.env = env
        self.dry_run = dry_run
        self.controllers = controllers if controllers is not None else [f() for f in registry().values()]
        self.trigger = Trigger()
        le = config.leader_election
        self.echo = EchoFilter(frozenset({le.lease_name}))
        self.metrics = Metrics()
        self.health = HealthState(stale_after_seconds=3 * config.reconcile.resync_interval_seconds)
        self.engine: EngineAdapter = make_engine(config, env)
        self.audit = AuditLog(path=config.audit.path)
        self.executor: Executor = make_executor(
            config, self.engine, dry_run=dry_run, on_outcome=self._on_outcome, audit=self.audit
        )
        self._config_stamp = FileStamp.of(config_path)
        self._watchers: list[Watcher] = []
        self._poller: TaskPoller | None = None
        self._api: ApiServer | None = None
        self.lease_keeper: LeaseKeeper | None = None
        if le.enabled and not dry_run:  # a dry run writes nothing, the lease included
            lease = LeaderLease(make_engine(config, env), name=le.lease_name, ttl_seconds=le.ttl_seconds)
            self.lease_keeper = LeaseKeeper(lease, self.trigger, self._on_leadership)
        self.rebalancer = Rebalancer()
        self.paused = False
        self.commands = DaemonCommands(self)
        self.command_runner: CommandRunner | None = None
        self._memory_lock = threading.Lock()
        self._new_memory: MemoryView | None = None
        self.cycles = 0
        self.last_result: CycleResult | None = None
        self.wake_at: float | None = None  # epoch seconds a planner asked to be run again (a backoff ends)

    # --- hooks ------------------------------------------------------------------------------------------

    def _on_outcome(self, outcome: Outcome) -> None:
        self.echo.expect(outcome)
        self.metrics.observe_action(outcome.action.kind, outcome.result)

    def _on_leadership(self, leader: bool) -> None:
        self.metrics.set_leader(leader)
        self.health.set_role("leader" if leader else "follower")
        log.info("this instance is now the %s", "leader" if leader else "follower")
        if leader:
            self.load_paused()

    # --- pause / resume (kept in a label of the Swarm: shared, survives restarts) -------------------------

    def load_paused(self) -> None:
        try:
            self.paused = self.engine.swarm_labels().get(PAUSED_LABEL) == "true"
        except OrcastraError as e:
            log.warning("could not read the paused flag from the Swarm: %s", e)
        if self.paused:
            log.warning("Orcastra is paused (Swarm label %s): planning only until `resume`", PAUSED_LABEL)

    def set_paused(self, paused: bool) -> None:
        if not self.executor.dry_run:
            self.engine.set_swarm_label(PAUSED_LABEL, "true" if paused else None)
        self.paused = paused
        log.warning("Orcastra %s by operator command", "paused" if paused else "resumed")

    def _on_manager_event(self, event: EngineEvent) -> None:
        if self.echo.is_echo(event):
            log.debug("ignoring the echo of our own change: %s %s", event.type, event.actor_id[:12])
            return
        self.trigger.fire(f"event {event.type} {event.action} {event.actor_id[:12]}")

    def _on_node_event(self, event: EngineEvent) -> None:
        if self._poller is not None:
            self._poller.poke()

    @property
    def is_leader(self) -> bool:
        return self.lease_keeper is None or self.lease_keeper.lease.is_leader

    # --- config hot reload ------------------------------------------------------------------------------

    def reload_config_if_changed(self) -> bool:
        stamp = FileStamp.of(self.config_path)
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        try:
            new = load_config(self.config_path, self.env, required=True)
        except ConfigError as e:
            log.error("config changed but is invalid; keeping the previous one:\n%s", e)
            return False
        if new.fingerprint() == self.config.fingerprint():
            return False
        log.info("configuration reloaded from %s", self.config_path)
        self.config = new
        return True

    # --- cycles -----------------------------------------------------------------------------------------

    def run_single_cycle(self) -> bool:
        """``run --once``: bootstrap first (when enabled), take the lease if it is free, run one cycle, give the
        lease back."""
        if self.config.bootstrap.mode != "off":
            log.info("%s", self.run_bootstrap_cycle())
        if self.lease_keeper is not None and not self.lease_keeper.check():
            log.warning(
                "another Orcastra holds the leader lease (%s): planning only, changing nothing",
                self.lease_keeper.lease.state.holder,
            )
        try:
            return self.run_once()
        finally:
            if self.lease_keeper is not None:
                self.lease_keeper.lease.release()
                self.lease_keeper.lease.engine.close()

    def run_once(self) -> bool:
        """One cycle (acting only as the leader); True when every action succeeded."""
        leader = self.is_leader
        acting = leader and not self.paused
        result = run_cycle(self.engine, self.executor if acting else None, self.config, self.controllers)
        self.cycles += 1
        self.last_result = result
        self.wake_at = result.plan.wake_at
        now = time.time()
        self.metrics.observe_cycle(result.seconds, result.engine_calls, not result.failed, now)
        self._publish_groups(result.snapshot)
        if result.failed:
            self.health.cycle_failed(now, "; ".join(o.detail for o in result.outcomes if o.result == "error"))
        else:
            self.health.cycle_ok(now)
        if leader:
            for f in result.plan.findings:
                (log.warning if f.level == "warning" else log.debug)("%s: %s", f.subject, f.message)
            if self.config.rebalance.enabled and not self.paused:
                self.rebalance_step(result)
        log.log(
            logging.INFO if result.outcomes else logging.DEBUG,
            "cycle %d (%s): %d actions, %d engine calls, %.0f ms",
            self.cycles,
            "leader" if leader else "follower, planning only",
            len(result.outcomes),
            result.engine_calls,
            result.seconds * 1000,
        )
        return not result.failed

    def memory_read(self, view: MemoryView) -> None:
        """Called by the memory watcher with each new reading; the next cycle plans with it."""
        with self._memory_lock:
            self._new_memory = view
        self.trigger.fire("memory read")

    def latest_snapshot(self) -> Snapshot | None:
        return self.last_result.snapshot if self.last_result is not None else None

    def rebalance_step(self, result: CycleResult) -> None:
        """Count the moves this cycle saw finish and, with a new memory reading, plan new moves (leader only).
        Moves in flight are followed by the Pins controller, in the cycle itself."""
        for _move, outcome in self.rebalancer.finished_moves(result.snapshot, self.config):
            self.metrics.observe_move(outcome)
        with self._memory_lock:
            memory, self._new_memory = self._new_memory, None
        if memory is None:
            return
        snapshot = result.snapshot
        if result.outcomes:  # this cycle changed versions: plan the moves from a fresh read
            snapshot = self.engine.snapshot()
        step = self.rebalancer.step(snapshot, self.config, time.time(), memory)
        self.metrics.set_node_memory({h: n.used_percent / 100 for h, n in step.memory.nodes.items()})
        for _ in step.started:
            self.metrics.observe_move("planned")
        if step.actions:
            self.executor.apply(list(step.actions), snapshot)
        if step.wake_at is not None:
            self.wake_at = step.wake_at if self.wake_at is None else min(self.wake_at, step.wake_at)

    def _publish_groups(self, snapshot: Snapshot) -> None:
        groups = plan_colocation(snapshot, colocation_settings(self.config), snapshot.taken_at).groups
        self.metrics.set_anchor_status((g.anchor, g.colocated, g.restart_attempts, g.next_restart_at) for g in groups)
        if self._poller is not None:
            ids = tuple(sorted(s.id for g in groups if (s := snapshot.service(g.anchor)) is not None))
            self._poller.watch_services(ids)

    # --- the loop -----------------------------------------------------------------------------------------

    def start_watchers(self) -> None:
        rc = self.config.reconcile
        if rc.event_mode:
            self._watchers.append(
                EventWatcher(
                    "orcastra-events",
                    lambda: make_engine(self.config, self.env),
                    {"type": ["node", "service"]},
                    self.trigger,
                    self._on_manager_event,
                )
            )
            interval = rc.task_poll_interval_seconds
            if any(n.endpoint for n in self.config.nodes.values()):
                # Container events from the nodes make the poll look at once (and quickly for a moment),
                # so the steady poll only covers what events miss: poll less, cost less when idle.
                interval = max(interval, POLL_INTERVAL_WITH_NODE_EVENTS_SECONDS)
            self._poller = TaskPoller(lambda: make_engine(self.config, self.env), self.trigger, interval)
            self._watchers.append(self._poller)
            for hostname, node in sorted(self.config.nodes.items()):
                if node.endpoint:
                    self._watchers.append(
                        EventWatcher(
                            f"orcastra-events-{hostname}",
                            functools.partial(node_engine, self.config, node.endpoint),
                            {"type": ["container"], "event": ["start", "die", "health_status"]},
                            self.trigger,
                            self._on_node_event,
                        )
                    )
        self._watchers.append(MemoryWatcher(self))
        if self.lease_keeper is not None:
            self.lease_keeper.check()  # know our role before the first cycle
            self._watchers.append(self.lease_keeper)
        else:
            self._on_leadership(True)
        for w in self._watchers:
            w.start()

    def start_api(self) -> None:
        listen = self.config.api.listen
        routes = None
        if self.command_runner is not None:
            routes = command_routes(
                self.command_runner.submit, load_token(self.config.api), results=self.command_runner.results
            )
        self._api = ApiServer(listen, routes, builtin=status_routes(self.metrics, self.health))
        self._api.start()
        log.info("HTTP listener on %s (/healthz, /metrics, /v1/commands)", listen)

    def start_commands(self) -> None:
        """The command file: watched by every instance, run by the leader only. The leader's first pass also
        reports what a crash interrupted (a follower must not: it would mark the leader's running command)."""
        path = self.config.commands.file
        self.command_runner = CommandRunner.from_settings(self.config.commands, self.commands)
        if path.parent.is_dir():
            self._watchers.append(CommandFileWatcher(self, self.command_runner))
        else:
            log.info("command file %s: its directory does not exist; commands only through the API", path)

    def run_bootstrap_cycle(self) -> str:
        """One bootstrap/heal cycle (at start, on the `bootstrap` command, every loop interval)."""
        from orcastra.runtime.bootstrap import run_bootstrap

        run = run_bootstrap(
            self.config,
            dry_run=self.executor.dry_run,
            audit=self.audit,
            remove_down_after_seconds=self.config.bootstrap.remove_down_after_seconds,
        )
        done = [f"{o.action.describe()} {o.result}" for o in run.outcomes]
        if run.plan.refused:
            raise OrcastraError("bootstrap refused: " + "; ".join(str(f) for f in run.plan.findings))
        if not run.ok:
            raise OrcastraError("bootstrap: " + "; ".join(done))
        said = "; ".join(done) if done else "nothing to do"
        if run.plan.findings:  # e.g. an inventory node not reachable: the operator should see it
            said += " (" + "; ".join(str(f) for f in run.plan.findings) + ")"
        return "bootstrap: " + said

    def rebalance_now(self) -> str:
        """The `rebalance` command: read memory now and run one rebalancing cycle (cooldowns honoured; the
        sustained period is not waited for, the operator asked)."""
        from orcastra.runtime.rebalancer import plan_now

        snapshot = self.engine.snapshot()
        step = plan_now(self.config, snapshot, time.time())
        if not step.started:
            reasons = "; ".join(f"{f.subject}: {f.message}" for f in step.plan.findings[:5])
            return "no move: " + (reasons or "no node is above high")
        return self.commands.apply_and_describe(list(step.actions), snapshot)

    def run_forever(self) -> None:
        self._install_signal_handlers()
        if self.config.bootstrap.mode != "off":
            # Before anything else: without a Swarm there is nothing to watch (and no lease to hold).
            try:
                log.info("%s", self.run_bootstrap_cycle())
            except OrcastraError as e:
                log.error("%s", e)
            if self.config.bootstrap.mode == "loop":
                self._watchers.append(BootstrapLoop(self))
        self.start_commands()
        self._watchers.append(ScheduledReboots(self))
        self.start_api()
        self.start_watchers()
        self.trigger.fire("start")
        next_resync = time.monotonic() + self.config.reconcile.resync_interval_seconds
        errors = 0
        try:
            while not self.trigger.stopped:
                rc = self.config.reconcile
                timeout = CONFIG_POLL_INTERVAL_SECONDS
                if rc.polling_mode:
                    timeout = min(timeout, next_resync - time.monotonic())
                if self.wake_at is not None:
                    timeout = min(timeout, self.wake_at - time.time())
                reasons = self.trigger.wait(max(0.0, timeout), rc.debounce_seconds)
                if self.trigger.stopped:
                    break
                if self.reload_config_if_changed():
                    reasons.append("config changed")
                if self.wake_at is not None and time.time() >= self.wake_at:
                    self.wake_at = None
                    reasons.append("backoff due")
                if rc.polling_mode and time.monotonic() >= next_resync:
                    reasons.append("resync")
                if not reasons:
                    continue
                if "resync" in reasons:
                    next_resync = time.monotonic() + self.config.reconcile.resync_interval_seconds
                log.debug("cycle triggered by: %s", ", ".join(sorted(set(reasons))))
                try:
                    self.run_once()
                    errors = 0
                except OrcastraError as e:
                    delay = ERROR_BACKOFF_SECONDS[min(errors, len(ERROR_BACKOFF_SECONDS) - 1)]
                    errors += 1
                    log.error("cycle failed: %s (retrying in %.0f s)", e, delay)
                    self.health.cycle_failed(time.time(), str(e))
                    self.metrics.observe_cycle(0.0, 0, False, time.time())
                    self.engine.close()
                    self.trigger.sleep(delay)
                    self.trigger.fire("retry after error")
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.trigger.stop()
        for w in self._watchers:
            w.stop()
        for w in self._watchers:
            if w.is_alive():
                w.join(timeout=5)
        if self._api is not None:
            self._api.stop()
            self._api = None
        self.engine.close()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.trigger.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
