"""How the other threads reach the loop: the debounced "reconcile soon" trigger with the loop's request queue,
and the filter that recognises the events of Orcastra's own writes.

Every thread may ``fire`` the trigger or ``put`` a request; only the loop's thread takes them (``wait``,
``take_requests``). A request is a function the loop runs between cycles, with a future its caller waits on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from orcastra.adapters.engine import EngineEvent
from orcastra.domain.actions import SetNodeAvailability, UpdateNodeLabels, UpdateService
from orcastra.errors import OrcastraError
from orcastra.runtime.executor import Outcome


@dataclass
class Request:
    """Something to run on the loop's thread: ``fn``, named ``what`` (for logs), its result in ``future``."""

    fn: Callable[[], Any]
    what: str
    future: Future[Any] = field(default_factory=Future)


class Trigger:
    """A debounced "reconcile soon" flag and the loop's request queue, shared by every thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending_since: float | None = None
        self._reasons: list[str] = []
        self._requests: deque[Request] = deque()
        self.stopped = False

    def fire(self, reason: str) -> None:
        with self._cond:
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._reasons.append(reason)
            self._cond.notify_all()

    def put(self, request: Request) -> None:
        """Queue a request for the loop; refused (the future fails) once stopped."""
        with self._cond:
            if self.stopped:
                request.future.set_exception(OrcastraError("Orcastra is stopping"))
                return
            self._requests.append(request)
            self._cond.notify_all()

    def take_requests(self) -> list[Request]:
        with self._cond:
            out = list(self._requests)
            self._requests.clear()
            return out

    def stop(self) -> None:
        """Stop: wake every sleeper, and fail the requests nobody will run now (their callers stop waiting)."""
        with self._cond:
            self.stopped = True
            self._cond.notify_all()
            left = list(self._requests)
            self._requests.clear()
        for request in left:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(OrcastraError("Orcastra is stopping"))

    def sleep(self, seconds: float) -> bool:
        """Sleep, but wake up at once when stopped; True unless stopped."""
        with self._cond:
            end = time.monotonic() + seconds
            while not self.stopped:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
            return False

    def wait(self, timeout: float, debounce: float) -> list[str]:
        """Wait up to ``timeout`` for a trigger; then let ``debounce`` seconds of further triggers gather. Returns
        at once, with no reasons, when a request is queued (requests are not debounced; pending reasons stay
        pending and keep their debounce)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending_since is None and not self._requests and not self.stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            while not self.stopped and not self._requests and self._pending_since is not None:
                remaining = self._pending_since + debounce - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self.stopped or self._requests or self._pending_since is None:
                return []
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
        if isinstance(a, UpdateService):
            key = ("service", a.service_id)
        elif isinstance(a, UpdateNodeLabels | SetNodeAvailability):
            key = ("node", a.node_id)
        else:
            return  # Swarm labels and membership changes emit no event the loop listens to as an echo
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
