"""Rebooting a node, with I/O: the lock in a Swarm label, drain, the reboot command, wait Ready, activate.

``reboot_node`` is what ``reboot NODE`` runs; ``run_scheduled_reboot`` is one tick of the scheduled mode (the
daemon calls it every ``schedule.check_interval_seconds``). Both raise ``orcastra.errors`` types; a failed step
raises ``RebootStepError`` naming the step, leaves the node drained and the lock in place until its TTL, so an
operator sees what happened (``docker info`` shows the Swarm label; ``reboot NODE`` again after fixing it takes
the lock back, being the same holder only within one process, or after the TTL).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal, Protocol

from orcastra.adapters.engine.api import EngineApi
from orcastra.domain.actions import SetNodeAvailability
from orcastra.domain.snapshot import Node, Snapshot
from orcastra.errors import (
    EngineNotFoundError,
    OrcastraError,
    PermanentError,
    TemporaryError,
    cut,
)
from orcastra.features.reboot.plan import (
    LOCK_LABEL,
    RebootLock,
    lock_blocks,
    parse_lock,
    plan_scheduled_reboot,
    reboot_refusal,
    services_on,
    tasks_left_on,
)
from orcastra.features.reboot.settings import NODE_PLACEHOLDER, RebootSettings
from orcastra.runtime.executor import Executor
from orcastra.runtime.leadership import new_holder_id
from orcastra.runtime.swarm_labels import SwarmLabelWriteError, compare_and_set

log = logging.getLogger(__name__)

Step = Literal["lock", "drain", "wait-drained", "reboot-command", "wait-ready", "activate", "release"]
CAS_ATTEMPTS = 5
# What a node's hostname must look like before it is put on a command line (see ``render_command``).
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}\Z")
# Words of a rendered reboot command this long are kept out of results and logs (``scrub``).
SECRET_WORD_MIN_CHARS = 6


class RebootRefused(PermanentError):
    """The reboot may not start: unknown node, no command configured, it would hurt the Swarm."""


class RebootLocked(TemporaryError):
    """Another reboot holds the Swarm-wide lock; try again when it is done (or its TTL has passed)."""


class RebootStepError(PermanentError):
    """A step failed or timed out; the node is left drained and the lock stays until its TTL."""

    def __init__(self, node: str, step: Step, message: str) -> None:
        super().__init__(f"reboot of {node} aborted at step {step}: {message}")
        self.node = node
        self.step = step


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


RunCommand = Callable[[str, float], CommandResult]


class _HasReboot(Protocol):
    @property
    def reboot(self) -> RebootSettings: ...


def run_shell(command: str, timeout: float) -> CommandResult:
    """The default ``run_command``: ``sh -c`` the rendered template (from the config only), output captured."""
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        return CommandResult(returncode=-1, output=f"timed out after {timeout:g} s: {e.output or ''!s}")
    except OSError as e:
        return CommandResult(returncode=-1, output=str(e))
    return CommandResult(returncode=done.returncode, output=(done.stdout or "") + (done.stderr or ""))


def render_command(template: str, hostname: str) -> str:
    """The command for one node: ``{node}`` becomes the shell-quoted hostname (and nothing else is touched).

    A hostname comes from the Swarm, and a worker's owner chooses it. Shell quoting stops shell injection but
    not option injection (``-oProxyCommand=...`` as ssh's host argument runs a command here), so a name that
    is not a plain host name never reaches a command line (``RebootRefused``). Templates should still put the
    name after ``--`` where the program allows it (``ssh -- {node} ...``)."""
    if not HOSTNAME_RE.match(hostname):
        raise RebootRefused(
            f"node hostname {hostname!r} is not a plain host name (letters, digits, '.', '-', '_', not starting "
            "with '-' or '.'): it is never put on a command line"
        )
    return template.replace(NODE_PLACEHOLDER, shlex.quote(hostname))


def scrub(text: str, command: str, hostname: str) -> str:
    """``text`` (a command's output) without the rendered command or its longer words: a reboot command may
    carry a secret (an IPMI password), and results and logs are read by more people than the config."""
    secrets = sorted({w for w in shlex.split(command) if len(w) >= SECRET_WORD_MIN_CHARS and w != hostname},
                     key=len, reverse=True)  # fmt: skip
    for secret in (command, *secrets):
        text = text.replace(secret, "<redacted>")
    return text


def settings_of(config_like: RebootSettings | _HasReboot) -> RebootSettings:
    return config_like if isinstance(config_like, RebootSettings) else config_like.reboot


# --- the lock: a Swarm label written at the Swarm's version -----------------------------------------------


def _set_swarm_labels(
    engine: EngineApi,
    writes: Executor,
    check: Callable[[dict[str, str]], bool],
    changes: dict[str, str | None],
    reason: str,
) -> str:
    """The reboot lock's compare-and-set (``swarm_labels.compare_and_set``); a failed write aborts the reboot."""
    try:
        return compare_and_set(engine, writes, changes, reason=reason, controller="reboot", check=check)
    except SwarmLabelWriteError as e:
        raise RebootStepError(str(changes.get(LOCK_LABEL) or "?"), "lock", str(e)) from e


def compare_and_set_lock(engine: EngineApi, writes: Executor, expected: str | None, new: str | None) -> bool:
    """Write the lock label only if it still reads ``expected`` (see ``_set_swarm_labels``)."""
    result = _set_swarm_labels(
        engine,
        writes,
        lambda labels: labels.get(LOCK_LABEL) == expected,
        {LOCK_LABEL: new},
        "reboot lock: release" if new is None else "reboot lock: renew",
    )
    return result in ("ok", "dry-run")


def read_lock(engine: EngineApi) -> RebootLock | None:
    return parse_lock(engine.swarm_labels().get(LOCK_LABEL))


class _Lock:
    """This reboot's hold on the lock: take (or take over when expired), renew, release."""

    def __init__(  # noqa: PLR0913 - the lock's parts, keyword-only after the node
        self, engine: EngineApi, writes: Executor, node: str, *, holder: str, ttl: float, clock: Callable[[], float]
    ) -> None:
        self.engine, self.writes, self.node, self.holder, self.ttl, self.clock = (
            engine,
            writes,
            node,
            holder,
            ttl,
            clock,
        )
        self.value: str | None = None

    def _fresh(self) -> str:
        return RebootLock(self.node, self.holder, self.clock() + self.ttl).format()

    def take(self) -> str:
        """Take the lock; returns "ok", or "dry-run" when the writes are only recorded. Raises RebootLocked."""
        seen: list[RebootLock | None] = []

        def free(labels: dict[str, str]) -> bool:
            current = parse_lock(labels.get(LOCK_LABEL))
            seen.append(current)
            return current is None or not lock_blocks(current, self.holder, self.clock())

        new = self._fresh()
        # Written at the version the decision was made on: a lock taken in between wins.
        result = _set_swarm_labels(
            self.engine, self.writes, free, {LOCK_LABEL: new}, f"reboot lock: take for {self.node}"
        )
        current = seen[-1] if seen else None
        if result == "refused" and current is not None:
            raise RebootLocked(
                f"the reboot lock is held by {current.holder} for {current.node} until "
                f"{dt.datetime.fromtimestamp(current.expires_at).isoformat(timespec='seconds')}"
            )
        if result not in ("ok", "dry-run"):
            raise RebootLocked("the reboot lock kept changing under us: another reboot is starting")
        if current is not None and current.holder != self.holder:
            log.warning("reboot lock of %s (%s) had expired: taken over", current.holder, current.node)
        self.value = new
        return result

    def renew(self) -> None:
        """Push the expiry out before a long step; losing the lock (someone took an expired one) aborts."""
        new = self._fresh()
        if not compare_and_set_lock(self.engine, self.writes, self.value, new):
            current = read_lock(self.engine)
            raise RebootStepError(self.node, "lock", f"lost the reboot lock (now {current})")
        self.value = new

    def release(self) -> None:
        if self.value is not None and not compare_and_set_lock(self.engine, self.writes, self.value, None):
            log.warning("reboot lock changed by someone else; not removing it")
        self.value = None


# --- the steps ------------------------------------------------------------------------------------------


def _set_availability(
    engine: EngineApi,
    writes: Executor,
    hostname: str,
    availability: Literal["active", "drain"],
    step: Step,
) -> None:
    for _ in range(CAS_ATTEMPTS):
        snapshot = engine.snapshot()
        node = snapshot.node_by_hostname(hostname)
        if node is None:
            raise RebootStepError(hostname, step, "the node left the Swarm")
        if node.availability == availability:
            return
        action = SetNodeAvailability(
            node_id=node.id,
            hostname=hostname,
            node_version=node.version,
            availability=availability,
            reason=f"reboot: {'drain before the reboot' if availability == 'drain' else 'back after the reboot'}",
            controller="reboot",
        )
        outcomes = writes.apply([action], snapshot)
        if any(o.result == "conflict" for o in outcomes):
            continue
        if any(o.result == "error" for o in outcomes):
            raise RebootStepError(hostname, step, "; ".join(o.detail for o in outcomes))
        return
    raise RebootStepError(hostname, step, "the node kept changing (version conflicts)")


def _wait_drained(  # noqa: PLR0913 - clock and sleep are injected for tests
    engine: EngineApi,
    node: Node,
    moved: frozenset[str],
    settings: RebootSettings,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    deadline = clock() + settings.drain_timeout_seconds
    while True:
        try:
            waiting = tasks_left_on(engine.snapshot(), node.id, moved)
        except OrcastraError as e:  # a busy manager (e.g. a leader election) is no reason to abort; keep asking
            waiting = [f"error: {e}"]
        if not waiting:
            return
        if clock() >= deadline:
            raise RebootStepError(
                node.hostname,
                "wait-drained",
                f"tasks did not move within {settings.drain_timeout_seconds:g} s: {', '.join(waiting[:10])}",
            )
        sleep(settings.poll_interval_seconds)


def _wait_ready(
    engine: EngineApi,
    before: Node,
    settings: RebootSettings,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Wait until the Swarm reports the node Ready again, after having seen it go: either a state other than
    Ready, or a newer status (``UpdatedAt``: the manager rewrites a node's status when its dockerd registers
    again, even when the restart was too quick for it to be marked Down)."""
    deadline = clock() + settings.ready_timeout_seconds
    seen_down = False
    last = "unknown"
    while True:
        try:
            now = engine.inspect_node(before.id)
            last = now.state
            if not now.ready:
                seen_down = True
            elif seen_down or now.updated_at > before.updated_at:
                return
        except OrcastraError as e:  # the manager may be busy while a node comes back; keep asking
            last = f"error: {e}"
        if clock() >= deadline:
            went = "went down and " if seen_down else ""
            raise RebootStepError(
                before.hostname,
                "wait-ready",
                f"the node {went}was not back Ready within {settings.ready_timeout_seconds:g} s (last: {last})",
            )
        sleep(settings.poll_interval_seconds)


def reboot_node(  # noqa: PLR0913 - the command runner, clock, sleep and holder are injected for tests
    engine: EngineApi,
    writes: Executor,
    config_like: RebootSettings | _HasReboot,
    node: str,
    *,
    run_command: RunCommand = run_shell,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    holder: str | None = None,
) -> str:
    """Reboot one node: lock, drain, wait until its tasks run elsewhere, run its reboot command, wait Ready,
    activate, unlock. ``engine`` reads; every write goes through ``writes`` (the runtime's executor, on its
    loop). Returns a message for the operator; raises ``RebootRefused`` (cannot start), ``RebootLocked``
    (another reboot runs) or ``RebootStepError`` (aborted, node left drained, lock kept). With a dry-run
    executor the lock is only recorded, and nothing else is done."""
    settings = settings_of(config_like)
    snapshot = engine.snapshot()
    target = snapshot.node_by_hostname(node)
    if target is None:
        known = ", ".join(sorted(n.hostname for n in snapshot.nodes))
        raise EngineNotFoundError(f"no node {node!r} in the Swarm (nodes: {known})")
    hostname = target.hostname  # from the Swarm, not the caller: the only name that reaches a shell
    template = settings.command_for(hostname)
    if template is None:
        raise RebootRefused("no reboot command configured (reboot.command or reboot.node_commands)")
    if (why := reboot_refusal(snapshot, hostname)) is not None:
        raise RebootRefused(f"not rebooting {hostname}: {why}")
    command = render_command(template, hostname)
    started = clock()
    lock = _Lock(engine, writes, hostname, holder=holder or new_holder_id(), ttl=settings.lock_ttl_seconds, clock=clock)
    if lock.take() == "dry-run":
        return f"would reboot {hostname}: drain, run its reboot command, wait until Ready, activate"
    log.warning("rebooting %s: lock taken, draining", hostname)
    moved = services_on(snapshot, target.id)
    _set_availability(engine, writes, hostname, "drain", "drain")
    _wait_drained(engine, target, moved, settings, clock=clock, sleep=sleep)

    lock.renew()
    before = engine.inspect_node(target.id)
    log.warning("rebooting %s: drained; running its reboot command", hostname)
    result = run_command(command, settings.command_timeout_seconds)
    if result.returncode != 0:
        raise RebootStepError(
            hostname,
            "reboot-command",
            f"the reboot command exited with {result.returncode}: {cut(scrub(result.output, command, hostname))}",
        )
    lock.renew()
    _wait_ready(engine, before, settings, clock, sleep)

    _set_availability(engine, writes, hostname, "active", "activate")
    lock.release()
    message = f"rebooted {hostname} in {clock() - started:.0f} s: drained, reboot command run, Ready, Active"
    log.warning("%s", message)
    return message


def check_sentinels(
    snapshot: Snapshot, settings: RebootSettings, run_command: RunCommand, inventory: Collection[str]
) -> set[str]:
    """Hostnames whose reboot-required sentinel is set (the sentinel command exits 0). Only nodes of the
    inventory (``nodes:`` and ``reboot.node_commands``) are asked: a node that merely joined the Swarm is no
    machine the operator told Orcastra to log into."""
    if settings.sentinel_command is None:
        return set()
    required: set[str] = set()
    for n in snapshot.nodes:
        if not n.ready or n.hostname not in inventory or not HOSTNAME_RE.match(n.hostname):
            continue
        result = run_command(render_command(settings.sentinel_command, n.hostname), settings.command_timeout_seconds)
        if result.returncode == 0:
            required.add(n.hostname)
    return required


def run_scheduled_reboot(  # noqa: PLR0913 - the command runner and the clocks are injected for tests
    engine: EngineApi,
    writes: Executor,
    config_like: RebootSettings | _HasReboot,
    *,
    inventory: Collection[str],
    run_command: RunCommand = run_shell,
    clock: Callable[[], float] = time.time,
    now_local: Callable[[], dt.datetime] = dt.datetime.now,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """One tick of the scheduled mode: inside the window, with no reboot under way, reboot the next node of the
    ``inventory`` whose sentinel is set. Returns the reboot's message, or None when nothing was due."""
    settings = settings_of(config_like)
    if not settings.schedule.enabled:
        return None
    current = read_lock(engine)
    if current is not None and not current.expired(clock()):
        return None
    snapshot = engine.snapshot()
    # Check the window (and that every node is Ready and Active) before running any sentinel command.
    everyone = {n.hostname for n in snapshot.nodes}
    if plan_scheduled_reboot(snapshot, everyone, now_local(), settings) is None:
        return None
    required = check_sentinels(snapshot, settings, run_command, inventory)
    node = plan_scheduled_reboot(snapshot, required, now_local(), settings)
    if node is None:
        return None
    log.warning("scheduled reboot: %s needs a reboot (sentinel set)", node)
    return reboot_node(engine, writes, settings, node, run_command=run_command, clock=clock, sleep=sleep)
