"""Autoheal, the decisions: which unhealthy containers on the agent's node to restart, when, and when to stop
trying. The node agent reacts to its Engine's ``health_status: unhealthy`` container events (and a slow
resync), turns each container's inspect data into a ``HealthView`` and asks ``decide``; it restarts what it is
told to, and keeps each container's ``HealHistory`` (updated only through the ``record_*`` functions here).

Why it is needed: Docker's restart policies act when a container *exits*, never on its health, so a plain
container that hangs unhealthy stays so. A Swarm task is different, and autoheal leaves it to Swarm: the
executor (moby ``daemon/cluster/executor/container/controller.go``, ``Wait``) stops the container on its
``health_status: unhealthy`` event and fails the task, and the orchestrator starts a replacement as the
service's restart policy says (with ``condition: none`` it starts none, but the container is still stopped).
So a task container that is still running and unhealthy ``swarm_grace_seconds`` after it turned unhealthy is
one Swarm missed: the executor only watches events from the moment it starts waiting on the container (one
already unhealthy then, e.g. after a dockerd restart with live-restore, goes unnoticed), or its stop failed.
Autoheal restarts that one like a plain container; Swarm then sees it exit and its restart policy takes over.

Opting in is by **container** label: ``orcastra.autoheal=true`` (or willfarrell/autoheal's ``autoheal=true``),
or every container with ``all_containers``; ``orcastra.autoheal=false`` (or ``autoheal=false``) opts one out
even then. A Swarm service's own labels never reach its containers: in a stack file put the label in the
service's ``labels:`` (container labels, ``ContainerSpec.Labels``), not in ``deploy.labels`` (service labels);
with the CLI, ``docker service create --container-label``. ``orcastra.autoheal.stop_timeout`` (or
``autoheal.stop.timeout``) sets the seconds the restart waits for the container to stop before killing it.

Pure: no Engine, no clock (``now`` is an argument), no I/O. The history lives in the agent's memory only,
keyed by container ID (``docker restart`` keeps the ID): an agent restart forgets it, which only resets the
restart count and the backoff.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from orcastra.domain.snapshot import EMPTY_LABELS
from orcastra.domain.wording import number, printable, seconds

# --- container labels (read only; set by the container's owner) ----------------------------------------------
AUTOHEAL_LABEL = "orcastra.autoheal"  # true: opt in; false: opt out, even with all_containers
STOP_TIMEOUT_LABEL = "orcastra.autoheal.stop_timeout"  # seconds the restart waits for the stop
# willfarrell/autoheal's names, so that its users can switch without relabelling; Orcastra's own win.
COMPAT_AUTOHEAL_LABEL = "autoheal"
COMPAT_STOP_TIMEOUT_LABEL = "autoheal.stop.timeout"
# Set by Swarm on every task's container.
SWARM_TASK_ID_LABEL = "com.docker.swarm.task.id"
SWARM_SERVICE_NAME_LABEL = "com.docker.swarm.service.name"

HealAction = Literal["restart", "wait", "give_up", "swarm", "none"]
HEAL_ACTIONS: tuple[HealAction, ...] = ("restart", "wait", "give_up", "swarm", "none")

# A longer stop timeout from a label is cut to this: the owner of one container should not keep the node's
# agent waiting on its restart for hours (Swarm's own default stop grace period is 10 s).
MAX_STOP_TIMEOUT_SECONDS = 600.0
_MAX_BACKOFF_DOUBLINGS = 60  # 2**60 times any initial delay is past any sensible cap (and far from overflow)


@dataclass(frozen=True)
class HealthView:
    """What autoheal needs of one container, from its inspect data (or a health event and a resync).

    ``health`` is ``State.Health.Status`` ("healthy", "unhealthy", "starting", "" without a health check),
    ``state`` is ``State.Status`` ("running", "exited", ...), ``started_at`` is ``State.StartedAt`` (epoch
    seconds), ``start_period_seconds`` the health check's ``StartPeriod``, ``unhealthy_since`` when the current
    unhealthy spell began if the runtime knows it, and ``restart_policy`` ``HostConfig.RestartPolicy.Name``.
    """

    id: str
    name: str
    health: str
    state: str
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    started_at: float | None = None
    start_period_seconds: float = 0.0
    unhealthy_since: float | None = None
    restart_policy: str = ""

    @property
    def swarm_task(self) -> bool:
        """Whether Swarm runs this container as a task (and so replaces it when it turns unhealthy)."""
        return SWARM_TASK_ID_LABEL in self.labels


@dataclass(frozen=True)
class AutohealPolicy:
    """How autoheal behaves on a node (the agent's settings turned into plain values).

    At most ``max_restarts`` restarts within ``window_seconds``, then it gives up until the container is
    healthy again or ``window_seconds`` have passed since. Before each restart after the first in the window it
    waits ``backoff_initial_seconds``, doubling per restart, at most ``backoff_max_seconds``, after the previous
    one. A Swarm task is left to Swarm for ``swarm_grace_seconds`` after it turned unhealthy.
    """

    all_containers: bool = False
    max_restarts: int = 5
    window_seconds: float = 600.0
    backoff_initial_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    default_stop_timeout_seconds: float = 10.0
    swarm_grace_seconds: float = 60.0


def policy_problems(policy: AutohealPolicy) -> tuple[str, ...]:
    """Every problem with ``policy`` at once, each naming the field (empty when it is usable)."""
    problems: list[str] = []
    if policy.max_restarts < 1:
        problems.append(f"max_restarts is {policy.max_restarts}: expected at least 1")
    durations = {
        "window_seconds": (policy.window_seconds, False),
        "backoff_initial_seconds": (policy.backoff_initial_seconds, True),
        "backoff_max_seconds": (policy.backoff_max_seconds, True),
        "default_stop_timeout_seconds": (policy.default_stop_timeout_seconds, True),
        "swarm_grace_seconds": (policy.swarm_grace_seconds, True),
    }
    for field_name, (value, zero_ok) in durations.items():
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            expected = "a finite number of seconds, " + ("0 or more" if zero_ok else "more than 0")
            problems.append(f"{field_name} is {number(value)}: expected {expected}")
    if policy.backoff_max_seconds < policy.backoff_initial_seconds:
        problems.append(
            f"backoff_max_seconds ({number(policy.backoff_max_seconds)}) is less than backoff_initial_seconds "
            f"({number(policy.backoff_initial_seconds)})"
        )
    return tuple(problems)


@dataclass(frozen=True)
class HealHistory:
    """What autoheal remembers of one container: its restarts within the window (epoch seconds, oldest first),
    when it gave up on it, and when it first saw it unhealthy as a Swarm task (the grace clock's fallback when
    the view does not say since when it has been unhealthy)."""

    restarts: tuple[float, ...] = ()
    given_up_at: float | None = None
    swarm_seen_at: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do about one container now, and why.

    ``restart``: restart it, giving it ``stop_timeout_seconds`` to stop; ``wait``: ask again at ``retry_at``
    (start period, backoff); ``give_up``: too many restarts, stop trying (the runtime records it with
    ``record_give_up`` and may alert); ``swarm``: a Swarm task, Swarm replaces it (report only; ``retry_at`` is
    when autoheal would act if Swarm does not); ``none``: nothing to do. ``name`` is for display (printable).
    """

    action: HealAction
    container_id: str
    name: str
    reason: str
    retry_at: float | None = None
    stop_timeout_seconds: float | None = None


# --- history: the only ways it changes -------------------------------------------------------------------------


def prune(history: HealHistory, policy: AutohealPolicy, now: float) -> HealHistory:
    """``history`` without the restarts older than the window, and without a give-up older than the window
    (the container gets its full allowance of restarts again)."""
    since = now - policy.window_seconds
    given_up_at = history.given_up_at if history.given_up_at is not None and history.given_up_at > since else None
    return replace(history, restarts=tuple(t for t in history.restarts if t > since), given_up_at=given_up_at)


def record_restart(history: HealHistory | None, now: float, policy: AutohealPolicy) -> HealHistory:
    """The history after a restart at ``now`` (recorded when it is attempted: a restart that fails still counts,
    or a container the Engine cannot restart would be tried again at every event). A restart ends the unhealthy
    spell, so the Swarm grace clock starts again."""
    past = prune(history or HealHistory(), policy, now)
    return replace(past, restarts=(*past.restarts, now), given_up_at=None, swarm_seen_at=None)


def record_give_up(history: HealHistory | None, now: float) -> HealHistory:
    """The history after giving up at ``now`` (so the give-up is reported once)."""
    return replace(history or HealHistory(), given_up_at=now)


def record_swarm_seen(history: HealHistory | None, now: float) -> HealHistory:
    """The history after seeing the container unhealthy as a Swarm task at ``now`` (the first sighting stays)."""
    past = history or HealHistory()
    return past if past.swarm_seen_at is not None else replace(past, swarm_seen_at=now)


def on_healthy(history: HealHistory | None) -> HealHistory | None:
    """The history once the container is healthy again: none. The restarts that healed it do not count against
    its next failure, and a give-up ends (a container that recovers after each restart is being healed)."""
    del history
    return None


def record_decision(
    history: HealHistory | None, decision: Decision, now: float, policy: AutohealPolicy
) -> HealHistory | None:
    """The history after the runtime carried out ``decision`` (``wait`` and ``none`` change nothing)."""
    if decision.action == "restart":
        return record_restart(history, now, policy)
    if decision.action == "give_up":
        return record_give_up(history, now)
    if decision.action == "swarm":
        return record_swarm_seen(history, now)
    return history


def forget_gone(histories: Mapping[str, HealHistory], live_ids: Iterable[str]) -> dict[str, HealHistory]:
    """``histories`` of the containers that still exist (a replaced task's container has a new ID)."""
    live = set(live_ids)
    return {cid: h for cid, h in histories.items() if cid in live}


def resync_histories(histories: Mapping[str, HealHistory], views: Iterable[HealthView]) -> dict[str, HealHistory]:
    """``histories`` after a full listing of the node's containers: those gone and those healthy again are
    forgotten (a lost event changes nothing for long: the resync is level-based)."""
    seen = tuple(views)
    kept = forget_gone(histories, (v.id for v in seen))
    for view in seen:
        if view.health == "healthy" and view.id in kept:
            healed = on_healthy(kept.pop(view.id))
            if healed is not None:
                kept[view.id] = healed
    return kept


# --- the decisions ---------------------------------------------------------------------------------------------


def decide(view: HealthView, history: HealHistory | None, policy: AutohealPolicy, now: float) -> Decision:
    """What to do about ``view`` now. In order: not opted in, not unhealthy or not running -> ``none``; given up
    (within the window) -> ``none``; within its health check's start period -> ``wait``; a Swarm task within
    the grace -> ``swarm``; ``max_restarts`` in the window -> ``give_up``; backoff -> ``wait``; else
    ``restart``."""
    name = display_name(view)
    opted_in, why = _opt_in(view.labels, policy)
    if not opted_in:
        return _none(view, f"autoheal: {name}: {why}{_label_hint(view)}")
    if view.health != "unhealthy":
        health = f"is {printable(view.health)}" if view.health else "has no health check"
        return _none(view, f"autoheal: {name} {health}, not unhealthy: nothing to do")
    if view.state != "running":
        return _none(view, f"autoheal: {name} is unhealthy but {printable(view.state)}: {_not_running(view)}")
    past = prune(history or HealHistory(), policy, now)
    if past.given_up_at is not None:
        return _still_given_up(view, past.given_up_at, policy, now)
    if view.started_at is not None and view.started_at + view.start_period_seconds > now:
        until = view.started_at + view.start_period_seconds
        return Decision(
            "wait",
            view.id,
            name,
            f"autoheal: {name} is unhealthy within its start period of {seconds(view.start_period_seconds)} "
            f"(started {_ago(view.started_at, now)}): waiting {_duration(until - now)}",
            retry_at=until,
        )
    swarm_note = ""
    if view.swarm_task:
        since = _unhealthy_since(view, past, now)
        if now < since + policy.swarm_grace_seconds:
            return _swarm(view, since, policy, now)
        swarm_note = f"Swarm did not replace this task within its grace of {seconds(policy.swarm_grace_seconds)}; "
    return _restart_or_wait(view, past, policy, now, swarm_note)


def _restart_or_wait(
    view: HealthView, past: HealHistory, policy: AutohealPolicy, now: float, swarm_note: str
) -> Decision:
    """An unhealthy, running, opted-in container past its start period: the cap, the backoff, or a restart."""
    name = display_name(view)
    count = len(past.restarts)
    within = seconds(policy.window_seconds)
    if count >= policy.max_restarts:
        return Decision(
            "give_up",
            view.id,
            name,
            f"autoheal: {swarm_note}{name} is still unhealthy after {count} restart(s) within {within}: giving up "
            f"until it turns healthy or for {within}",
            retry_at=now + policy.window_seconds,
        )
    if count:
        last = max(past.restarts)
        due = last + backoff_seconds(count, policy)
        if now < due:
            return Decision(
                "wait",
                view.id,
                name,
                f"autoheal: {swarm_note}{name} is unhealthy; restarted {count} time(s) within {within}, the last "
                f"{_ago(last, now)}: backoff, next restart in {_duration(due - now)}",
                retry_at=due,
            )
    stop_timeout, note = stop_timeout_seconds(view.labels, policy)
    spell = f" for {_duration(now - view.unhealthy_since)}" if view.unhealthy_since is not None else ""
    return Decision(
        "restart",
        view.id,
        name,
        f"autoheal: {swarm_note}{name} is unhealthy{spell}: restarting it (restart {count + 1} of at most "
        f"{policy.max_restarts} within {within}; stop timeout {seconds(stop_timeout)}{note})",
        stop_timeout_seconds=stop_timeout,
    )


def backoff_seconds(restarts_in_window: int, policy: AutohealPolicy) -> float:
    """How long after the previous restart the next one waits, with ``restarts_in_window`` restarts already in
    the window: none for the first, then ``backoff_initial_seconds`` doubling per restart (10, 20, 40 s...),
    at most ``backoff_max_seconds``."""
    if restarts_in_window < 1:
        return 0.0
    doublings = min(restarts_in_window - 1, _MAX_BACKOFF_DOUBLINGS)
    return min(policy.backoff_initial_seconds * 2.0**doublings, policy.backoff_max_seconds)


def plan_resync(
    views: Iterable[HealthView], histories: Mapping[str, HealHistory], policy: AutohealPolicy, now: float
) -> tuple[Decision, ...]:
    """The slow resync: a decision for every unhealthy container that needs one (``none`` left out), by name."""
    decisions = (decide(v, histories.get(v.id), policy, now) for v in views if v.health == "unhealthy")
    return tuple(sorted((d for d in decisions if d.action != "none"), key=lambda d: (d.name, d.container_id)))


def summary(decisions: Iterable[Decision]) -> dict[HealAction, int]:
    """How many decisions of each action, every action listed (zeros included), for a report."""
    counts: dict[HealAction, int] = dict.fromkeys(HEAL_ACTIONS, 0)
    for decision in decisions:
        counts[decision.action] += 1
    return counts


# --- labels ----------------------------------------------------------------------------------------------------


def stop_timeout_seconds(labels: Mapping[str, str], policy: AutohealPolicy) -> tuple[float, str]:
    """The seconds a restart waits for the container to stop (then it is killed), from its label (at most
    ``MAX_STOP_TIMEOUT_SECONDS``) or the default, and a note for the reason saying where it came from (empty
    for the default). The Engine takes whole seconds (``POST /containers/{id}/restart?t=``): round up."""
    for key in (STOP_TIMEOUT_LABEL, COMPAT_STOP_TIMEOUT_LABEL):
        if key not in labels:
            continue
        raw = labels[key]
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > MAX_STOP_TIMEOUT_SECONDS:
            return MAX_STOP_TIMEOUT_SECONDS, f", the most allowed: the label {key} asks for {number(value)}"
        if math.isfinite(value) and value >= 0:
            return value, f", from the label {key}"
        default = seconds(policy.default_stop_timeout_seconds)
        return (
            policy.default_stop_timeout_seconds,
            f'; the label {key}="{printable(raw)}" is not a number of seconds (0 or more): using {default}',
        )
    return policy.default_stop_timeout_seconds, ""


def _opt_in(labels: Mapping[str, str], policy: AutohealPolicy) -> tuple[bool, str]:
    """Whether the container's labels (or ``all_containers``) opt it in, and why not when they do not."""
    notes: list[str] = []
    for key in (AUTOHEAL_LABEL, COMPAT_AUTOHEAL_LABEL):
        if key not in labels:
            continue
        value = labels[key].strip().lower()
        if value in ("true", "false"):
            return value == "true", f"opted out by the label {key}=false"
        notes.append(f'the label {key}="{printable(labels[key])}" is neither true nor false, so it is ignored')
    if policy.all_containers:
        return True, ""
    notes.insert(0, f"not opted in (no {AUTOHEAL_LABEL}=true or {COMPAT_AUTOHEAL_LABEL}=true container label)")
    return False, "; ".join(notes)


def _label_hint(view: HealthView) -> str:
    """For a Swarm task that is not opted in: where the label must go (a common mistake)."""
    if not view.swarm_task or AUTOHEAL_LABEL in view.labels or COMPAT_AUTOHEAL_LABEL in view.labels:
        return ""
    return f"; for a service, set {AUTOHEAL_LABEL}=true in its deploy.labels or its container labels"


# --- wording ---------------------------------------------------------------------------------------------------


def display_name(view: HealthView) -> str:
    """The container's name for a message line: without the Engine's leading ``/``, printable (the name is
    chosen by whoever runs the container), or its short ID when it has none."""
    name = view.name.removeprefix("/")
    return printable(name) if name else printable(view.id[:12])


def _none(view: HealthView, reason: str) -> Decision:
    return Decision("none", view.id, display_name(view), reason)


def _not_running(view: HealthView) -> str:
    if view.swarm_task:
        return "Swarm's restart policy decides what happens to the task"
    if view.restart_policy in ("always", "unless-stopped", "on-failure"):
        return f"its restart policy ({view.restart_policy}) decides; autoheal restarts running containers only"
    return "autoheal restarts running containers only"


def _still_given_up(view: HealthView, given_up_at: float, policy: AutohealPolicy, now: float) -> Decision:
    again = given_up_at + policy.window_seconds
    return Decision(
        "none",
        view.id,
        display_name(view),
        f"autoheal: {display_name(view)}: gave up at {_moment(given_up_at)}, {_ago(given_up_at, now)}, "
        f"after {policy.max_restarts} restart(s) within {seconds(policy.window_seconds)}; trying again in "
        f"{_duration(again - now)} unless it turns healthy first",
        retry_at=again,
    )


def _unhealthy_since(view: HealthView, past: HealHistory, now: float) -> float:
    """Since when a Swarm task has been unhealthy: the view's own time, else autoheal's first sighting, else
    now (this is the first sighting)."""
    if view.unhealthy_since is not None:
        return view.unhealthy_since
    return past.swarm_seen_at if past.swarm_seen_at is not None else now


def _swarm(view: HealthView, since: float, policy: AutohealPolicy, now: float) -> Decision:
    name = display_name(view)
    service = view.labels.get(SWARM_SERVICE_NAME_LABEL, "")
    task = f"a task of the service {printable(service)}" if service else "a Swarm task"
    act_at = since + policy.swarm_grace_seconds
    return Decision(
        "swarm",
        view.id,
        name,
        f"autoheal: {name} is {task}, unhealthy for {_duration(now - since)}: Swarm replaces unhealthy tasks; not "
        f"acting (autoheal restarts it if it is still running unhealthy in {_duration(act_at - now)})",
        retry_at=act_at,
    )


def _duration(value: float) -> str:
    return seconds(round(max(value, 0.0), 1))


def _ago(at: float, now: float) -> str:
    return f"{_duration(now - at)} ago"


def _moment(at: float) -> str:
    """An epoch time as UTC, to match against logs (the number itself if it is not a date)."""
    try:
        return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return number(at)
