"""The threads beside the loop. Each one watches something and tells the loop; none of them changes the Swarm
itself (the lease keeper, in ``leadership``, is the one exception, for the lease only).

- ``EventWatcher``: one Engine's event stream (manager: node/service events; a node: container events);
- ``TaskPoller``: a cheap filtered ``GET /tasks`` of the anchors' tasks (managers emit no task events);
- ``MemoryWatcher``: memory readings for rebalancing (container stats are one call per container);
- ``CommandFileWatcher``: the command file (the leader takes and runs its entries, each through the loop);
- ``BootstrapTicker``: a bootstrap/heal cycle every loop interval (observed here, applied by the loop);
- ``RebootScheduler``: scheduled reboots inside the window (waits here, writes through the loop).

Triggers are level-based: an event only says "look again"; the cycle reads the whole Swarm, so a missed or
duplicated event costs a delay until the next resync, never a wrong action. Every thread stops when the
trigger is stopped, and survives its own errors (logged, then tried again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from orcastra.adapters.engine import EngineAdapter, EngineEvent
from orcastra.adapters.engine.adapter import EventStream
from orcastra.adapters.engine.connect import make_engine
from orcastra.adapters.memory import collect_memory
from orcastra.commands import CommandRunner, CommandWatcher
from orcastra.domain.snapshot import LIVE_DESIRED_STATES
from orcastra.errors import OrcastraError
from orcastra.features.bootstrap.settings import WATCH_MIN_GAP_SECONDS
from orcastra.runtime.loop import Loop, LoopWrites
from orcastra.runtime.reboot import run_scheduled_reboot
from orcastra.runtime.triggers import Trigger

log = logging.getLogger(__name__)

EVENT_RECONNECT_DELAY_SECONDS = 2.0
# After a container event on some node, the manager learns the task's new state a little later: poll
# quickly for a short while so the change is seen within tens of milliseconds, not at the next tick.
POKE_BURST_SECONDS = 1.5
POKE_BURST_INTERVAL_SECONDS = 0.05
POLL_INTERVAL_WITH_NODE_EVENTS_SECONDS = 2.0
# A watcher whose body failed is started again after this, doubled for each failure in a row, up to the cap.
RESTART_PAUSE_SECONDS = 0.5
MAX_RESTART_PAUSE_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0


class Watcher(threading.Thread):
    """Base of the watcher threads. ``body`` does the work until the trigger is stopped; ``run`` supervises it:
    an error that escapes ``body`` (a bug, or an error nobody expected) is logged with its traceback, reported
    through ``on_crash`` (the daemon counts it in ``orcastra_thread_restarts_total``), and ``body`` is started
    again after a short, growing pause. A watcher never dies silently."""

    def __init__(self, name: str, trigger: Trigger) -> None:
        super().__init__(name=name, daemon=True)
        self.trigger = trigger
        self.on_crash: Callable[[str], None] | None = None
        self.crashes = 0
        self._closers_lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []

    def body(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.trigger.stopped:
            started = time.monotonic()
            try:
                self.body()
                return
            except Exception:
                if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                    self.crashes = 0  # it had been working: start the pauses over
                self.crashes += 1
                pause = min(MAX_RESTART_PAUSE_SECONDS, RESTART_PAUSE_SECONDS * 2 ** min(self.crashes - 1, 6))
                log.exception("%s failed; starting it again in %.1f s (failure %d)", self.name, pause, self.crashes)
                if self.on_crash is not None:
                    self.on_crash(self.name)
                if not self.trigger.sleep(pause):
                    return

    def closing(self, fn: Callable[[], None]) -> None:
        with self._closers_lock:
            self._closers.append(fn)

    def stop(self) -> None:
        with self._closers_lock:
            closers, self._closers = self._closers, []
        for fn in closers:
            fn()


class EventWatcher(Watcher):
    """Owns one Engine event stream; hands each event to ``on_event``."""

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

    def body(self) -> None:
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
    """Owns the task poll: lists the anchors' tasks cheaply and often; fires the trigger when where/how they
    run changes."""

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

    def body(self) -> None:
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
    """Owns the memory readings: every monitor interval, off the loop, handed to the loop for its next cycle."""

    def __init__(self, loop: Loop) -> None:
        super().__init__("orcastra-memory", loop.trigger)
        self.loop = loop

    def body(self) -> None:
        while not self.trigger.stopped:
            config = self.loop.config
            snapshot = self.loop.latest_snapshot()
            if config.rebalance.enabled and snapshot is not None and self.loop.is_leader:
                try:
                    self.loop.memory_read(collect_memory(config, snapshot, time.time()))
                except OrcastraError as e:  # collect_memory reports problems as data; this is a last guard
                    log.warning("memory read failed: %s", e)
            self.trigger.sleep(config.rebalance.monitor_interval_seconds)


class BootstrapTicker(Watcher):
    """bootstrap.mode loop: a bootstrap/heal cycle every loop interval, by the leader, when not paused; watch:
    also soon after a node event (``poke``), at most every ``min_gap`` seconds."""

    def __init__(self, loop: Loop, min_gap: float = WATCH_MIN_GAP_SECONDS) -> None:
        super().__init__("orcastra-bootstrap", loop.trigger)
        self.loop = loop
        self.min_gap = min_gap
        self._poked = threading.Event()
        self._last = 0.0
        self.closing(self._poked.set)  # stop() wakes the wait

    def poke(self) -> None:
        """A node event (watch mode): run a cycle soon."""
        self._poked.set()

    def _wait(self) -> bool:
        """Until the loop interval has passed or a poke came (not sooner than ``min_gap`` after the last
        cycle); False once stopping."""
        deadline = time.monotonic() + self.loop.config.bootstrap.loop_interval_seconds
        while not self.trigger.stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if self._poked.wait(remaining) and not self.trigger.stopped:
                self._poked.clear()
                gap = self._last + self.min_gap - time.monotonic()
                return gap <= 0 or self.trigger.sleep(gap)
        return False

    def body(self) -> None:
        while self._wait():
            self._last = time.monotonic()
            config = self.loop.config
            if not self.loop.is_leader or self.loop.paused or not any(n.endpoint for n in config.nodes.values()):
                continue
            try:
                log.info("%s", self.loop.bootstrap())
            except OrcastraError as e:
                log.error("%s", e)


class RebootScheduler(Watcher):
    """reboot.schedule: reboot nodes whose reboot-required sentinel is set, inside the window, one at a time.
    Waits on this thread; every write goes through the loop."""

    def __init__(self, loop: Loop) -> None:
        super().__init__("orcastra-reboots", loop.trigger)
        self.loop = loop

    def body(self) -> None:
        while self.trigger.sleep(self.loop.config.reboot.schedule.check_interval_seconds):
            config = self.loop.config
            if not config.reboot.schedule.enabled or not self.loop.is_leader or self.loop.paused:
                continue
            try:
                with make_engine(config, self.loop.env) as engine:
                    inventory = set(config.nodes) | set(config.reboot.node_commands)
                    writes = LoopWrites(self.loop, "scheduled reboot")
                    message = run_scheduled_reboot(engine, writes, config, inventory=inventory)
                if message:
                    log.info("scheduled reboot: %s", message)
            except OrcastraError as e:
                log.error("scheduled reboot: %s", e)


class CommandFileWatcher(Watcher):
    """Polls the command file; the leader takes and runs what it holds (followers leave it alone)."""

    def __init__(self, loop: Loop, runner: CommandRunner, name: str = "orcastra-commands") -> None:
        super().__init__(name, loop.trigger)
        self.loop = loop
        self.runner = runner
        self._watch = CommandWatcher(runner.command_file, self._changed)

    def _changed(self) -> None:
        if self.loop.is_leader:
            for result in self.runner.process_file():
                log.info("command %s: %s %s", result.command, result.result, result.message)

    def body(self) -> None:
        self._watch.run()

    def stop(self) -> None:
        super().stop()
        self._watch.stop()
