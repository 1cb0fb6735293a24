"""The leader's side of the command channel kept in the Swarm (``orcastra.commands.swarm_queue``), and the API's
forwarding of a follower's commands into it.

``CommandQueue.serve`` lists the requests (one filtered ``GET /configs``, whatever their number), applies the
pure plan (interrupted, expired, past retention), claims the oldest pending request by a label write at its
version, runs it through the ``CommandRunner`` (journaled like the file's and the API's; every write on the
loop's thread) and writes its result. Every label write and removal is an action given to ``writes`` (the
loop's executor, through ``LoopWrites``): a dry run changes nothing, so it claims nothing and runs nothing.

``SwarmCommandWatcher`` is the thread that owns this: it polls every ``POLL_INTERVAL_SECONDS`` while this
instance is the leader (followers only sleep), on an Engine connection of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orcastra.adapters.engine.api import EngineApi
from orcastra.adapters.engine.connect import make_engine
from orcastra.commands.dispatch import CommandResult
from orcastra.commands.model import Command, Malformed
from orcastra.commands.swarm_queue import (
    REQUEST_FILTER,
    SEND_POLL_SECONDS,
    claim_action,
    decode_request,
    describe_request,
    finish_action,
    plan_queue,
    result_labels,
    send_command,
)
from orcastra.domain.configs import SwarmConfig
from orcastra.domain.labels import COMMAND_HOLDER_LABEL
from orcastra.domain.snapshot import Snapshot
from orcastra.errors import OrcastraError
from orcastra.runtime.executor import Executor
from orcastra.runtime.loop import Loop, LoopWrites
from orcastra.runtime.watchers import Watcher

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 1.0
FINISH_ATTEMPTS = 5
# A follower's API request waits this long for the leader's result (a reboot takes minutes).
FORWARD_TIMEOUT_SECONDS = 3600.0
_NO_OBJECTS = Snapshot((), (), ())

Submit = Callable[[Command], CommandResult]


class CommandQueue:
    """Serves the Swarm's command requests as ``holder`` (the leader lease's holder id)."""

    def __init__(  # noqa: PLR0913 - collaborators, then keyword-only clock and stop flag injected for tests
        self,
        engine: EngineApi,
        writes: Executor,
        submit: Submit,
        holder: str,
        *,
        clock: Callable[[], float] = time.time,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.writes = writes
        self.submit = submit
        self.holder = holder
        self._clock = clock
        self._stopping = stopping

    def serve(self, limit: int = 100) -> list[CommandResult]:
        """Run pending requests, oldest first, until none is left (at most ``limit``); their results."""
        results: list[CommandResult] = []
        for _ in range(limit):
            result = self.serve_once()
            if result is None:
                break
            results.append(result)
        return results

    def serve_once(self) -> CommandResult | None:
        """One listing: housekeeping, then claim and run the oldest pending request. None when nothing ran."""
        plan = plan_queue(self.engine.list_configs(REQUEST_FILTER), self.holder, self._clock())
        if plan.actions:
            self.writes.apply(plan.actions, _NO_OBJECTS)
        config = plan.claim
        if config is None or self._stopping():
            return None  # a stopping instance takes nothing: the request waits for the next leader
        (claimed,) = self.writes.apply([claim_action(config, self.holder)], _NO_OBJECTS)
        if claimed.result != "ok":
            # A conflict: another leader took it (or it changed); a dry run: nothing is claimed, nothing runs.
            log.info("command request %s not taken: %s %s", config.name, claimed.result, claimed.detail)
            return None
        cmd = decode_request(config.data)
        if isinstance(cmd, Malformed):
            log.warning("command request %s is malformed: %s", config.name, cmd.message)
            result = CommandResult(describe_request(config.data), "error", f"malformed request: {cmd.message}")
        else:
            result = self.submit(cmd)
        self._finish(config, result)
        return result

    def _finish(self, config: SwarmConfig, result: CommandResult) -> None:
        """Write the result at the request's current version (re-read on a conflict), as long as this holder
        still holds it; a new leader that marked it interrupted meanwhile gets the real result over that."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                found = [c for c in self.engine.list_configs({"id": [config.id]}) if c.id == config.id]
            except OrcastraError as e:
                log.warning("command request %s: could not read it to record its result: %s", config.name, e)
                time.sleep(0.2 * (attempt + 1))
                continue
            if not found or found[0].labels.get(COMMAND_HOLDER_LABEL) != self.holder:
                log.warning("command request %s: gone or taken over; its result stays in the journal", config.name)
                return
            labels = result_labels(result, self._clock())
            (outcome,) = self.writes.apply([finish_action(found[0], labels, "command finished")], _NO_OBJECTS)
            if outcome.result in ("ok", "dry-run"):
                return
        log.error(
            "command request %s: its result could not be recorded (a later pass marks it interrupted)", config.name
        )


class SwarmCommandWatcher(Watcher):
    """Owns the serving of the Swarm's command requests: the leader polls them; a follower only sleeps."""

    def __init__(self, loop: Loop, submit: Submit, holder: str) -> None:
        super().__init__("orcastra-swarm-commands", loop.trigger)
        self.loop = loop
        self._submit = submit
        self._holder = holder
        # A stop drains first (``drain``): no new claim, and the loop keeps serving until the request in hand
        # has its result (``idle``). Else a request claimed just before the stop would be left "running" and
        # the next leader would mark it interrupted: not run at all (seen in a rolling update on the lab).
        self.draining = threading.Event()
        self.idle = threading.Event()
        self.idle.set()

    def drain(self, timeout: float) -> bool:
        """Take no new request; wait until the one in hand (if any) is finished. True when idle in time."""
        self.draining.set()
        return self.idle.wait(timeout)

    def body(self) -> None:
        engine = make_engine(self.loop.config, self.loop.env)
        self.closing(engine.close)
        queue = CommandQueue(
            engine,
            LoopWrites(self.loop, "command request"),
            self._submit,
            self._holder,
            stopping=lambda: self.draining.is_set() or self.trigger.stopped,
        )
        try:
            while self.trigger.sleep(POLL_INTERVAL_SECONDS):
                if not self.loop.is_leader or self.draining.is_set():
                    continue
                self.idle.clear()
                try:
                    for result in queue.serve():
                        log.info("command %s (from the Swarm): %s %s", result.command, result.result, result.message)
                except OrcastraError as e:
                    log.debug("command requests: %s", e)
                    engine.close()
                finally:
                    self.idle.set()
        finally:
            self.idle.set()
            engine.close()


def forwarding_submit(
    is_leader: Callable[[], bool],
    submit: Submit,
    engine_factory: Callable[[], EngineApi],
    timeout: float = FORWARD_TIMEOUT_SECONDS,
    poll: float = SEND_POLL_SECONDS,
) -> Submit:
    """The API's submit: the leader runs the command itself; a follower puts it in the Swarm and waits for the
    leader's result, so a command posted to any replica runs (once)."""

    def run(cmd: Command) -> CommandResult:
        if is_leader():
            return submit(cmd)
        try:
            with engine_factory() as engine:
                return send_command(engine, cmd, timeout=timeout, poll=poll)
        except OrcastraError as e:
            return CommandResult(str(cmd), "error", f"this instance is a follower and could not reach the leader: {e}")

    return run


def engine_factory(loop: Loop) -> Callable[[], EngineApi]:
    def make() -> EngineApi:
        return make_engine(loop.config, loop.env)

    return make
