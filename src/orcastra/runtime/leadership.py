"""Leader election through a lease kept in the Swarm itself, so exactly one Orcastra acts at a time.

The lease is a service with 0 replicas (it runs nothing) whose labels name the holder. The holder renews it
every ``ttl/3`` by rewriting a label at the service's ``version``; a competing write at the same version is
rejected by the Swarm (optimistic concurrency), so two instances can never both believe they won.

Followers never compare wall clocks across machines: they watch the lease's ``version`` and, if it has not
changed for ``ttl`` seconds of their OWN monotonic clock, the holder is presumed dead and they take the lease
over (again at the observed version, so only one follower can win). A holder that cannot renew for ``ttl``
stops acting by itself. A holder that stops cleanly releases the lease, so a follower takes over at once.

Writes go through an executor like every other write, as quiet actions: the lease is Orcastra's own
bookkeeping, renewed every few seconds, so it is logged (a change of holder at INFO) and counted in
``orcastra_actions_total``, not audited (the audit log is the record of changes to the operator's Swarm). The
``LeaseKeeper`` thread is the one writer besides the loop's thread, and it writes only the lease: keeping the
lease must not wait behind a slow cycle, or a long cycle would cost the leadership (controller-runtime's
leader election runs beside its work queue for the same reason).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from orcastra.adapters.engine.api import EngineApi
from orcastra.domain.actions import Action, CreateService, UpdateService
from orcastra.domain.labels import LEASE_HOLDER_LABEL, LEASE_MARKER_LABEL, LEASE_RENEWED_LABEL
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.errors import OrcastraError
from orcastra.runtime.executor import Executor

log = logging.getLogger(__name__)

LEASE_IMAGE = "orcastra/lease:none"  # never pulled: the service has 0 replicas
DEFAULT_LEASE_NAME = "orcastra-leader"
DEFAULT_LEASE_TTL_SECONDS = 15.0
CONTROLLER = "leader-election"


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class LeaseState:
    is_leader: bool = False
    holder: str = ""
    last_renewed: float | None = None  # our monotonic time of our last successful write
    seen_version: int | None = None
    seen_at: float = 0.0


class LeaderLease:
    """One instance's view of the lease; call ``tick()`` every ``ttl/5`` or so. ``engine`` is used for reads,
    ``executor`` (bound to an Engine connection of the lease's own) for writes."""

    def __init__(  # noqa: PLR0913 - collaborators and both clocks, keyword-only, injected for tests
        self,
        engine: EngineApi,
        executor: Executor,
        *,
        name: str = DEFAULT_LEASE_NAME,
        holder: str | None = None,
        ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.name = name
        self.holder = holder or new_holder_id()
        self.ttl = ttl_seconds
        self._clock = clock
        self._wall = wall
        self.state = LeaseState()

    @property
    def is_leader(self) -> bool:
        s = self.state
        # Leadership expires on our own clock even if nobody tells us: a holder cut off from the managers
        # must stop acting before a follower's takeover can happen.
        return s.is_leader and s.last_renewed is not None and self._clock() - s.last_renewed < self.ttl

    def _labels(self, holder: str) -> MappingProxyType[str, str]:
        return MappingProxyType(
            {LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: holder, LEASE_RENEWED_LABEL: f"{self._wall():.3f}"}
        )

    def _write(self, svc: Service, holder: str, reason: str) -> str:
        """Set the holder at the version read: "ok", "conflict" (someone else wrote first) or "error"."""
        action = UpdateService(
            service_id=svc.id,
            service_name=svc.name,
            service_version=svc.version,
            set_labels=self._labels(holder),
            reason=reason,
            controller=CONTROLLER,
            quiet=True,
        )
        return self._apply(action, Snapshot((), (svc,), ()))

    def _apply(self, action: Action, snapshot: Snapshot) -> str:
        (outcome,) = self.executor.apply([action], snapshot)
        if outcome.result == "conflict":
            log.info("leader lease %s: another instance wrote first; following", self.name)
            return "conflict"
        if outcome.result == "error":
            log.warning("leader lease %s: %s", self.name, outcome.detail)
            return "error"
        return "ok"

    def tick(self) -> bool:
        """Acquire, renew or watch the lease; returns whether this instance is the leader now."""
        now = self._clock()
        s = self.state
        try:
            svc = self.engine.find_service(self.name)
        except OrcastraError as e:
            log.warning("leader lease %s: %s", self.name, e)
            return self.is_leader
        if svc is None:
            created = CreateService(
                self.name, self._labels(self.holder), LEASE_IMAGE, "no lease yet", CONTROLLER, quiet=True
            )
            if self._apply(created, Snapshot((), (), ())) == "ok":
                s.is_leader, s.last_renewed, s.holder = True, now, self.holder
                log.info("leader lease %s created: this instance (%s) is the leader", self.name, self.holder)
            return self.is_leader
        holder = svc.labels.get(LEASE_HOLDER_LABEL, "")
        s.holder = holder
        if svc.version != s.seen_version:
            s.seen_version, s.seen_at = svc.version, now
        if holder == self.holder:
            # ttl/4: the keeper ticks every ttl/3, so a tick a little early still renews.
            if s.last_renewed is None or now - s.last_renewed >= self.ttl / 4:
                result = self._write(svc, self.holder, "renew")
                if result == "ok":
                    s.last_renewed = now
                # A conflict: someone else wrote the lease since we read it; the next tick sees who holds it.
                # An error: keep what we had; leadership expires by itself after ttl without a renewal.
                s.is_leader = result != "conflict" and s.last_renewed is not None
            else:
                s.is_leader = True
            return self.is_leader
        if s.is_leader:
            log.warning("leader lease %s now held by %s: this instance is a follower", self.name, holder)
        s.is_leader = False
        if not holder or now - s.seen_at >= self.ttl:
            # Released, or the holder has not renewed for a whole ttl on our clock: take over at the version
            # we saw; if another follower wins that race our write is a conflict.
            why = "released" if not holder else f"{holder} did not renew for {self.ttl:g} s"
            if self._write(svc, self.holder, f"take over the lease ({why})") == "ok":
                s.is_leader, s.last_renewed, s.holder = True, now, self.holder
                log.info("leader lease %s taken over from %r: this instance is the leader", self.name, holder)
        return self.is_leader

    def release(self) -> None:
        """Give the lease up (clean stop) so a follower takes over without waiting for the ttl."""
        if not self.state.is_leader:
            return
        self.state.is_leader = False
        try:
            svc = self.engine.find_service(self.name)
        except OrcastraError as e:
            log.warning("leader lease %s: could not release: %s", self.name, e)
            return
        mine = svc is not None and svc.labels.get(LEASE_HOLDER_LABEL) == self.holder
        if svc is not None and mine and self._write(svc, "", "release") == "ok":
            log.info("leader lease %s released", self.name)


class LeaseKeeper(threading.Thread):
    """Owns the lease: ticks it (every ttl/3 as the leader, ttl/5 as a follower) and reports every change of
    role through ``on_change``. Writes only the lease service (see the module docstring)."""

    def __init__(
        self,
        lease: LeaderLease,
        on_change: Callable[[bool], None],
        sleep: Callable[[float], bool],
        *,
        on_crash: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="orcastra-lease", daemon=True)
        self.lease = lease
        self._on_change = on_change
        self._sleep = sleep  # returns False once the runtime is stopping
        self._on_crash = on_crash
        self.was_leader: bool | None = None  # unknown until the first tick, which always reports the role

    def run(self) -> None:
        try:
            while True:
                try:
                    leader = self.check()
                except Exception:  # never die silently: a dead keeper would let the lease lapse unnoticed
                    log.exception("leader lease %s: tick failed; trying again", self.lease.name)
                    if self._on_crash is not None:
                        self._on_crash(self.name)
                    leader = self.lease.is_leader
                # A follower looks often, to take over soon after a lease expires; the leader only needs to
                # renew, every third of the ttl (each look is a list call, each renewal a read and a write).
                if not self._sleep(max(0.2, self.lease.ttl / (3 if leader else 5))):
                    return
        finally:
            self.lease.release()
            self.lease.engine.close()

    def check(self) -> bool:
        leader = self.lease.tick()
        if leader != self.was_leader:
            self.was_leader = leader
            self._on_change(leader)
        return leader
