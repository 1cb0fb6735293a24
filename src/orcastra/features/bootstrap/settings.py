"""The ``bootstrap:`` section: when to bootstrap and heal the Swarm, and the manager count to keep."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from orcastra.domain.fields import MINUTE_SECONDS, YEAR_SECONDS, IntervalSeconds, Section, fail

# In watch mode, node events start a bootstrap/heal cycle no more often than this (a flapping node, or a
# burst of node updates, is one cycle).
WATCH_MIN_GAP_SECONDS = 10.0
# Raft tolerates (n - 1) / 2 failed managers; Docker advises at most 7, and more only slows consensus.
MAX_MANAGERS = 99


class BootstrapSettings(Section):
    """Swarm bootstrap and healing: init the Swarm, join inventory nodes, keep the manager count."""

    # once: at start; loop: every loop_interval_seconds; watch (the earlier tool's default): loop, and also soon
    # after a node event (a node went down, came back, joined or left), at most every WATCH_MIN_GAP_SECONDS.
    mode: Literal["once", "loop", "watch", "off"] = "off"
    loop_interval_seconds: IntervalSeconds = 300.0
    manager_target: Annotated[int, Field(ge=1, le=MAX_MANAGERS)] = 3
    # Remove nodes Down longer than this from the Swarm (None: never remove). Not below a minute: a node
    # that reboots is Down for a while, and removing it would make it rejoin as a new node.
    remove_down_after_seconds: Annotated[float, Field(ge=MINUTE_SECONDS, le=YEAR_SECONDS)] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_words(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false; that can only have meant "off".
        if value is False:
            return "off"
        if value is True:
            raise fail("expected 'once', 'loop', 'watch' or 'off', found the boolean true (a bare on/yes/true)")
        return value

    @field_validator("manager_target")
    @classmethod
    def _odd(cls, value: int) -> int:
        # Raft needs a majority: an even number of managers tolerates no more failures than one fewer.
        if value % 2 == 0:
            raise fail(f"expected an odd number of managers (1, 3, 5, 7), found {value}")
        return value
