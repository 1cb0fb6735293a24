"""The agent's node hygiene, wired: garbage collection (``node_gc``), autoheal and the event stream
(``node_autoheal``), log rotation (``node_logrotate``), the Swarm's facts the controllers hand over, and the
HTTP routes and metrics for them.

Routes (added to the agent's listener):
- ``POST /v1/report``: a controller hands over the Swarm's facts (``orcastra.features.agents.facts``) and gets
  the report back. With a token configured (``api.token``/``api.token_file``, the stack's secret), facts
  without it are refused (401): only a controller may tell an agent which images the Swarm still needs.
- ``POST /v1/gc`` (token as above; ``{"dry_run": true|false}``, default the configured ``dry_run``): one run
  now, its result in the answer (``orcastra gc`` sends it);
- ``POST /v1/mods/refresh`` (token as above): a full refresh of the mod cache now (``mods.enabled`` only; the
  ``refresh_mods`` command sends it to every agent), its result in the answer.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from orcastra.adapters.http import Request, Response, Route, json_response
from orcastra.adapters.local_engine import LocalEngine
from orcastra.adapters.node_engine import NodeEngine
from orcastra.features.agents.facts import decode_facts
from orcastra.features.agents.report import (
    REPORT_PATH,
    AutohealSummary,
    GcSummary,
    LogrotateSummary,
    ModsSummary,
)
from orcastra.features.hygiene.autoheal import Decision
from orcastra.runtime.node_autoheal import AutohealRunner, NodeEvents
from orcastra.runtime.node_gc import FactsBox, GcResult, GcRunner, LastUse

if TYPE_CHECKING:
    from orcastra.runtime.node_logrotate import LogrotateResult, LogrotateRunner

log = logging.getLogger("orcastra.agent")

GC_PATH = "/v1/gc"
MODS_REFRESH_PATH = "/v1/mods/refresh"
# A GC run's request carries a flag; its answer can be long (a paced cleanup of thousands of images).
MAX_GC_REQUEST_BYTES = 1024


def _unauthorised(error: str) -> Response:
    """The answer to a write without the API token (or with a wrong one)."""
    return json_response(401, {"error": error}, {"WWW-Authenticate": "Bearer"})


class HygieneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.removed = Counter(
            "orcastra_agent_gc_removed", "Objects the GC removed, by kind.", ["kind"], registry=registry
        )
        self.freed = Counter("orcastra_agent_gc_freed_bytes", "Bytes the GC freed (estimated).", registry=registry)
        self.last_run = Gauge(
            "orcastra_agent_gc_last_run_timestamp_seconds", "When the last GC run ended.", registry=registry
        )
        self.heal = Counter(
            "orcastra_agent_autoheal_actions", "Autoheal actions, by action.", ["action"], registry=registry
        )
        self.rotated = Counter("orcastra_agent_logrotate_rotated", "Logs logrotate rotated.", registry=registry)
        self.logrotate_last_run = Gauge(
            "orcastra_agent_logrotate_last_run_timestamp_seconds",
            "When the last logrotate run ended.",
            registry=registry,
        )
        self.unbounded_logs = Gauge(
            "orcastra_agent_unbounded_json_logs",
            "Running containers logging to json-file without max-size (at the last logrotate run).",
            registry=registry,
        )


class NodeHygiene:
    """Builds and runs the hygiene threads; answers their routes and their part of the report."""

    def __init__(  # noqa: PLR0913 - the Engine, the section, the token, the stop; the rest keyword-only
        self,
        engine: LocalEngine,
        settings: dict[str, Any],
        token: str | None,
        stop: threading.Event,
        *,
        own_files: tuple[str, ...] = (),
        mods: dict[str, Any] | None = None,
    ) -> None:
        self.node = NodeEngine(engine)
        self.settings, self.token, self.stop = settings, token, stop
        self.facts, self.last_use = FactsBox(), LastUse()
        self.metrics: HygieneMetrics | None = None
        gc = settings.get("gc") or {}
        self.gc = GcRunner(self.node, gc, self.facts, self.last_use, stop, on_result=self._gc_done) if gc else None
        heal = settings.get("autoheal") or {}
        enabled = bool(heal.get("enabled"))
        self.autoheal = AutohealRunner(self.node, heal, stop, self._healed) if enabled else None
        if self.autoheal is not None:
            self.autoheal.service_labels = lambda: self.facts.autoheal
        self.events = NodeEvents(self.node, self.autoheal, self.last_use, stop)
        self._restarts = self._swarm_left = 0
        self.mods: Any = None  # the ModManager (imported only when enabled: the agent stays small otherwise)
        self._mod_metrics: Any = None
        if mods and mods.get("enabled"):
            from orcastra.runtime.agent_mods import ModManager

            self.mods = ModManager(engine, self.node, mods, self.facts.service_mods, stop, on_result=self._mods_done)
            self.events.on_create = self.mods.container_seen
        rotate = settings.get("logrotate") or {}
        self.logrotate: LogrotateRunner | None = None
        if rotate.get("enabled"):  # imported only then: subprocess and tempfile cost the agent 0.2 MiB
            from orcastra.runtime.node_logrotate import LogrotateRunner

            self.logrotate = LogrotateRunner(rotate, own_files, stop, node=self.node, on_result=self._rotated)

    def features(self) -> tuple[str, ...]:
        gc = self.settings.get("gc") or {}
        out = []
        if gc.get("schedule") or gc.get("disk_threshold"):
            out.append("gc")
        if self.autoheal is not None:
            out.append("autoheal")
        if self.mods is not None:
            out.append("mods")
        if self.logrotate is not None:
            out.append("logrotate")
        return tuple(out)

    def register(self, registry: CollectorRegistry) -> None:
        self.metrics = HygieneMetrics(registry)
        if self.mods is not None:
            from orcastra.runtime.mods import ModMetrics

            self._mod_metrics = ModMetrics(registry)

    def _mods_done(self, result: Any) -> None:
        if self._mod_metrics is not None:
            self._mod_metrics.record(result)

    def _threads(self) -> tuple[threading.Thread | None, ...]:
        return (self.gc, self.autoheal, self.events, self.logrotate, self.mods)

    def start(self) -> None:
        for thread in self._threads():
            if thread is not None:
                thread.start()
        log.info("hygiene: %s", ", ".join(self.features()) or "garbage collection on request only")

    def join(self, timeout: float) -> None:
        for thread in self._threads():
            if thread is not None and thread.is_alive():
                thread.join(timeout)

    def _gc_done(self, result: GcResult) -> None:
        if self.metrics is None or result.dry_run:
            return
        for item in result.removed:
            self.metrics.removed.labels(kind=item.kind).inc()
        self.metrics.freed.inc(result.freed_bytes)
        self.metrics.last_run.set(result.finished_at)

    def _rotated(self, result: LogrotateResult) -> None:
        if self.metrics is None:
            return
        self.metrics.rotated.inc(result.rotated_count)
        self.metrics.logrotate_last_run.set(result.finished_at)
        if not result.unbounded_error:
            self.metrics.unbounded_logs.set(result.unbounded_count)

    def _healed(self, decision: Decision) -> None:
        if decision.action == "restart":
            self._restarts += 1
        elif decision.action == "swarm":
            self._swarm_left += 1
        if self.metrics is not None:
            self.metrics.heal.labels(action=decision.action).inc()

    def report_fields(self, now: float) -> dict[str, Any]:
        fields: dict[str, Any] = {"features": self.features(), "facts_age_seconds": self.facts.age(now)}
        last = self.gc.last if self.gc is not None else None
        if last is not None:
            fields["gc"] = GcSummary(
                trigger=last.trigger,
                dry_run=last.dry_run,
                finished_at=last.finished_at,
                removed=last.removed_count,
                failed=last.failed_count,
                freed_bytes=last.freed_bytes,
                error=last.error[:256],
            )
        if self.autoheal is not None:
            given_up = tuple(name[:256] for name in list(self.autoheal.given_up.values())[:20])
            fields["autoheal"] = AutohealSummary(
                restarts=self._restarts, swarm_left=self._swarm_left, given_up=given_up
            )
        last_mods = self.mods.refresher.last if self.mods is not None else None
        if last_mods is not None:
            fields["mods"] = ModsSummary(
                trigger=last_mods.trigger,
                finished_at=last_mods.finished_at,
                wanted=len(self.mods.known),
                hits=last_mods.hits,
                fetched=last_mods.fetched,
                failed=last_mods.failed,
                pruned=last_mods.pruned,
                bytes_fetched=last_mods.bytes_fetched,
                error=last_mods.error[:256],
            )
        rotated = self.logrotate.last if self.logrotate is not None else None
        if rotated is not None:
            fields["logrotate"] = LogrotateSummary(
                trigger=rotated.trigger,
                finished_at=rotated.finished_at,
                rotated=rotated.rotated_count,
                error=(rotated.error or rotated.unbounded_error)[:256],
                unbounded_logs=rotated.unbounded_count,
                unbounded_examples=rotated.unbounded,
            )
        return fields

    # --- routes ---

    def _authorised(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def routes(self, report: Route) -> dict[tuple[str, str], Route]:
        def take_facts(request: Request) -> Response:
            if not self._authorised(request):
                return _unauthorised("Swarm facts need the API token")
            try:
                facts = decode_facts(request.body)
            except ValueError as e:
                return json_response(400, {"error": str(e)[:300]})
            self.facts.put(facts.image_refs, facts.volume_names, time.time(), facts.mods)
            self.facts.put_autoheal(facts.autoheal_on, facts.autoheal_off)
            return report(request)

        def run_gc(request: Request) -> Response:
            if not self._authorised(request):
                return _unauthorised("a GC run needs the API token")
            if self.gc is None:
                return json_response(409, {"error": "garbage collection is not configured on this agent"})
            try:
                asked = json.loads(request.body or b"{}")
                dry_run = asked.get("dry_run") if isinstance(asked, dict) else None
            except ValueError:
                return json_response(400, {"error": 'expected {"dry_run": true|false}'})
            if dry_run is not None and not isinstance(dry_run, bool):
                return json_response(400, {"error": "dry_run must be true or false"})
            result = self.gc.run_now("command", dry_run)
            return Response(200, msgspec.json.encode(result) + b"\n")

        def refresh_mods(request: Request) -> Response:
            if not self._authorised(request):
                return _unauthorised("a mod refresh needs the API token")
            if self.mods is None:
                return json_response(409, {"error": "the mod manager is not enabled on this agent (mods.enabled)"})
            return Response(200, msgspec.json.encode(self.mods.refresh_now()) + b"\n")

        return {("POST", REPORT_PATH): take_facts, ("POST", GC_PATH): run_gc, ("POST", MODS_REFRESH_PATH): refresh_mods}
