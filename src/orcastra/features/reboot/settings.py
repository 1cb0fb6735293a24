"""The ``reboot:`` section of ``orcastra.yml``: the reboot and sentinel commands, the timeouts, the schedule."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NODE_PLACEHOLDER = "{node}"
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\Z")


def _check_clock(value: str) -> str:
    if not _CLOCK_RE.match(value):
        raise ValueError(f"{value!r} is not a time of day: expected HH:MM (24-hour, e.g. 02:00)")
    return value


def _check_template(value: str) -> str:
    if NODE_PLACEHOLDER not in value:
        raise ValueError(f"{value!r} must contain {NODE_PLACEHOLDER} (replaced by the node's hostname, shell-quoted)")
    return value


ClockTime = Annotated[str, AfterValidator(_check_clock)]
CommandTemplate = Annotated[str, AfterValidator(_check_template)]
# Every duration has a floor and a ceiling (see orcastra.domain.fields; this section keeps its own base model).
_DAY_SECONDS = 86400
StepTimeoutSeconds = Annotated[float, Field(ge=1, le=_DAY_SECONDS)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)


class RebootSchedule(_Section):
    """When scheduled reboots may run: local time, ``start`` <= now < ``end`` on one of ``days``. A window that
    crosses midnight (start 23:00, end 02:00) belongs to the day it starts on."""

    enabled: bool = False
    days: Annotated[list[Weekday], Field(min_length=1)] = Field(default_factory=lambda: list(WEEKDAYS))
    start: ClockTime = "02:00"
    end: ClockTime = "05:00"
    check_interval_seconds: Annotated[float, Field(ge=1, le=_DAY_SECONDS)] = 300.0

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError(f"schedule start and end are both {self.start}: the window would be empty")
        return self


class RebootSettings(_Section):
    """How Orcastra reboots a node. Commands are shell templates from the config (never from input): ``{node}``
    becomes the node's hostname, shell-quoted."""

    command: CommandTemplate | None = None  # e.g. "ssh {node} sudo systemctl reboot"
    node_commands: dict[str, CommandTemplate] = Field(default_factory=dict)  # per-node override of ``command``
    sentinel_command: CommandTemplate | None = None  # exit 0 = reboot required
    lock_ttl_seconds: Annotated[float, Field(ge=1, le=7 * _DAY_SECONDS)] = 1800.0
    drain_timeout_seconds: StepTimeoutSeconds = 300.0
    command_timeout_seconds: StepTimeoutSeconds = 120.0
    ready_timeout_seconds: StepTimeoutSeconds = 600.0
    # A poll is one Engine call; 0.01 s is the floor only because tests drive this with a fake clock.
    poll_interval_seconds: Annotated[float, Field(ge=0.01, le=3600)] = 2.0
    schedule: RebootSchedule = Field(default_factory=RebootSchedule)

    @model_validator(mode="after")
    def _ttl_covers_the_steps(self) -> Self:
        steps = self.drain_timeout_seconds + self.command_timeout_seconds + self.ready_timeout_seconds
        if self.lock_ttl_seconds < steps:
            raise ValueError(
                f"lock_ttl_seconds ({self.lock_ttl_seconds:g}) must cover drain + command + ready timeouts "
                f"({steps:g}): a lock that expires mid-reboot would let a second node go down"
            )
        if self.schedule.enabled and (self.sentinel_command is None or self.command is None):
            raise ValueError("schedule.enabled needs both command and sentinel_command")
        return self

    def command_for(self, hostname: str) -> str | None:
        return self.node_commands.get(hostname, self.command)
