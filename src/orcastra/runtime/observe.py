"""Observability for ``orcastra run``: Prometheus metrics, a health state, and their two HTTP routes.

``Metrics`` owns its own ``CollectorRegistry`` (never the process-wide default), so tests and several
instances in one process do not collide. ``HealthState`` is what ``GET /healthz`` reports; a load balancer
or an orchestrator probe reads its status code. ``status_routes`` gives both to the HTTP listener
(``orcastra.adapters.http.ApiServer``).

The daemon feeds ``Metrics`` and ``HealthState`` after each cycle; the server threads only read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orcastra import __version__
from orcastra.adapters.http import Request, Response, Route, json_response
from orcastra.errors import cut

log = logging.getLogger(__name__)

# A cycle is a handful of list calls plus a few updates: milliseconds normally, seconds when the Engine is slow.
CYCLE_DURATION_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Role = Literal["leader", "follower", "starting"]
ROLES: tuple[Role, ...] = ("leader", "follower", "starting")


# --- metrics -----------------------------------------------------------------------------------------


class Metrics:
    """Orcastra's Prometheus metrics, on a registry of their own."""

    content_type: str = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._define_cycle_metrics(self.registry)
        self._define_anchor_metrics(self.registry)
        self._define_rebalance_metrics(self.registry)
        build_info = Gauge(
            "orcastra_build_info", "Orcastra build information; always 1.", ["version"], registry=self.registry
        )
        build_info.labels(version=__version__).set(1)
        # set_anchor_status replaces the whole anchor set; the lock keeps "which anchors are exported" consistent.
        self._anchor_lock = threading.Lock()
        self._anchors: set[str] = set()
        self._nodes: set[str] = set()
        self._agent_up = Gauge(
            "orcastra_agent_up",
            "1 when the node's agent answered the controller's last request for its report, else 0.",
            ["node"],
            registry=self.registry,
        )
        self._agent_nodes: set[str] = set()

    def _define_cycle_metrics(self, r: CollectorRegistry) -> None:
        # prometheus_client appends "_total" to counter names itself.
        self._cycles = Counter("orcastra_cycles", "Reconcile cycles, by result (ok | failed).", ["result"], registry=r)
        # Export both results from the start: rate() and alerts on "failed" need the series to exist at 0.
        for result in ("ok", "failed"):
            self._cycles.labels(result=result)
        self._actions = Counter(
            "orcastra_actions",
            "Actions handled by the executor, by kind and result (ok | dry-run | conflict | error | skipped).",
            ["kind", "result"],
            registry=r,
        )
        self._cycle_duration = Histogram(
            "orcastra_cycle_duration_seconds",
            "Wall time of one reconcile cycle.",
            buckets=CYCLE_DURATION_BUCKETS_SECONDS,
            registry=r,
        )
        self._engine_calls = Counter("orcastra_engine_calls", "Docker Engine API calls made by cycles.", registry=r)
        self._cycle_engine_calls = Gauge(
            "orcastra_cycle_engine_calls", "Docker Engine API calls made by the last cycle.", registry=r
        )
        self._leader = Gauge("orcastra_leader", "1 when this instance is the active leader, else 0.", registry=r)
        self._thread_restarts = Counter(
            "orcastra_thread_restarts",
            "Background threads (watchers, the lease keeper) that failed and were started again, by thread.",
            ["thread"],
            registry=r,
        )
        self._last_good_cycle = Gauge(
            "orcastra_last_good_cycle_timestamp_seconds",
            "When the last successful cycle finished (Unix time).",
            registry=r,
        )

    def _define_anchor_metrics(self, r: CollectorRegistry) -> None:
        self._anchor_colocated = Gauge(
            "orcastra_anchor_colocated",
            "1 when the anchor's dependents run on its node, else 0.",
            ["anchor"],
            registry=r,
        )
        self._anchor_restart_attempts = Gauge(
            "orcastra_anchor_restart_attempts",
            "Restart attempts made for the anchor's dependents.",
            ["anchor"],
            registry=r,
        )
        self._anchor_next_restart = Gauge(
            "orcastra_anchor_next_restart_timestamp_seconds",
            "When the next restart of the anchor's dependents is due (Unix time), 0 when none is planned.",
            ["anchor"],
            registry=r,
        )

    def _define_rebalance_metrics(self, r: CollectorRegistry) -> None:
        self._moves = Counter(
            "orcastra_rebalance_moves",
            "Rebalancing moves, by result (planned | ok | rolled-back).",
            ["result"],
            registry=r,
        )
        for result in ("planned", "ok", "rolled-back"):
            self._moves.labels(result=result)
        self._node_memory = Gauge(
            "orcastra_node_memory_used_ratio",
            "Node memory in use (0..1) as the rebalancer read it.",
            ["node"],
            registry=r,
        )

    def observe_cycle(self, seconds: float, engine_calls: int, ok: bool, now: float) -> None:
        """Record one finished cycle: its duration, its Engine calls, its result; ``now`` is Unix time."""
        if engine_calls < 0:
            raise ValueError(f"engine_calls must be >= 0, got {engine_calls}")
        self._cycles.labels(result="ok" if ok else "failed").inc()
        self._cycle_duration.observe(seconds)
        self._engine_calls.inc(engine_calls)
        self._cycle_engine_calls.set(engine_calls)
        if ok:
            self._last_good_cycle.set(now)

    def observe_action(self, kind: str, result: str) -> None:
        """Count one action outcome, e.g. ``("update-service", "conflict")``."""
        self._actions.labels(kind=kind, result=result).inc()

    def set_anchor_status(self, statuses: Iterable[tuple[str, bool, int, float | None]]) -> None:
        """Export each anchor's (name, colocated, restart attempts, next restart time or None).

        Anchors missing from ``statuses`` lose their series, so a removed anchor does not linger at its last value.
        """
        with self._anchor_lock:
            seen: set[str] = set()
            for anchor, colocated, attempts, next_restart_at in statuses:
                seen.add(anchor)
                self._anchor_colocated.labels(anchor=anchor).set(1 if colocated else 0)
                self._anchor_restart_attempts.labels(anchor=anchor).set(attempts)
                self._anchor_next_restart.labels(anchor=anchor).set(next_restart_at or 0)
            for gone in self._anchors - seen:
                for gauge in (self._anchor_colocated, self._anchor_restart_attempts, self._anchor_next_restart):
                    gauge.remove(gone)
            self._anchors = seen

    def observe_move(self, result: str) -> None:
        """Count one rebalancing move: planned, then ok or rolled-back."""
        self._moves.labels(result=result).inc()

    def set_node_memory(self, used_ratio: Mapping[str, float]) -> None:
        """Export each node's memory use (0..1); nodes no longer reported lose their series."""
        with self._anchor_lock:
            for node, ratio in used_ratio.items():
                self._node_memory.labels(node=node).set(ratio)
            for gone in self._nodes - used_ratio.keys():
                self._node_memory.remove(gone)
            self._nodes = set(used_ratio)

    def set_agent_up(self, up: Mapping[str, bool]) -> None:
        """Export each node's agent (up or not); nodes no longer listed lose their series."""
        with self._anchor_lock:
            for node, ok in up.items():
                self._agent_up.labels(node=node).set(1 if ok else 0)
            for gone in self._agent_nodes - up.keys():
                self._agent_up.remove(gone)
            self._agent_nodes = set(up)

    def observe_thread_restart(self, thread: str) -> None:
        self._thread_restarts.labels(thread=thread).inc()

    def set_leader(self, is_leader: bool) -> None:
        self._leader.set(1 if is_leader else 0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


# --- health ------------------------------------------------------------------------------------------


class HealthState:
    """What ``/healthz`` reports. Written by the daemon loop, read by server threads, hence the lock.

    A follower is healthy by definition (it has nothing to reconcile). A leader is healthy while its last good
    cycle is younger than ``stale_after_seconds``. "starting" is degraded until the first role is known.
    """

    def __init__(self, stale_after_seconds: float, role: Role = "starting") -> None:
        if stale_after_seconds <= 0:
            raise ValueError(f"stale_after_seconds must be > 0, got {stale_after_seconds}")
        _check_role(role)
        self._lock = threading.Lock()
        self._stale_after_seconds = float(stale_after_seconds)
        self._role: Role = role
        self._last_good_cycle_at: float | None = None
        self._last_error: str | None = None

    @property
    def stale_after_seconds(self) -> float:
        return self._stale_after_seconds

    @property
    def role(self) -> Role:
        with self._lock:
            return self._role

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def set_role(self, role: Role) -> None:
        _check_role(role)
        with self._lock:
            self._role = role

    def cycle_ok(self, now: float) -> None:
        """A cycle succeeded at ``now``; the previous error no longer describes the current state, so clear it."""
        with self._lock:
            self._last_good_cycle_at = now
            self._last_error = None

    def cycle_failed(self, now: float, error: str) -> None:
        """A cycle failed; ``now`` is accepted for symmetry and future use (the age is measured from good cycles)."""
        del now
        with self._lock:
            self._last_error = cut(error)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The ``/healthz`` body: status ("ok" | "degraded"), role, last good cycle age in seconds, last error."""
        with self._lock:
            role, last_good, last_error = self._role, self._last_good_cycle_at, self._last_error
        # Clamp: a clock step backwards must not produce a negative age.
        age = None if last_good is None else max(0.0, now - last_good)
        fresh = age is not None and age < self._stale_after_seconds
        ok = role == "follower" or (role == "leader" and fresh)
        return {
            "status": "ok" if ok else "degraded",
            "role": role,
            "last_good_cycle_age_seconds": age,
            "last_error": last_error,
        }


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def status_routes(metrics: Metrics, health: HealthState) -> dict[tuple[str, str], Route]:
    """``GET /healthz`` (200 ok / 503 degraded) and ``GET /metrics``, the listener's built-in routes."""

    def healthz(request: Request) -> Response:
        body = health.snapshot(time.time())
        return json_response(200 if body["status"] == "ok" else 503, body)

    def render_metrics(request: Request) -> Response:
        return Response(200, metrics.render(), metrics.content_type)

    return {("GET", "/healthz"): healthz, ("GET", "/metrics"): render_metrics}
