"""The loop: the one thread that changes the Swarm and Orcastra's own state.

Everything that writes runs here, one thing at a time: reconcile cycles (snapshot -> plans -> executor),
rebalancing steps, and the requests other threads put on the loop's queue (commands from the command file and
the API, the writes of a reboot and of a bootstrap cycle). A request waits while a cycle runs and a cycle waits
while a request runs, so two writers never overlap (controller-runtime's work queue: a reconciler never runs
twice at once). Other threads only ``fire`` the trigger, ``call`` (put a request and wait for its result) or
``post`` (put a request and go on), and read what the loop publishes (``config``, ``paused``,
``last_result``): immutable values, replaced whole.

The loop waits for a trigger (events, the task poll, a memory reading, the resync, a planner's wake-up time,
a config file change), debounces it, and runs a cycle. A failed cycle is tried again after the delay its error
asks for (``TemporaryError.retry_after_seconds``), growing while the same failure repeats; requests are served
meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from orcastra.adapters.engine.api import EngineApi
from orcastra.adapters.engine.connect import make_engine
from orcastra.commands.watch import FileStamp
from orcastra.config import Config, load_config
from orcastra.config.legacy import legacy_file_paths
from orcastra.domain.actions import Action
from orcastra.domain.labels import PAUSED_LABEL
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.usage import MemoryView
from orcastra.errors import ConfigError, OrcastraError, TemporaryError
from orcastra.features.colocation.plan import group_statuses
from orcastra.runtime.bootstrap import run_bootstrap
from orcastra.runtime.controllers import Controller
from orcastra.runtime.executor import Executor, Outcome
from orcastra.runtime.observe import HealthState, Metrics
from orcastra.runtime.rebalancer import Rebalancer, plan_now
from orcastra.runtime.reboot import reboot_node
from orcastra.runtime.reconcile import CycleResult, run_cycle
from orcastra.runtime.swarm_labels import SwarmLabelWriteError, compare_and_set
from orcastra.runtime.triggers import Request, Trigger

log = logging.getLogger(__name__)

ConfigStamp = tuple[FileStamp | None, ...]

T = TypeVar("T")

CONFIG_POLL_INTERVAL_SECONDS = 1.0
# A cycle that failed with an error that is not temporary (a bug, a permanent Engine refusal) is tried again
# after this; a temporary error's own delay is the start, doubled while the failure repeats, up to the cap.
PERMANENT_ERROR_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 60.0
MIN_RETRY_SECONDS = 0.5


def retry_delay(error: BaseException, consecutive: int) -> float:
    """How long to wait before the next try after ``consecutive`` earlier failures in a row (0 for the first)."""
    if isinstance(error, TemporaryError):
        base = max(MIN_RETRY_SECONDS, error.retry_after_seconds)
    else:
        base = PERMANENT_ERROR_RETRY_SECONDS
    return min(MAX_RETRY_SECONDS, base * float(2 ** min(consecutive, 8)))


@dataclass
class _Timers:
    """The loop's own clocks (monotonic): the next resync, and the retry of a failed cycle."""

    next_resync: float
    retry_at: float | None = None
    errors: int = 0  # failed cycles in a row

    def timeout(self, polling: bool, wake_at: float | None) -> float:
        """How long the loop may wait for a trigger before something of its own is due."""
        timeout = CONFIG_POLL_INTERVAL_SECONDS
        if polling:
            timeout = min(timeout, self.next_resync - time.monotonic())
        if wake_at is not None:
            timeout = min(timeout, wake_at - time.time())
        if self.retry_at is not None:
            timeout = min(timeout, self.retry_at - time.monotonic())
        return max(0.0, timeout)

    def due(self, polling: bool, resync_interval: float) -> list[str]:
        """The reasons that are due now; the retry of a failed cycle clears once due."""
        now = time.monotonic()
        reasons = []
        if polling and now >= self.next_resync:
            reasons.append("resync")
            self.next_resync = now + resync_interval
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            reasons.append("retry after error")
        return reasons

    def failed(self, delay: float) -> None:
        self.errors += 1
        self.retry_at = time.monotonic() + delay


class LoopWrites:
    """An executor for the other threads: it hands each batch of actions to the loop and waits for the
    outcomes, so a reboot or a bootstrap cycle on its own thread still writes only through the loop."""

    def __init__(self, loop: Loop, what: str) -> None:
        self._loop = loop
        self._what = what

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        return self._loop.call(lambda: self._loop.executor.apply(actions, snapshot), self._what)


class Loop:
    """Owns the Swarm writes and the runtime's state (config, paused flag, last cycle, rebalancing state);
    runs on the thread that calls ``run`` (the main thread in ``orcastra run``)."""

    def __init__(  # noqa: PLR0913 - the loop's collaborators, keyword-only, injected by the daemon and by tests
        self,
        *,
        config: Config,
        config_path: Path | None,
        env: Mapping[str, str],
        engine: EngineApi,
        executor: Executor,
        controllers: Sequence[Controller],
        metrics: Metrics,
        health: HealthState,
        trigger: Trigger,
        leadership: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.env = env
        self.engine = engine
        self.executor = executor
        self.controllers = list(controllers)
        self.metrics = metrics
        self.health = health
        self.trigger = trigger
        self._leadership = leadership
        self._config_stamp: ConfigStamp | None = self._stamp()
        self._ident: int | None = None  # the loop's thread, from ``attach`` on
        self.paused = False
        self.cycles = 0
        self.last_result: CycleResult | None = None
        self.wake_at: float | None = None  # epoch seconds a planner asked to be run again (a backoff ends)
        self.after_cycle: list[Callable[[CycleResult], None]] = []
        self.rebalancer = Rebalancer()
        self._memory_lock = threading.Lock()
        self._new_memory: MemoryView | None = None
        self._hangup = False

    # --- what other threads may call ------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leadership()

    def attach(self) -> None:
        """Make the calling thread the loop's thread, before any other thread starts: from now on ``call`` and
        ``post`` from other threads queue their requests until ``run`` serves them. Until then (start-up,
        ``run --once``) there is one thread, and they run their function at once."""
        self._ident = threading.get_ident()

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on the loop's thread and return its result (or raise its error); see ``attach``."""
        if self.trigger.stopped:
            raise OrcastraError("Orcastra is stopping")
        if self._ident is None or self._ident == threading.get_ident():
            return fn()
        request = Request(fn, what)
        self.trigger.put(request)
        result: T = request.future.result()
        return result

    def post(self, fn: Callable[[], object], what: str) -> None:
        """Like ``call``, without waiting for the result: nobody reads it, so an error is logged here."""

        def logged() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s failed", what)

        if self._ident is None or self._ident == threading.get_ident():
            logged()
            return
        self.trigger.put(Request(logged, what))

    def memory_read(self, view: MemoryView) -> None:
        """A new memory reading (from the memory watcher's thread); the next cycle plans with it."""
        with self._memory_lock:
            self._new_memory = view
        self.trigger.fire("memory read")

    def leadership_changed(self, leader: bool) -> None:
        """The lease keeper's report (from its thread): handled on the loop, without making the keeper wait."""
        self.post(lambda: self._on_leadership(leader), "leadership change")
        if leader:
            self.trigger.fire("became leader")

    def hangup(self) -> None:
        """SIGHUP: re-read the configuration now (even unchanged files) and run a bootstrap/heal cycle. Only
        sets a flag (it may run inside a signal handler); the loop does the work."""
        self._hangup = True
        self.trigger.fire("SIGHUP")

    def latest_snapshot(self) -> Snapshot | None:
        result = self.last_result
        return result.snapshot if result is not None else None

    # --- the loop's own work (its thread only) ----------------------------------------------------------------

    def _on_leadership(self, leader: bool) -> None:
        self.metrics.set_leader(leader)
        self.health.set_role("leader" if leader else "follower")
        log.info("this instance is now the %s", "leader" if leader else "follower")
        if leader:
            self.load_paused()

    def read_swarm(self) -> Snapshot:
        return self.engine.snapshot()

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        return self.executor.apply(actions, snapshot)

    def load_paused(self) -> None:
        """The pause flag is a label of the Swarm: shared by every instance, kept across restarts."""
        try:
            self.paused = self.engine.swarm_labels().get(PAUSED_LABEL) == "true"
        except OrcastraError as e:
            log.warning("could not read the paused flag from the Swarm: %s", e)
        if self.paused:
            log.warning("Orcastra is paused (Swarm label %s): planning only until `resume`", PAUSED_LABEL)

    def set_paused(self, paused: bool) -> None:
        """Write the pause flag (a compare-and-set on the Swarm's labels, re-read on a conflict)."""
        try:
            result = compare_and_set(
                self.engine,
                self.executor,
                {PAUSED_LABEL: "true" if paused else None},
                reason=f"operator command: {'pause' if paused else 'resume'}",
                controller="command",
            )
        except SwarmLabelWriteError as e:
            raise OrcastraError(f"could not write the pause flag: {e}") from e
        if result == "conflict":
            raise OrcastraError("could not write the pause flag: the Swarm kept changing (version conflicts)")
        self.paused = paused
        log.warning("Orcastra %s by operator command", "paused" if paused else "resumed")
        if not paused:
            self.trigger.fire("resumed")

    def _stamp(self) -> ConfigStamp:
        """The stamps of the main config file and of every legacy file the loader would read (each None when
        absent): a change of any of them, a legacy file appearing or going away included, reloads."""
        paths = (*([self.config_path] if self.config_path is not None else []), *legacy_file_paths(self.env))
        return tuple(FileStamp.of(p) for p in paths)

    def reload_config_if_changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        try:
            new = load_config(self.config_path, self.env, required=True)
        except ConfigError as e:
            log.error("config changed but is invalid; keeping the previous one:\n%s", e)
            return False
        except Exception:  # load_config raises only ConfigError; a bug must still never stop the loop
            log.exception("config changed but could not be read; keeping the previous one")
            return False
        if new.fingerprint() == self.config.fingerprint():
            return False
        log.info("configuration reloaded from %s", self.config_path or "the legacy files and the environment")
        self.config = new
        return True

    def run_cycle(self) -> CycleResult:
        """One cycle, acting only as the leader and when not paused (else planning only)."""
        leader = self.is_leader
        acting = leader and not self.paused
        result = run_cycle(self.engine, self.executor if acting else None, self.config, self.controllers)
        self.cycles += 1
        self.last_result = result
        self.wake_at = result.plan.wake_at
        now = time.time()
        self.metrics.observe_cycle(result.seconds, result.engine_calls, not result.failed, now)
        groups = group_statuses(result.plan)
        self.metrics.set_anchor_status((g.anchor, g.colocated, g.restart_attempts, g.next_restart_at) for g in groups)
        for hook in self.after_cycle:
            hook(result)
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
        return result

    def rebalance_step(self, result: CycleResult) -> None:
        """Count the moves this cycle saw finish and, with a new memory reading, plan new moves (leader only).
        Moves in flight are followed by the Pins controller, in the cycle itself (level-based: any leader)."""
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

    def rebalance_now(self) -> tuple[str, list[Outcome]]:
        """The `rebalance` command: read memory now and run one rebalancing cycle (cooldowns honoured; the
        sustained period is not waited for, the operator asked). Returns why nothing moved, or the outcomes."""
        snapshot = self.engine.snapshot()
        step = plan_now(self.config, snapshot, time.time())
        if not step.started:
            reasons = "; ".join(f"{f.subject}: {f.message}" for f in step.plan.findings[:5])
            return "no move: " + (reasons or "no node is above high"), []
        return "", self.executor.apply(list(step.actions), snapshot)

    # --- work that runs on the caller's thread and writes through the loop -----------------------------------

    def bootstrap(self) -> str:
        """One bootstrap/heal cycle: observed here (unreachable nodes take their timeout on this thread),
        applied by the loop."""
        return run_bootstrap(self.config, LoopWrites(self, "bootstrap")).summary()

    def reboot(self, node: str) -> str:
        """Drain, reboot, wait Ready, activate: minutes of waiting on this thread; every write on the loop."""
        with make_engine(self.config, self.env) as engine:
            return reboot_node(engine, LoopWrites(self, f"reboot {node}"), self.config, node)

    # --- the loop itself -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve requests and run cycles until the trigger is stopped (on the attached thread)."""
        self.attach()
        self.trigger.fire("start")
        timers = _Timers(next_resync=time.monotonic() + self.config.reconcile.resync_interval_seconds)
        try:
            while not self.trigger.stopped:
                rc = self.config.reconcile
                reasons = self.trigger.wait(timers.timeout(rc.polling_mode, self.wake_at), rc.debounce_seconds)
                if self.trigger.stopped:
                    break
                self._serve_requests()
                if self._hangup:
                    self._on_hangup()
                if self.reload_config_if_changed():
                    reasons.append("config changed")
                if self.wake_at is not None and time.time() >= self.wake_at:
                    self.wake_at = None
                    reasons.append("backoff due")
                reasons += timers.due(rc.polling_mode, self.config.reconcile.resync_interval_seconds)
                if timers.retry_at is not None or not reasons:
                    continue  # nothing to do, or waiting out an error's delay (requests are still served)
                log.debug("cycle triggered by: %s", ", ".join(sorted(set(reasons))))
                try:
                    self.run_cycle()
                    timers.errors = 0
                except Exception as e:  # a failed cycle (or a bug) must never end the loop
                    delay = retry_delay(e, timers.errors)
                    self._cycle_failed(e, delay)
                    timers.failed(delay)
        finally:
            self.trigger.stop()

    def _on_hangup(self) -> None:
        """Re-read the config (forgetting the file's stamp) and start a bootstrap cycle on a thread of its own:
        it observes every inventory node, which may take a while, and hands its writes to this loop."""
        self._hangup = False
        log.info("SIGHUP: reloading the configuration and running a bootstrap cycle")
        self._config_stamp = None

        def bootstrap() -> None:
            try:
                log.info("%s", self.bootstrap())
            except OrcastraError as e:
                log.error("%s", e)
            except Exception:
                log.exception("bootstrap after SIGHUP failed")

        threading.Thread(target=bootstrap, name="orcastra-sighup-bootstrap", daemon=True).start()

    def _cycle_failed(self, error: Exception, delay: float) -> None:
        if isinstance(error, OrcastraError):
            log.error("cycle failed: %s (retrying in %.1f s)", error, delay)
        else:
            log.exception("cycle failed with an internal error (retrying in %.1f s)", delay)
        now = time.time()
        self.health.cycle_failed(now, str(error))
        self.metrics.observe_cycle(0.0, 0, False, now)
        self.engine.close()

    def _serve_requests(self) -> None:
        for request in self.trigger.take_requests():
            if not request.future.set_running_or_notify_cancel():
                continue
            try:
                request.future.set_result(request.fn())
            except Exception as e:  # the caller gets the error; the loop goes on
                if not isinstance(e, OrcastraError):
                    log.exception("request %s failed with an internal error", request.what)
                request.future.set_exception(e)
