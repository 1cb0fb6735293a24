"""The settings vocabulary every feature's config section is written in: the pydantic base model and the
field types (service names, hostnames, label keys and values, endpoints, paths, durations with their floors
and ceilings).

Every model forbids unknown keys, so a typo is an error instead of a silently ignored setting. Checks that
involve several fields (``cross_check``) run even when some other field of the same model is invalid, on
the raw values that already have the right type: pydantic skips "after" validators once any field failed,
which would hide problems until the first batch is fixed. Each check can report several problems, each
with its own field path. ``orcastra.config`` composes the features' sections into the whole configuration.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from orcastra.domain.labels import check_label_key, check_label_value
from orcastra.domain.wording import describe

ENDPOINT_SCHEMES = ("unix://", "tcp://", "ssh://")

# swarmkit manager/controlapi/common.go: `isValidDNSName`, the rule for service names
# (`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`); its validateAnnotations also caps them at 63 characters. A stack
# name becomes the `<stack>_` prefix of every service name in the stack, so the same rule applies to it.
# Written here so that each repetition starts with a separator: the same names, but Python's backtracking
# engine stays linear (swarmkit's own form takes exponential time on "aaaa...a!"; Go's RE2 does not).
SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9]+(?:[-_]+[A-Za-z0-9]+)*\Z")
SERVICE_NAME_MAX_CHARS = 63

Loc = tuple[str | int, ...]


def duplicates(items: list[str]) -> list[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for item in items:
        (twice if item in seen else seen).add(item)
    return sorted(twice)


_ERROR_TYPE = "orcastra"


def fail(message: str) -> PydanticCustomError:
    # The message goes through a context variable, so braces in it are never read as a template.
    return PydanticCustomError(_ERROR_TYPE, "{message}", {"message": message})


# --- field types ---------------------------------------------------------------------------------


def _check_service_name(name: str) -> str:
    if len(name) > SERVICE_NAME_MAX_CHARS:
        raise fail(f"{describe(name)} is longer than Swarm's limit of {SERVICE_NAME_MAX_CHARS} characters")
    if not SERVICE_NAME_RE.match(name):
        raise fail(
            f"{name!r} is not a valid Swarm service or stack name: use letters and digits, "
            "with '-' or '_' only between them"
        )
    return name


def _check_hostname(name: str) -> str:
    if name == "" or any(ch.isspace() for ch in name):
        raise fail(f"{name!r} is not a node hostname: it must be non-empty and without whitespace")
    return name


def _check_label_key(key: str) -> str:
    problem = check_label_key(key)
    if problem is not None:
        raise fail(problem)
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
        raise fail(f"expected a label value (a string, number or boolean), found {describe(value)}")
    return value


def _check_label_value(value: str) -> str:
    problem = check_label_value(value)
    if problem is not None:
        raise fail(problem)
    return value


def _check_endpoint(value: str) -> str:
    scheme = next((s for s in ENDPOINT_SCHEMES if value.startswith(s)), None)
    if scheme is None:
        raise fail(f"expected a Docker Engine endpoint starting with {', '.join(ENDPOINT_SCHEMES)}, found {value!r}")
    rest = value[len(scheme) :]
    if scheme == "unix://" and not rest.startswith("/"):
        raise fail(f"expected an absolute socket path after 'unix://' (unix:///path), found {value!r}")
    if rest == "" or any(ch.isspace() for ch in rest):
        raise fail(f"expected a host or socket path after {scheme!r}, found {value!r}")
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise fail(f"expected an IPv4 or IPv6 address, found {value!r}") from None


def _check_absolute(value: Path) -> Path:
    # The daemon's working directory is not the config file's directory; a relative path would
    # silently mean different files depending on how Orcastra was started.
    if "\0" in str(value):
        raise fail("the path contains a NUL character")  # no file can have such a name
    if not value.is_absolute():
        raise fail(f"expected an absolute path, found {str(value)!r}")
    return value


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or host == "":
        raise fail(f"expected 'host:port' (for example 127.0.0.1:9180 or [::1]:9180), found {value!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise fail(f"expected a port number from 1 to 65535 after the last ':', found {port!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise fail(f"expected an IPv6 address inside [...], found {host!r}") from None
    elif ":" in host:
        raise fail(f"an IPv6 address must be written in brackets ([{host}]:{port}), found {value!r}")
    elif any(ch.isspace() for ch in host):
        raise fail(f"expected a host name or IP address before ':', found {host!r}")
    return value


ServiceName = Annotated[str, AfterValidator(_check_service_name)]
Hostname = Annotated[str, AfterValidator(_check_hostname)]
LabelKey = Annotated[str, AfterValidator(_check_label_key)]
LabelValue = Annotated[str, BeforeValidator(_coerce_label_value), AfterValidator(_check_label_value)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
IpAddress = Annotated[str, AfterValidator(_check_ip)]
AbsolutePath = Annotated[Path, AfterValidator(_check_absolute)]
# Durations: every one has a floor (a period of 1e-9 s would spin a loop) and a ceiling (a timeout of 1e300 s
# overflows the clock arithmetic and the waits that use it). The per-setting bounds are in each model.
MINUTE_SECONDS = 60
HOUR_SECONDS = 3600
DAY_SECONDS = 86400
WEEK_SECONDS = 7 * DAY_SECONDS
YEAR_SECONDS = 365 * DAY_SECONDS
# How often a loop runs, or how long something may stay stale: from a second to a day.
IntervalSeconds = Annotated[float, Field(ge=1, le=DAY_SECONDS)]
# How long to wait before acting on a state that may still resolve itself (0: at once).
GraceSeconds = Annotated[float, Field(ge=0, le=DAY_SECONDS)]
# How long to leave something alone after acting on it.
CooldownSeconds = Annotated[float, Field(ge=0, le=WEEK_SECONDS)]
ListenAddress = Annotated[str, AfterValidator(_check_listen)]


class Section(BaseModel):
    """Base of every config model: immutable, unknown keys rejected, no NaN or infinity.

    ``hide_input_in_errors``: the text of a ``ValidationError`` (what a log shows) never carries a value,
    which may be a secret; ``orcastra.config`` words its own messages from the errors' details.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

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
    return [InitErrorDetails(type=fail(message), loc=loc, input=data) for loc, message in problems]


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
                copy = InitErrorDetails(type=fail(detail["msg"]), loc=detail["loc"], input=detail["input"])
        else:
            copy = InitErrorDetails(type=fail(detail["msg"]), loc=detail["loc"], input=detail["input"])
        carried.append(copy)
    return carried


def _validation_error(model: type[BaseModel], details: list[InitErrorDetails]) -> ValidationError:
    return ValidationError.from_exception_data(model.__name__, details)


def number(value: object) -> float | None:
    """``value`` if it already is a real number (bools are not), else None: the cross check skips it (an
    integer too large for a float too: the field's own check reports it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def service_name(short: str, stack: str | None) -> str:
    """``<stack>_<short>`` as ``docker stack deploy`` names services, or ``short`` without a stack."""
    return f"{stack}_{short}" if stack else short
