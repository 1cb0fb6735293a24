"""Leader election through a lease kept in the Swarm itself, so exactly one Orcastra acts at a time.

The lease is a service with 0 replicas (it runs nothing) whose labels name the holder. The holder renews it
every ``ttl/3`` by rewriting a label at the service's ``version``; a competing write at the same version is
rejected by the Swarm (optimistic concurrency), so two instances can never both believe they won.

Followers never compare wall clocks across machines: they watch the lease's ``version`` and, if it has not
changed for ``ttl`` seconds of their OWN monotonic clock, the holder is presumed dead and they take the lease
over (again at the observed version, so only one follower can win). A holder that cannot renew for ``ttl``
stops acting by itself. A holder that stops cleanly releases the lease, so a follower takes over at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from orcastra.adapters.engine import EngineAdapter
from orcastra.errors import EngineConflictError, OrcastraError

log = logging.getLogger(__name__)

LEASE_HOLDER_LABEL = "orcastra.lease.holder"
LEASE_RENEWED_LABEL = "orcastra.lease.renewed"
LEASE_MARKER_LABEL = "orcastra.lease"
LEASE_IMAGE = "orcastra/lease:none"  # never pulled: the service has 0 replicas
DEFAULT_LEASE_NAME = "orcastra-leader"
DEFAULT_LEASE_TTL_SECONDS = 15.0


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
    """One instance's view of the lease; call ``tick()`` every ``ttl/5`` or so."""

    def __init__(
        self,
        engine: EngineAdapter,
        *,
        name: str = DEFAULT_LEASE_NAME,
        holder: str | None = None,
        ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
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

    def _labels(self, holder: str) -> dict[str, str]:
        return {LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: holder, LEASE_RENEWED_LABEL: f"{self._wall():.3f}"}

    def tick(self) -> bool:
        """Acquire, renew or watch the lease; returns whether this instance is the leader now."""
        now = self._clock()
        s = self.state
        try:
            svc = self.engine.find_service(self.name)
            if svc is None:
                self.engine.create_placeholder_service(self.name, self._labels(self.holder), LEASE_IMAGE)
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
                    self.engine.update_service(svc, set_labels=self._labels(self.holder))
                    s.last_renewed = now
                s.is_leader = True
                return self.is_leader
            if s.is_leader:
                log.warning("leader lease %s now held by %s: this instance is a follower", self.name, holder)
            s.is_leader = False
            if not holder or now - s.seen_at >= self.ttl:
                # Released, or the holder has not renewed for a whole ttl on our clock: take over at the
                # version we saw; if another follower wins that race our write is a conflict.
                self.engine.update_service(svc, set_labels=self._labels(self.holder))
                s.is_leader, s.last_renewed, s.holder = True, now, self.holder
                log.info("leader lease %s taken over from %r: this instance is the leader", self.name, holder)
        except EngineConflictError:
            s.is_leader = False
            log.info("leader lease %s: another instance wrote first; following", self.name)
        except OrcastraError as e:
            log.warning("leader lease %s: %s", self.name, e)
        return self.is_leader

    def release(self) -> None:
        """Give the lease up (clean stop) so a follower takes over without waiting for the ttl."""
        if not self.state.is_leader:
            return
        self.state.is_leader = False
        try:
            svc = self.engine.find_service(self.name)
            if svc is not None and svc.labels.get(LEASE_HOLDER_LABEL) == self.holder:
                self.engine.update_service(svc, set_labels=self._labels(""))
                log.info("leader lease %s released", self.name)
        except OrcastraError as e:
            log.warning("leader lease %s: could not release: %s", self.name, e)
