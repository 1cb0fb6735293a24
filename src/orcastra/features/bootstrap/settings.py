"""The ``bootstrap:`` section: when to bootstrap and heal the Swarm, and the manager count to keep."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from orcastra.domain.fields import PositiveSeconds, Section, fail


class BootstrapSettings(Section):
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
            raise fail("expected 'once', 'loop' or 'off', found the boolean true (a bare on/yes/true)")
        if value == "watch":
            raise fail("the mode 'watch' is now called 'loop'; use mode: loop")
        return value

    @field_validator("manager_target")
    @classmethod
    def _odd(cls, value: int) -> int:
        # Raft needs a majority: an even number of managers tolerates no more failures than one fewer.
        if value % 2 == 0:
            raise fail(f"expected an odd number of managers (1, 3, 5, 7), found {value}")
        return value
