"""The agent's autoheal and its node's event stream.

- ``NodeEvents`` (a thread) reads its Engine's ``GET /events`` (containers only) and reopens it from the last
  event's time when it ends (read timeout, dockerd restart): ``health_status`` events go to autoheal, a
  container's ``create``/``start`` marks its image used now (least-recently-used order for the GC).
- ``AutohealRunner`` (a thread) owns the containers' heal histories. It takes the container IDs the events
  name, inspects each, asks the pure ``decide`` (``orcastra.features.hygiene.autoheal``) and restarts when told
  to; a ``wait`` decision comes back at its time; every ``resync_interval_seconds`` it lists the unhealthy
  containers (one list call, ``health=unhealthy`` filter) so a missed event delays a restart, never loses it.
  Every action is an audit line, a metric, and (with ``webhook_url``) a JSON POST, retried.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from orcastra.adapters.node_engine import ContainerDetail, Event, NodeEngine
from orcastra.errors import EngineNotFoundError, OrcastraError, cut
from orcastra.features.hygiene.autoheal import (
    AUTOHEAL_LABEL,
    COMPAT_AUTOHEAL_LABEL,
    SWARM_SERVICE_NAME_LABEL,
    AutohealPolicy,
    Decision,
    HealHistory,
    HealthView,
    decide,
    forget_gone,
    on_healthy,
    record_decision,
)
from orcastra.runtime.node_gc import LastUse

log = logging.getLogger("orcastra.agent.autoheal")
audit = logging.getLogger("orcastra.agent.audit")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 15.0
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_ATTEMPTS = 3
MAX_RECENT_ACTIONS = 20


def autoheal_policy(a: Mapping[str, Any]) -> AutohealPolicy:
    return AutohealPolicy(
        all_containers=a["all_containers"],
        max_restarts=a["max_restarts"],
        window_seconds=a["window_seconds"],
        backoff_initial_seconds=a["backoff_initial_seconds"],
        backoff_max_seconds=max(a["backoff_max_seconds"], a["backoff_initial_seconds"]),
        default_stop_timeout_seconds=a["default_stop_timeout_seconds"],
        swarm_grace_seconds=a["swarm_grace_seconds"],
    )


def view_of(
    detail: ContainerDetail, unhealthy_since: float | None, service_labels: Mapping[str, str] | None = None
) -> HealthView:
    """The planner's view of a container; a task's container without an autoheal label of its own takes its
    service's (``service_labels``: service name -> the service's ``orcastra.autoheal`` value)."""
    labels = detail.labels
    service = labels.get(SWARM_SERVICE_NAME_LABEL, "")
    own = AUTOHEAL_LABEL in labels or COMPAT_AUTOHEAL_LABEL in labels
    if service and not own and service_labels and service in service_labels:
        labels = {**labels, AUTOHEAL_LABEL: service_labels[service]}
    return HealthView(
        id=detail.Id,
        name=detail.Name.lstrip("/"),
        health=detail.health,
        state=detail.status,
        labels=labels,
        started_at=detail.started_at,
        start_period_seconds=detail.start_period_seconds,
        unhealthy_since=unhealthy_since,
        restart_policy=detail.restart_policy,
    )


class Webhook:
    """POSTs each action as JSON to ``url`` from a thread of its own (a slow receiver delays nothing)."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url, self.stop = url, stop
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        threading.Thread(target=self._run, name="orcastra-agent-webhook", daemon=True).start()

    def send(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            log.warning("autoheal webhook: 1000 notifications waiting; dropping one")

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            response.read(1024)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                payload = self._queue.get(timeout=5)
            except queue.Empty:
                continue
            body = json.dumps(payload).encode()
            for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
                try:
                    self._post(body)
                    break
                except (OSError, ValueError) as e:
                    if attempt == WEBHOOK_ATTEMPTS:
                        log.warning("autoheal webhook: %d attempts failed: %s", attempt, cut(str(e), 200))
                    elif self.stop.wait(2.0**attempt):
                        return


class AutohealRunner(threading.Thread):
    """Decides and acts on the containers the events (or the resync) name; owns the heal histories."""

    def __init__(
        self,
        node: NodeEngine,
        settings: Mapping[str, Any],
        stop: threading.Event,
        on_action: Callable[[Decision], None] = lambda decision: None,
    ) -> None:
        super().__init__(name="orcastra-agent-autoheal", daemon=True)
        self.node, self.stop, self.on_action = node, stop, on_action
        self.policy = autoheal_policy(settings)
        self.resync_interval = float(settings["resync_interval_seconds"])
        self.webhook = Webhook(settings["webhook_url"], stop) if settings.get("webhook_url") else None
        self._inbox: queue.Queue[tuple[str, str]] = queue.Queue()
        self._histories: dict[str, HealHistory] = {}
        self._unhealthy_since: dict[str, float] = {}
        self._due: dict[str, float] = {}  # container -> when a "wait" decision asked to look again
        self.recent: list[dict[str, Any]] = []
        self.given_up: dict[str, str] = {}  # container -> name, while given up
        # Service name -> its orcastra.autoheal service label, from the controllers' facts.
        self.service_labels: Callable[[], Mapping[str, str]] = dict

    # --- fed by the events thread ---
    def notify(self, container_id: str, health: str) -> None:
        self._inbox.put((container_id, health))

    def _handle(self, container_id: str, health: str, now: float) -> None:
        if health == "healthy":
            self._unhealthy_since.pop(container_id, None)
            self._due.pop(container_id, None)
            self.given_up.pop(container_id, None)
            healed = on_healthy(self._histories.pop(container_id, None))
            if healed is not None:
                self._histories[container_id] = healed
            return
        if health == "destroy":
            for table in (self._histories, self._unhealthy_since, self._due, self.given_up):
                table.pop(container_id, None)
            return
        if health == "unhealthy":
            self._unhealthy_since.setdefault(container_id, now)
        self.check(container_id, now)

    def check(self, container_id: str, now: float) -> Decision | None:
        try:
            detail = self.node.inspect(container_id)
        except EngineNotFoundError:
            self._handle(container_id, "destroy", now)
            return None
        except OrcastraError as e:
            log.warning("autoheal: cannot inspect %s: %s", container_id[:12], e)
            self._due[container_id] = now + FIRST_RETRY_SECONDS * 10
            return None
        decision = decide(
            view_of(detail, self._unhealthy_since.get(container_id), self.service_labels()),
            self._histories.get(container_id),
            self.policy,
            now,
        )
        self._act(decision, now)
        return decision

    def _act(self, decision: Decision, now: float) -> None:
        cid = decision.container_id
        self._due.pop(cid, None)
        if decision.action == "none":
            return
        if decision.action in ("wait", "swarm") and decision.retry_at is not None:
            self._due[cid] = decision.retry_at
        if decision.action == "restart":
            try:
                self.node.restart_container(cid, decision.stop_timeout_seconds or 0.0)
                self._unhealthy_since.pop(cid, None)
            except OrcastraError as e:
                audit.warning("%s: the restart failed: %s", decision.reason, cut(str(e), 300))
        if decision.action == "give_up":
            self.given_up[cid] = decision.name
        if decision.action in ("restart", "give_up") or cid not in self._histories:
            level = logging.WARNING if decision.action == "give_up" else logging.INFO
            audit.log(level, "%s", decision.reason)
        history = record_decision(self._histories.get(cid), decision, now, self.policy)
        if history is not None:
            self._histories[cid] = history
        if decision.action in ("restart", "give_up", "swarm"):
            self._record(decision, now)

    def _record(self, decision: Decision, now: float) -> None:
        entry = {"at": now, "action": decision.action, "container": decision.name, "reason": decision.reason}
        self.recent = [*self.recent[-(MAX_RECENT_ACTIONS - 1) :], entry]
        self.on_action(decision)
        if self.webhook is not None:
            self.webhook.send({"source": "orcastra-agent", "container_id": decision.container_id, **entry})

    def resync(self, now: float) -> None:
        try:
            rows = self.node.unhealthy_containers()
            live = {row.Id for row in self.node.containers()}
        except OrcastraError as e:
            log.warning("autoheal: resync failed: %s", e)
            return
        self._histories = forget_gone(self._histories, live)
        for table in (self._unhealthy_since, self._due, self.given_up):
            for cid in [c for c in table if c not in live]:
                table.pop(cid)
        for row in rows:
            self._unhealthy_since.setdefault(row.Id, now)
            self.check(row.Id, now)

    def run(self) -> None:
        next_resync = time.time()
        while not self.stop.is_set():
            now = time.time()
            try:
                if now >= next_resync:
                    next_resync = now + self.resync_interval
                    self.resync(now)
                for cid in [c for c, at in self._due.items() if at <= now]:
                    self.check(cid, now)
                wake = min([next_resync, *self._due.values()])
                try:
                    cid, health = self._inbox.get(timeout=max(0.05, min(wake - time.time(), 5.0)))
                except queue.Empty:
                    continue
                self._handle(cid, health, time.time())
            except Exception:  # a bug must not kill autoheal: logged, and the loop goes on
                log.exception("autoheal: unexpected error")
                self.stop.wait(1.0)


class NodeEvents(threading.Thread):
    """Reads the node's container events and hands them on; reopens the stream after it ends."""

    def __init__(self, node: NodeEngine, autoheal: AutohealRunner | None, last_use: LastUse, stop: threading.Event):
        super().__init__(name="orcastra-agent-events", daemon=True)
        self.node, self.autoheal, self.last_use, self.stop = node, autoheal, last_use, stop
        self.since = time.time()
        self.on_create: Callable[[str], None] | None = None  # the mod manager's, when it runs

    def dispatch(self, event: Event) -> None:
        at = event.timeNano / 1e9 if event.timeNano else time.time()
        self.since = max(self.since, at)
        action = event.Action
        if action in ("create", "start"):
            self.last_use.saw(event.attributes.get("image", ""), at)
        if action == "create" and self.on_create is not None:
            self.on_create(event.object_id)
        if self.autoheal is None:
            return
        if action.startswith("health_status"):
            self.autoheal.notify(event.object_id, action.partition(":")[2].strip())
        elif action == "destroy":
            self.autoheal.notify(event.object_id, "destroy")

    def run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self.stop.is_set():
            try:
                for event in self.node.events(self.since, ("container",)):
                    self.dispatch(event)
                    retry = FIRST_RETRY_SECONDS
                    if self.stop.is_set():
                        return
            except OrcastraError as e:
                log.debug("events: %s (reopening in %.0f s)", e, retry)
                if self.stop.wait(retry):
                    return
                retry = min(retry * 2, MAX_RETRY_SECONDS)
            except Exception:  # a bug must not end the stream for good
                log.exception("events: unexpected error")
                self.stop.wait(MAX_RETRY_SECONDS)
