"""The configuration schema: frozen pydantic models, one per section of ``orcastra.yml``.

Every model forbids unknown keys, so a typo is an error instead of a silently ignored setting. Checks that
involve several fields (``cross_check``) run even when some other field of the same model is invalid, on
the raw values that already have the right type: pydantic skips "after" validators once any field failed,
which would hide problems until the first batch is fixed. Each check can report several problems, each
with its own field path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from orcastra.config.labels import check_label_key, check_label_value
from orcastra.config.wording import describe
from orcastra.reboot.settings import RebootSettings

DEFAULT_COMMAND_FILE = Path("/etc/orcastra/commands.yml")
DEFAULT_LOG_FILE = Path("/var/log/orcastra/orcastra.log")
DEFAULT_RETRY_INTERVALS_SECONDS = (2.0, 10.0, 60.0, 300.0, 900.0)
ENDPOINT_SCHEMES = ("unix://", "tcp://", "ssh://")

# swarmkit manager/controlapi/common.go: `isValidDNSName`, the rule for service names; its
# validateAnnotations also caps them at 63 characters. A stack name becomes the `<stack>_` prefix of
# every service name in the stack, so the same rule applies to it.
SERVICE_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*\Z")
SERVICE_NAME_MAX_CHARS = 63

Loc = tuple[str | int, ...]


def _duplicates(items: list[str]) -> list[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for item in items:
        (twice if item in seen else seen).add(item)
    return sorted(twice)


_ERROR_TYPE = "orcastra"


def _fail(message: str) -> PydanticCustomError:
    # The message goes through a context variable, so braces in it are never read as a template.
    return PydanticCustomError(_ERROR_TYPE, "{message}", {"message": message})


# --- field types ---------------------------------------------------------------------------------


def _check_service_name(name: str) -> str:
    if not SERVICE_NAME_RE.match(name):
        raise _fail(
            f"{name!r} is not a valid Swarm service or stack name: use letters and digits, "
            "with '-' or '_' only between them"
        )
    if len(name) > SERVICE_NAME_MAX_CHARS:
        raise _fail(f"{name!r} is longer than Swarm's limit of {SERVICE_NAME_MAX_CHARS} characters")
    return name


def _check_hostname(name: str) -> str:
    if name == "" or any(ch.isspace() for ch in name):
        raise _fail(f"{name!r} is not a node hostname: it must be non-empty and without whitespace")
    return name


def _check_label_key(key: str) -> str:
    problem = check_label_key(key)
    if problem is not None:
        raise _fail(problem)
    return key


def _coerce_label_value(value: object) -> object:
    # YAML turns `ssd: true` or `rack: 3` into a bool or a number; a node label is always a string.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, list | dict):
        raise _fail(f"expected a label value (a string, number or boolean), found {describe(value)}")
    return value


def _check_label_value(value: str) -> str:
    problem = check_label_value(value)
    if problem is not None:
        raise _fail(problem)
    return value


def _check_endpoint(value: str) -> str:
    scheme = next((s for s in ENDPOINT_SCHEMES if value.startswith(s)), None)
    if scheme is None:
        raise _fail(f"expected a Docker Engine endpoint starting with {', '.join(ENDPOINT_SCHEMES)}, found {value!r}")
    rest = value[len(scheme) :]
    if scheme == "unix://" and not rest.startswith("/"):
        raise _fail(f"expected an absolute socket path after 'unix://' (unix:///path), found {value!r}")
    if rest == "" or any(ch.isspace() for ch in rest):
        raise _fail(f"expected a host or socket path after {scheme!r}, found {value!r}")
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _fail(f"expected an IPv4 or IPv6 address, found {value!r}") from None


def _check_absolute(value: Path) -> Path:
    # The daemon's working directory is not the config file's directory; a relative path would
    # silently mean different files depending on how Orcastra was started.
    if not value.is_absolute():
        raise _fail(f"expected an absolute path, found {str(value)!r}")
    return value


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or host == "":
        raise _fail(f"expected 'host:port' (for example 127.0.0.1:9180 or [::1]:9180), found {value!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _fail(f"expected a port number from 1 to 65535 after the last ':', found {port!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(f"expected an IPv6 address inside [...], found {host!r}") from None
    elif ":" in host:
        raise _fail(f"an IPv6 address must be written in brackets ([{host}]:{port}), found {value!r}")
    elif any(ch.isspace() for ch in host):
        raise _fail(f"expected a host name or IP address before ':', found {host!r}")
    return value


ServiceName = Annotated[str, AfterValidator(_check_service_name)]
Hostname = Annotated[str, AfterValidator(_check_hostname)]
LabelKey = Annotated[str, AfterValidator(_check_label_key)]
LabelValue = Annotated[str, BeforeValidator(_coerce_label_value), AfterValidator(_check_label_value)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
IpAddress = Annotated[str, AfterValidator(_check_ip)]
AbsolutePath = Annotated[Path, AfterValidator(_check_absolute)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    """Base of every config model: immutable, unknown keys rejected, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cross_check_raw: ClassVar[bool] = False
    """True: ``cross_check`` always sees the raw input, which keeps the key names as the user wrote them."""

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        """Problems involving several fields, as ``(location inside this model, message)``.

        ``values`` are the validated fields, or the raw input when some field failed: a check must skip
        values that do not have the expected type yet (their own error is reported anyway).
        """
        del values
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _run_cross_check(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            model = handler(data)
        except ValidationError as e:
            extra = cls.cross_check(data) if isinstance(data, Mapping) else []
            if not extra:
                raise
            raise _validation_error(cls, [*_carried(e), *_details(data, extra)]) from None
        problems = cls.cross_check(data if cls.cross_check_raw and isinstance(data, Mapping) else dict(model))
        if problems:
            raise _validation_error(cls, _details(data, problems))
        return model


def _details(data: object, problems: list[tuple[Loc, str]]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=_fail(message), loc=loc, input=data) for loc, message in problems]


def _carried(error: ValidationError) -> list[InitErrorDetails]:
    """Re-raisable copies of ``error``'s line errors (custom ones must be rebuilt from their message)."""
    carried: list[InitErrorDetails] = []
    for detail in error.errors(include_url=False):
        copy = InitErrorDetails(
            type=detail["type"], loc=detail["loc"], input=detail["input"], ctx=detail.get("ctx", {})
        )
        if detail["type"] != _ERROR_TYPE:
            try:
                ValidationError.from_exception_data("check", [copy])
            except (KeyError, TypeError, ValueError):
                copy = InitErrorDetails(type=_fail(detail["msg"]), loc=detail["loc"], input=detail["input"])
        else:
            copy = InitErrorDetails(type=_fail(detail["msg"]), loc=detail["loc"], input=detail["input"])
        carried.append(copy)
    return carried


def _validation_error(model: type[BaseModel], details: list[InitErrorDetails]) -> ValidationError:
    return ValidationError.from_exception_data(model.__name__, details)


def _number(value: object) -> float | None:
    """``value`` if it already is a real number (bools are not), else None: the cross check skips it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- sections ------------------------------------------------------------------------------------


class TlsSettings(_Section):
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


class DockerSettings(_Section):
    """How to reach the Docker Engine of a Swarm manager."""

    host: Endpoint | None = None
    tls: TlsSettings | None = None
    timeout_seconds: PositiveSeconds = 30.0


class NodeSettings(_Section):
    """What Orcastra knows and manages about one Swarm node."""

    ip: IpAddress | None = None
    endpoint: Endpoint | None = None
    role: Literal["manager", "worker"] | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_list_or_map(cls, value: object) -> object:
        """Accept ``[ssd, zone-a]`` (each label set to "true") as well as ``{zone: a}``."""
        if isinstance(value, dict):
            return value
        if isinstance(value, list):
            not_names = [describe(item) for item in value if not isinstance(item, str)]
            if not_names:
                raise _fail(
                    "in the list form every item must be a label name, found "
                    + ", ".join(not_names)
                    + " (use the map form, key: value, to give values)"
                )
            twice = _duplicates(value)
            if twice:
                raise _fail(f"label {', '.join(repr(k) for k in twice)} listed more than once")
            return dict.fromkeys(value, "true")
        raise _fail(
            "expected a list of label names ([ssd, zone-a]) or a mapping of labels ({zone: a}), "
            f"found {describe(value)}"
        )


class LabelSettings(_Section):
    """How Orcastra manages node labels."""

    prune: bool = False


RetryIntervals = Annotated[list[PositiveSeconds], Field(min_length=1)]


class AnchorSettings(_Section):
    """An anchor service and the services that follow it to whichever node it runs on."""

    stack: ServiceName | None = None
    dependents: Annotated[list[ServiceName], Field(min_length=1)] = Field(
        validation_alias=AliasChoices("dependents", "services")
    )
    restart_dependents: bool | None = None
    retry_intervals: RetryIntervals = Field(default_factory=lambda: list(DEFAULT_RETRY_INTERVALS_SECONDS))

    @model_validator(mode="before")
    @classmethod
    def _not_both_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dependents" in data and "services" in data:
            raise _fail("give the dependent services as 'dependents' or as 'services' (legacy), not both")
        return data

    @field_validator("dependents")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = _duplicates(value)
        if twice:
            raise _fail(f"{', '.join(repr(n) for n in twice)} listed more than once")
        return value

    @field_validator("retry_intervals")
    @classmethod
    def _non_decreasing(cls, value: list[float]) -> list[float]:
        for i in range(1, len(value)):
            if value[i] < value[i - 1]:
                raise _fail(
                    f"retry intervals must not decrease, but [{i}] = {value[i]:g} comes after "
                    f"[{i - 1}] = {value[i - 1]:g}"
                )
        return value


class ReconcileSettings(_Section):
    """When reconcile cycles run and what they may do."""

    resync_interval_seconds: PositiveSeconds = 60.0
    event_mode: bool = True
    polling_mode: bool = True
    restart_dependents: bool = True
    # Debounce only gathers a burst of events into one cycle; it adds to every reaction, so keep it short.
    debounce_seconds: Annotated[float, Field(ge=0)] = 0.1
    # Managers emit no task events: a filtered GET /tasks of the anchors' tasks this often is how a moved
    # anchor is noticed within a second (one small call; node endpoints' container events make it look at once).
    task_poll_interval_seconds: PositiveSeconds = 0.5
    # An anchor task still on its way (pending, preparing: image pulls take time) counts as failed after this.
    pending_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    # A dependent still on the wrong node this long after its anchor started gets a forced update.
    misplaced_grace_seconds: Annotated[float, Field(ge=0)] = 20.0

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


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise _fail(f"expected an http:// or https:// URL, found {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class PrometheusSource(_Section):
    """Node (and optionally task) memory from a Prometheus server's HTTP API (instant queries)."""

    url: HttpUrl
    # node_exporter `instance` label -> Swarm node hostname (e.g. "10.0.0.5:9100": node1).
    instances: dict[str, Hostname] = Field(default_factory=dict)
    # Optional cAdvisor-style per-task memory: a query returning one series per container, with the label
    # below holding the Swarm service name (cAdvisor: container_label_com_docker_swarm_service_name).
    task_query: str | None = None
    task_service_label: str = "container_label_com_docker_swarm_service_name"
    task_node_label: str = "instance"
    timeout_seconds: PositiveSeconds = 5.0


class MemorySources(_Section):
    """Where memory numbers come from. Node memory: prometheus and/or node_exporter URLs. Task memory:
    Engine container stats through each node's endpoint (``nodes.<host>.endpoint``) and/or prometheus'
    task_query; service reservations/limits are the fallback estimate."""

    prometheus: PrometheusSource | None = None
    node_exporter: dict[Hostname, HttpUrl] = Field(default_factory=dict)
    engine_stats: bool = True
    timeout_seconds: PositiveSeconds = 5.0


class ServiceRebalance(_Section):
    """Per-service overrides (also settable by the service labels orcastra.rebalance / .preferred-node)."""

    rebalance: bool = True
    preferred_node: Hostname | None = None
    cooldown_seconds: Annotated[float, Field(ge=0)] | None = None


class RebalanceSettings(_Section):
    """Memory-pressure rebalancing: move groups off nodes that stay above `high`, to a chosen node."""

    enabled: bool = False
    high_percent: Annotated[float, Field(gt=0, le=100)] = 85.0
    target_percent: Annotated[float, Field(gt=0, le=100)] = 70.0
    sustained_seconds: Annotated[float, Field(ge=0)] = 600.0
    monitor_interval_seconds: PositiveSeconds = 30.0
    global_cooldown_seconds: Annotated[float, Field(ge=0)] = 600.0
    service_cooldown_seconds: Annotated[float, Field(ge=0)] = 1800.0
    max_moves_per_cycle: Annotated[int, Field(ge=1)] = 1
    max_moves_per_node: Annotated[int, Field(ge=1)] = 1
    # A group's measured memory is counted this much larger when checking that the target stays under
    # target_percent: measurements lag, and a process grows after a restart.
    safety_margin_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    stale_after_seconds: PositiveSeconds = 120.0
    move_timeout_seconds: PositiveSeconds = 120.0
    sources: MemorySources = Field(default_factory=MemorySources)
    services: dict[ServiceName, ServiceRebalance] = Field(default_factory=dict)

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        target = _number(values.get("target_percent", 70.0))
        high = _number(values.get("high_percent", 85.0))
        if target is not None and high is not None and not target < high:
            return [
                (
                    (),
                    f"target_percent ({target:g}) must be below high_percent ({high:g}): rebalancing "
                    "moves tasks until memory use drops to the target, which must be under the trigger",
                )
            ]
        return []


class BootstrapSettings(_Section):
    """Swarm bootstrap and healing: init the Swarm, join inventory nodes, keep the manager count."""

    mode: Literal["once", "loop", "off"] = "off"
    loop_interval_seconds: PositiveSeconds = 300.0
    manager_target: Annotated[int, Field(ge=1)] = 3
    # Remove nodes Down longer than this from the Swarm (None: never remove).
    remove_down_after_seconds: Annotated[float, Field(gt=0)] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_words(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false; that can only have meant "off".
        if value is False:
            return "off"
        if value is True:
            raise _fail("expected 'once', 'loop' or 'off', found the boolean true (a bare on/yes/true)")
        if value == "watch":
            raise _fail("the mode 'watch' is now called 'loop'; use mode: loop")
        return value

    @field_validator("manager_target")
    @classmethod
    def _odd(cls, value: int) -> int:
        # Raft needs a majority: an even number of managers tolerates no more failures than one fewer.
        if value % 2 == 0:
            raise _fail(f"expected an odd number of managers (1, 3, 5, 7), found {value}")
        return value


class LeaderElectionSettings(_Section):
    """Several Orcastra instances elect one leader through a lease kept in the Swarm (a 0-replica service)."""

    enabled: bool = True
    lease_name: ServiceName = "orcastra-leader"
    ttl_seconds: Annotated[float, Field(ge=3)] = 15.0


DEFAULT_RESULTS_MAX_BYTES = 1024 * 1024
DEFAULT_RESULTS_KEEP = 2


class CommandSettings(_Section):
    """Operator commands: the watched command file, and its results file (``<file>.results.jsonl``), which
    is rotated to ``.1``, ``.2``... once it grows past ``results_max_bytes``."""

    file: AbsolutePath = DEFAULT_COMMAND_FILE
    results_max_bytes: Annotated[int, Field(ge=4096)] = DEFAULT_RESULTS_MAX_BYTES
    results_keep: Annotated[int, Field(ge=1, le=100)] = DEFAULT_RESULTS_KEEP


class ApiSettings(_Section):
    """Orcastra's local HTTP API."""

    listen: Annotated[str, AfterValidator(_check_listen)] = "127.0.0.1:9180"
    token: SecretStr | None = None
    token_file: AbsolutePath | None = None

    @field_validator("token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip() == "":
            raise _fail("the token must not be empty (leave the key out to run without a token)")
        return value

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        if values.get("token") is not None and values.get("token_file") is not None:
            return [((), "give either token or token_file, not both")]
        return []


class RunSettings(_Section):
    """How the daemon runs."""

    dry_run: bool = False
    once: bool = False


class LoggingSettings(_Section):
    """Where and how Orcastra logs."""

    debug: bool = False
    file: AbsolutePath | None = None
    format: Literal["text", "json"] = "text"


class AuditSettings(_Section):
    """Where the audit trail of every change Orcastra makes goes."""

    path: AbsolutePath | None = None


# --- the whole configuration ---------------------------------------------------------------------


class Config(_Section):
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


def service_name(short: str, stack: str | None) -> str:
    """``<stack>_<short>`` as ``docker stack deploy`` names services, or ``short`` without a stack."""
    return f"{stack}_{short}" if stack else short


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
