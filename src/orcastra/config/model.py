"""The configuration schema: frozen pydantic models, one per section of ``orcastra.yml``.

Every model forbids unknown keys, so a typo is an error instead of a silently ignored setting. Checks that
involve several fields (``cross_check``) run even when some other field of the same model is invalid, on
the raw values that already have the right type: pydantic skips "after" validators once any field failed,
which would hide problems until the first batch is fixed. Each check can report several problems, each
with its own field path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from orcastra.domain.fields import (
    HOUR_SECONDS,
    SERVICE_NAME_MAX_CHARS,
    AbsolutePath,
    Endpoint,
    GraceSeconds,
    Hostname,
    IntervalSeconds,
    ListenAddress,
    Loc,
    Section,
    ServiceName,
    fail,
    service_name,
)
from orcastra.features.agents.settings import AgentSettings
from orcastra.features.bootstrap.settings import BootstrapSettings
from orcastra.features.colocation.settings import MISPLACED_GRACE_SECONDS, PENDING_GRACE_SECONDS, AnchorSettings
from orcastra.features.hygiene.settings import HygieneSettings
from orcastra.features.inventory import NodeSettings
from orcastra.features.mods.settings import ModsSettings
from orcastra.features.rebalance.settings import RebalanceSettings
from orcastra.features.reboot.settings import RebootSettings
from orcastra.features.static_labels.settings import LabelSettings

DEFAULT_COMMAND_FILE = Path("/etc/orcastra/commands.yml")
DEFAULT_LOG_FILE = Path("/var/log/orcastra/orcastra.log")
# Debounce delays every reaction by this much; past a minute it only hides events.
MAX_DEBOUNCE_SECONDS = 60.0


# --- sections ------------------------------------------------------------------------------------


class TlsSettings(Section):
    """TLS material for a ``tcp://`` Docker endpoint."""

    ca_cert: AbsolutePath | None = None
    client_cert: AbsolutePath | None = None
    client_key: AbsolutePath | None = None
    verify: bool = True

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        if (values.get("client_cert") is None) != (values.get("client_key") is None):
            return [((), "client_cert and client_key must be given together (or neither)")]
        return []


class DockerSettings(Section):
    """How to reach the Docker Engine of a Swarm manager."""

    host: Endpoint | None = None
    tls: TlsSettings | None = None
    timeout_seconds: Annotated[float, Field(ge=1, le=HOUR_SECONDS)] = 30.0


class ReconcileSettings(Section):
    """When reconcile cycles run and what they may do."""

    resync_interval_seconds: IntervalSeconds = 60.0
    event_mode: bool = True
    polling_mode: bool = True
    restart_dependents: bool = True
    # Debounce only gathers a burst of events into one cycle; it adds to every reaction, so keep it short.
    debounce_seconds: Annotated[float, Field(ge=0, le=MAX_DEBOUNCE_SECONDS)] = 0.1
    # Managers emit no task events: a filtered GET /tasks of the anchors' tasks this often is how a moved
    # anchor is noticed within a second (one small call; node endpoints' container events make it look at once).
    # Not below 0.05 s: the poll is one Engine call, and a tighter loop would only load the manager.
    task_poll_interval_seconds: Annotated[float, Field(ge=0.05, le=HOUR_SECONDS)] = 0.5
    pending_grace_seconds: GraceSeconds = PENDING_GRACE_SECONDS
    misplaced_grace_seconds: GraceSeconds = MISPLACED_GRACE_SECONDS

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        if values.get("event_mode", True) is False and values.get("polling_mode", True) is False:
            return [
                (
                    (),
                    "event_mode and polling_mode are both false, so nothing would ever trigger a "
                    "reconcile cycle; enable at least one",
                )
            ]
        return []


class LeaderElectionSettings(Section):
    """Several Orcastra instances elect one leader through a lease kept in the Swarm (a 0-replica service)."""

    enabled: bool = True
    lease_name: ServiceName = "orcastra-leader"
    ttl_seconds: Annotated[float, Field(ge=3, le=HOUR_SECONDS)] = 15.0


DEFAULT_RESULTS_MAX_BYTES = 1024 * 1024
MAX_RESULTS_BYTES = 1024**3
DEFAULT_RESULTS_KEEP = 2


class CommandSettings(Section):
    """Operator commands: the watched command file, and its results file (``<file>.results.jsonl``), which
    is rotated to ``.1``, ``.2``... once it grows past ``results_max_bytes``."""

    file: AbsolutePath = DEFAULT_COMMAND_FILE
    results_max_bytes: Annotated[int, Field(ge=4096, le=MAX_RESULTS_BYTES)] = DEFAULT_RESULTS_MAX_BYTES
    results_keep: Annotated[int, Field(ge=1, le=100)] = DEFAULT_RESULTS_KEEP


class ApiSettings(Section):
    """Orcastra's local HTTP API."""

    listen: ListenAddress = "127.0.0.1:9180"
    token: SecretStr | None = None
    token_file: AbsolutePath | None = None

    @field_validator("token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip() == "":
            raise fail("the token must not be empty (leave the key out to run without a token)")
        return value

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        if values.get("token") is not None and values.get("token_file") is not None:
            return [((), "give either token or token_file, not both")]
        return []


class RunSettings(Section):
    """How the daemon runs."""

    dry_run: bool = False
    once: bool = False


class LoggingSettings(Section):
    """Where and how Orcastra logs."""

    debug: bool = False
    file: AbsolutePath | None = None
    format: Literal["text", "json"] = "text"


class AuditSettings(Section):
    """Where the audit trail of every change Orcastra makes goes."""

    path: AbsolutePath | None = None


# --- the whole configuration ---------------------------------------------------------------------


class Config(Section):
    """The complete, validated Orcastra configuration."""

    stack: ServiceName | None = None
    docker: DockerSettings = Field(default_factory=DockerSettings)
    nodes: dict[Hostname, NodeSettings] = Field(default_factory=dict)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    anchors: dict[ServiceName, AnchorSettings] = Field(default_factory=dict)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    rebalance: RebalanceSettings = Field(default_factory=RebalanceSettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    reboot: RebootSettings = Field(default_factory=RebootSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    hygiene: HygieneSettings = Field(default_factory=HygieneSettings)
    mods: ModsSettings = Field(default_factory=ModsSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    # Report `anchors.db.services[0]` when the file says `services` (the legacy name of `dependents`).
    cross_check_raw: ClassVar[bool] = True

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        """No service follows two anchors and no anchor follows another: placement would be ambiguous.

        Services are compared by full Swarm name, so ``db`` in two different stacks are two services.
        """
        default_stack = values.get("stack")
        if not isinstance(default_stack, str | None):
            default_stack = None
        anchors = values.get("anchors")
        if not isinstance(anchors, Mapping):
            return []
        views = {name: view for name, a in anchors.items() if (view := _anchor_view(name, a)) is not None}

        def full(short: str, stack: str | None) -> str:
            return service_name(short, stack if stack is not None else default_stack)

        anchor_by_full = {full(name, view.stack): name for name, view in views.items()}
        follower_of: dict[str, str] = {}
        problems: list[tuple[Loc, str]] = []
        for name, view in views.items():
            own = full(name, view.stack)
            for i, short in view.dependents:
                loc: Loc = ("anchors", name, view.key, i)
                dep = full(short, view.stack)
                if dep == own:
                    problems.append((loc, f"anchor {name!r} cannot be its own dependent"))
                    continue
                if len(dep) > SERVICE_NAME_MAX_CHARS:
                    problems.append(
                        (loc, f"service name {dep!r} is longer than Swarm's {SERVICE_NAME_MAX_CHARS} characters")
                    )
                other = anchor_by_full.get(dep)
                if other is not None:
                    problems.append(
                        (
                            loc,
                            f"{short!r} is itself an anchor (anchors.{other}); anchors cannot be chained: "
                            f"list the services that must run with {name!r} under anchor {name!r} directly",
                        )
                    )
                first = follower_of.setdefault(dep, name)
                if first != name:
                    problems.append(
                        (
                            loc,
                            f"service {dep!r} is already a dependent of anchor {first!r}; a service can "
                            "follow only one anchor",
                        )
                    )
        return problems

    def service_name(self, short: str, stack: str | None = None) -> str:
        """Full Swarm service name of ``short``: ``<stack>_<short>``, with ``stack`` or else ``self.stack``.

        With neither, ``short`` already is the full service name.
        """
        return service_name(short, stack if stack is not None else self.stack)

    def fingerprint(self) -> str:
        """A stable hash of the whole content, secrets included, so hot reload can tell a change."""
        payload = json.dumps(_plain(self.model_dump()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class _AnchorView:
    """What the anchor cross check needs, from a validated ``AnchorSettings`` or from raw input."""

    stack: str | None
    key: str
    dependents: list[tuple[int, str]]


def _anchor_view(name: object, anchor: object) -> _AnchorView | None:
    if not isinstance(name, str):
        return None
    if isinstance(anchor, AnchorSettings):
        return _AnchorView(anchor.stack, "dependents", list(enumerate(anchor.dependents)))
    if not isinstance(anchor, Mapping):
        return None
    stack = anchor.get("stack")
    key = "services" if "services" in anchor and "dependents" not in anchor else "dependents"
    dependents = anchor.get(key)
    if not isinstance(stack, str | None) or not isinstance(dependents, list):
        return None
    return _AnchorView(stack, key, [(i, d) for i, d in enumerate(dependents) if isinstance(d, str)])


def _plain(value: object) -> object:
    """JSON-ready form of a model dump; unlike pydantic's JSON mode it keeps secret values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, PurePath):
        return str(value)
    return value
