"""What an agent reports (``GET /v1/report``) and what the controller serves about all of them
(``GET /v1/agents``): the wire format both sides share, as msgspec structs.

A report arrives over the network from a task the controller does not control: it is input. Every field has a
bound (strings a length, numbers a range, lists a size), so a decoded report is small and sane whatever was
sent; the body itself is capped (``MAX_REPORT_BYTES``) before it is decoded. Unknown fields are skipped, so an
agent of a newer release can report more than this controller knows. This module imports msgspec only: the
agent process imports it, and stays small.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

REPORT_PATH = "/v1/report"
AGENTS_PATH = "/v1/agents"
MAX_REPORT_BYTES = 16 * 1024
# The controller's answer lists every node; a few hundred bytes per node.
MAX_AGENTS_BYTES = 4 * 1024 * 1024

ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e11)]  # bounds reject inf and nan; 1e11 s is year 5138
Feature = Annotated[str, msgspec.Meta(max_length=64)]


class EngineContact(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's view of its node's Engine."""

    reachable: bool = False
    last_contact_at: Seconds | None = None  # epoch seconds of the last answer, None before the first
    api_version: ShortText = ""
    swarm_state: ShortText = ""  # Swarm.LocalNodeState: active, inactive, pending, error, locked
    error: ShortText = ""  # why the last contact failed, "" when it succeeded


class ProcessUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The agent process's own cost."""

    rss_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**48)] = 0
    cpu_seconds: Seconds = 0.0  # user + system since it started


class GcSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's last garbage collection run."""

    trigger: ShortText = ""  # schedule, threshold, command
    dry_run: bool = False
    finished_at: Seconds = 0.0
    removed: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    failed: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    freed_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**60)] = 0
    error: ShortText = ""


class AutohealSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent's autoheal did since it started."""

    restarts: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    swarm_left: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0  # unhealthy tasks left to Swarm
    given_up: Annotated[tuple[ShortText, ...], msgspec.Meta(max_length=20)] = ()  # containers, while given up


class ModsSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's last mod cache refresh."""

    trigger: ShortText = ""  # start, schedule, new-reference, command
    finished_at: Seconds = 0.0
    wanted: Annotated[int, msgspec.Meta(ge=0, le=10**6)] = 0
    hits: Annotated[int, msgspec.Meta(ge=0, le=10**6)] = 0
    fetched: Annotated[int, msgspec.Meta(ge=0, le=10**6)] = 0
    failed: Annotated[int, msgspec.Meta(ge=0, le=10**6)] = 0
    pruned: Annotated[int, msgspec.Meta(ge=0, le=10**6)] = 0
    bytes_fetched: Annotated[int, msgspec.Meta(ge=0, le=2**60)] = 0
    error: ShortText = ""


class LogrotateSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's last log rotation run, and the containers whose json-file logs have no ``max-size``."""

    trigger: ShortText = ""  # start, schedule
    finished_at: Seconds = 0.0
    rotated: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    error: ShortText = ""
    unbounded_logs: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0  # running containers, json-file, no max-size
    unbounded_examples: Annotated[tuple[ShortText, ...], msgspec.Meta(max_length=10)] = ()  # their names


class AgentReport(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/report`` of one agent."""

    node_id: ShortText = ""  # the Swarm node ID its Engine reported ("" until the Engine answered once)
    hostname: ShortText = ""  # its Engine's Name
    version: ShortText = ""  # Orcastra's version
    started_at: Seconds = 0.0
    uptime_seconds: Seconds = 0.0
    engine: EngineContact = msgspec.field(default_factory=EngineContact)
    process: ProcessUsage = msgspec.field(default_factory=ProcessUsage)
    features: Annotated[tuple[Feature, ...], msgspec.Meta(max_length=64)] = ()  # node features enabled
    gc: GcSummary | None = None  # None before the first run
    autoheal: AutohealSummary | None = None  # None when autoheal is off
    mods: ModsSummary | None = None  # None when the mod manager is off or before its first refresh
    logrotate: LogrotateSummary | None = None  # None before the first run (and when log rotation is off)
    facts_age_seconds: Seconds | None = None  # since a controller last handed over the Swarm's facts


class AgentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One node's row of ``GET /v1/agents``: where its agent task runs and what it last reported."""

    node_id: ShortText
    hostname: ShortText = ""
    task_state: ShortText = ""  # the task's state in the Swarm, "" when the node has no agent task
    address: ShortText = ""  # where the controller asks
    up: bool = False  # the last fetch succeeded
    checked_at: Seconds | None = None
    last_ok_at: Seconds | None = None
    error: ShortText = ""
    report: AgentReport | None = None


class AgentTable(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/agents``."""

    poll_interval_seconds: Seconds = 0.0
    agents: Annotated[tuple[AgentEntry, ...], msgspec.Meta(max_length=100_000)] = ()


_T = TypeVar("_T")

_REPORT = msgspec.json.Decoder(AgentReport)
_TABLE = msgspec.json.Decoder(AgentTable)


def decode_report(body: bytes) -> AgentReport:
    """An agent's answer -> its report. Raises ``ValueError`` naming what is wrong (too large, not JSON, a
    field out of bounds)."""
    return _decode(_REPORT, body, MAX_REPORT_BYTES)


def decode_table(body: bytes) -> AgentTable:
    """The controller's ``/v1/agents`` answer -> the table. Raises ``ValueError`` as ``decode_report``."""
    return _decode(_TABLE, body, MAX_AGENTS_BYTES)


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes, limit: int) -> _T:
    if len(body) > limit:
        raise ValueError(f"answer larger than {limit} bytes")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        raise ValueError(f"unexpected answer: {e}") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"answer is not valid JSON: {e}") from None


def encode(value: AgentReport | AgentTable) -> bytes:
    return msgspec.json.encode(value) + b"\n"
