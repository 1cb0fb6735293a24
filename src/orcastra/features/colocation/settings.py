"""The ``anchors:`` section: each anchor service and the services that follow it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from orcastra.domain.fields import DAY_SECONDS, Section, ServiceName, duplicates, fail

DEFAULT_RETRY_INTERVALS_SECONDS = (2.0, 10.0, 60.0, 300.0, 900.0)
# An anchor task still on its way (pending, preparing: image pulls take time) counts as failed after this.
PENDING_GRACE_SECONDS = 30.0
# A dependent still on the wrong node this long after its anchor started gets a forced update.
MISPLACED_GRACE_SECONDS = 20.0

# Not below a second: each retry restarts the anchor's service, and a faster storm helps nobody.
RetryIntervals = Annotated[list[Annotated[float, Field(ge=1, le=DAY_SECONDS)]], Field(min_length=1)]


class AnchorSettings(Section):
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
            raise fail("give the dependent services as 'dependents' or as 'services' (legacy), not both")
        return data

    @field_validator("dependents")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = duplicates(value)
        if twice:
            raise fail(f"{', '.join(repr(n) for n in twice)} listed more than once")
        return value

    @field_validator("retry_intervals")
    @classmethod
    def _non_decreasing(cls, value: list[float]) -> list[float]:
        for i in range(1, len(value)):
            if value[i] < value[i - 1]:
                raise fail(
                    f"retry intervals must not decrease, but [{i}] = {value[i]:g} comes after "
                    f"[{i - 1}] = {value[i - 1]:g}"
                )
        return value
