"""The command channel kept in the Swarm: a command request is a Swarm config, so any manager (and any
Orcastra replica, on any node) can send one and the leader, wherever it runs, takes it.

A request is a config named ``orcastra-command-<ms>-<random>`` whose Data is the command entry as JSON (the
API's body, read by ``parse_entry``) and whose labels carry its state (``orcastra.command.*`` in
``domain.labels``)::

    pending --claim (label write at the config's version)--> running (+ holder) --> done | error
       |                                                         |
       +--> cancelled (the sender gave up first)                 +--> interrupted (its holder is gone)
       +--> error (expired: nobody took it in time)

Exactly once: only a label write at the version read claims a request, and the Swarm refuses a second write
at the same version, so two leaders racing for one request never both run it. A request found ``running`` by
a holder that is not the one serving now is marked ``interrupted`` and never run again (a second reboot is
worse than asking the operator to look). A sender that gives up withdraws its request by the same kind of
write (``cancelled``), so a request is either withdrawn or taken, never both.

This module is the data and the sender (``send_command``, for ``orcastra do --swarm`` and a follower's API);
``plan_queue`` is the leader's pure plan over one listing; the runtime (``runtime.command_queue``) applies it.
Values read from the Swarm are input (anyone with a manager's Engine can create configs): a request that is
not a well-formed command gets an error result, never a crash.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orcastra.adapters.engine.api import EngineApi
from orcastra.commands.api import BadBody, decode_json_object
from orcastra.commands.dispatch import CommandResult, ResultKind
from orcastra.commands.model import Command, Malformed, parse_entry
from orcastra.domain.actions import Action, RemoveConfig, UpdateConfigLabels
from orcastra.domain.configs import SwarmConfig
from orcastra.domain.labels import (
    COMMAND_FINISHED_LABEL,
    COMMAND_HOLDER_LABEL,
    COMMAND_MARKER_LABEL,
    COMMAND_RESULT_LABEL,
    COMMAND_STATE_LABEL,
    LABEL_TRUE,
)
from orcastra.errors import EngineConflictError, OrcastraError, TemporaryError, cut

log = logging.getLogger(__name__)

REQUEST_NAME_PREFIX = "orcastra-command-"
REQUEST_FILTER = {"label": [f"{COMMAND_MARKER_LABEL}={LABEL_TRUE}"]}
MAX_REQUEST_BYTES = 4096  # a command entry is a few short strings
MAX_RESULT_MESSAGE_CHARS = 1000  # the result is a label: kept short (the journal and audit log have the rest)
KEEP_FINISHED = 50  # finished requests kept for `docker config ls`, at most, and at most RETENTION_SECONDS
RETENTION_SECONDS = 3600.0
PENDING_EXPIRY_SECONDS = 600.0  # a request nobody took in this long is answered "expired", not run late
SEND_TIMEOUT_SECONDS = 60.0
SEND_POLL_SECONDS = 0.5

PENDING, RUNNING = "pending", "running"
FINISHED_STATES = frozenset({"done", "error", "interrupted", "cancelled"})
INTERRUPTED_MESSAGE = "interrupted: its leader stopped while it ran; not run again (check, and give it again)"


def new_request_name(now: float) -> str:
    return f"{REQUEST_NAME_PREFIX}{int(now * 1000):013d}-{secrets.token_hex(4)}"


def encode_request(cmd: Command) -> bytes:
    return json.dumps(cmd.to_entry()).encode()


def decode_request(data: bytes) -> Command | Malformed:
    """The command a request's Data holds, or why it holds none (too big, not UTF-8 JSON, not a command)."""
    if len(data) > MAX_REQUEST_BYTES:
        return Malformed(f"the request is {len(data)} bytes (at most {MAX_REQUEST_BYTES})")
    try:
        entry = decode_json_object(data)
    except BadBody as e:
        return Malformed(str(e))
    return parse_entry(entry)


def describe_request(data: bytes) -> str:
    """The request's text for a result, shown safely (cut, undecodable bytes replaced)."""
    return cut(data[:200].decode("utf-8", "replace"), 80)


def result_labels(result: CommandResult, now: float, state: str | None = None) -> dict[str, str]:
    """The labels that record a finished request (its state, a bounded JSON result and the finish time)."""
    body = {"command": cut(result.command, 100), "result": result.result}
    body["message"] = cut(result.message, MAX_RESULT_MESSAGE_CHARS)
    return {
        COMMAND_STATE_LABEL: state or ("done" if result.ok else "error"),
        COMMAND_RESULT_LABEL: json.dumps(body),
        COMMAND_FINISHED_LABEL: str(int(now)),
    }


def read_result(config: SwarmConfig) -> CommandResult | None:
    """A finished request's result (None while pending or running). A result label that cannot be read still
    gives the state as the result."""
    state = config.labels.get(COMMAND_STATE_LABEL, PENDING)
    if state not in FINISHED_STATES:
        return None
    try:
        body = json.loads(config.labels.get(COMMAND_RESULT_LABEL, ""))
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    kind: ResultKind = "ok" if state == "done" else "error"
    message = str(body.get("message") or state)
    return CommandResult(str(body.get("command") or describe_request(config.data)), kind, message, id=config.name)


def claim_action(config: SwarmConfig, holder: str) -> UpdateConfigLabels:
    return UpdateConfigLabels(
        config_id=config.id,
        config_name=config.name,
        config_version=config.version,
        set_labels={COMMAND_STATE_LABEL: RUNNING, COMMAND_HOLDER_LABEL: holder},
        reason="take the command request",
    )


def finish_action(config: SwarmConfig, labels: dict[str, str], reason: str) -> UpdateConfigLabels:
    return UpdateConfigLabels(
        config_id=config.id, config_name=config.name, config_version=config.version, set_labels=labels, reason=reason
    )


@dataclass(frozen=True)
class QueuePlan:
    """What the leader does with one listing: ``actions`` (mark interrupted or expired requests, remove old
    finished ones) and the one request to claim next (the oldest pending), if any."""

    actions: tuple[Action, ...]
    claim: SwarmConfig | None


def _finished_at(config: SwarmConfig) -> float:
    text = config.labels.get(COMMAND_FINISHED_LABEL, "")
    return float(text) if text.isdigit() else config.created_at


def plan_queue(configs: Sequence[SwarmConfig], holder: str, now: float) -> QueuePlan:
    """The leader's plan over the requests it listed. Pure. A request ``running`` here was not started by
    this serving pass (one runs at a time, and its result is written before the next listing), so it is one
    whose holder stopped: interrupted."""
    actions: list[Action] = []
    finished: list[tuple[float, SwarmConfig]] = []
    claim: SwarmConfig | None = None
    for c in sorted(configs, key=lambda c: (c.created_at, c.name)):
        state = c.labels.get(COMMAND_STATE_LABEL, PENDING)
        if state == RUNNING:
            who = c.labels.get(COMMAND_HOLDER_LABEL, "")
            result = CommandResult(describe_request(c.data), "error", f"{INTERRUPTED_MESSAGE} (holder {cut(who, 60)})")
            actions.append(finish_action(c, result_labels(result, now, "interrupted"), "its holder stopped"))
        elif state == PENDING and now - c.created_at > PENDING_EXPIRY_SECONDS:
            message = f"expired: no leader took it within {PENDING_EXPIRY_SECONDS:g} s; not run"
            result = CommandResult(describe_request(c.data), "error", message)
            actions.append(finish_action(c, result_labels(result, now), "expired"))
        elif state == PENDING:
            claim = claim or c
        else:  # finished, or a state nobody wrote: kept for a while, then removed
            finished.append((_finished_at(c), c))
    finished.sort(key=lambda fc: fc[0], reverse=True)
    for n, (at, c) in enumerate(finished):
        if n >= KEEP_FINISHED or now - at > RETENTION_SECONDS:
            actions.append(RemoveConfig(c.id, c.name, reason="finished command request past its retention"))
    return QueuePlan(tuple(actions), claim)


# --- the sender --------------------------------------------------------------------------------------------


def send_command(  # noqa: PLR0913 - the command, then keyword-only timing collaborators for tests
    engine: EngineApi,
    cmd: Command,
    *,
    timeout: float = SEND_TIMEOUT_SECONDS,
    poll: float = SEND_POLL_SECONDS,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
) -> CommandResult:
    """Put ``cmd`` in the Swarm as a request and wait up to ``timeout`` for the leader's result. On timeout the
    request is withdrawn if nobody took it yet (then it never runs). Raises ``OrcastraError`` when the request
    cannot be created."""
    name = new_request_name(clock())
    labels = {COMMAND_MARKER_LABEL: LABEL_TRUE, COMMAND_STATE_LABEL: PENDING}
    config_id = engine.create_config(name, encode_request(cmd), labels)
    log.info("command %s sent to the Swarm as config %s", cmd, name)
    deadline = clock() + timeout
    last: SwarmConfig | None = None
    while True:
        try:
            last = next((c for c in engine.list_configs({"id": [config_id]}) if c.id == config_id), None)
        except TemporaryError as e:  # a manager restarting, an election: keep waiting
            log.debug("waiting for %s: %s", name, e)
        else:
            if last is None:
                return CommandResult(str(cmd), "error", f"request {name} was removed before it had a result", id=name)
            result = read_result(last)
            if result is not None:
                return result
        if clock() >= deadline:
            waited = f"no result within {timeout:g} s"
            message = f"not run: {waited} (no leader took it); the request was withdrawn"
            cancelled = CommandResult(str(cmd), "error", message, id=name)
            if _withdraw(engine, last, result_labels(cancelled, clock(), "cancelled")):
                return cancelled
            message = f"{waited}; it was taken and runs once: see `docker config inspect {name}` for its result"
            return CommandResult(str(cmd), "error", message, id=name)
        sleep(poll)


def _withdraw(engine: EngineApi, config: SwarmConfig | None, labels: dict[str, str]) -> bool:
    """After the timeout: withdraw a request still pending, at its version (the leader may take it meanwhile).
    True when withdrawn: then it never runs."""
    if config is None or config.labels.get(COMMAND_STATE_LABEL, PENDING) != PENDING:
        return False
    try:
        engine.update_config_labels(config.id, config.version, labels)
    except EngineConflictError:
        return False  # taken meanwhile: it runs
    except OrcastraError as e:
        log.warning("could not withdraw %s: %s", config.name, e)
        return False
    return True
