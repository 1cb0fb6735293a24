"""The ``agent:`` section: where the agent listens, how often it checks its node's Engine, how often the
controller asks each agent for its report."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from orcastra.domain.fields import HOUR_SECONDS, Endpoint, ListenAddress, Section, fail

DEFAULT_AGENT_LISTEN = "0.0.0.0:9181"


class AgentSettings(Section):
    """The node agent (``orcastra agent``, one task per node) and the controller's polling of its reports."""

    # The agent's HTTP listener (/healthz, /v1/report, /metrics). Nothing is published: the controller reaches
    # it over the stack's overlay network on this port.
    listen: ListenAddress = DEFAULT_AGENT_LISTEN
    # The node's own Engine; default DOCKER_HOST, else the local socket. unix:// or plain tcp:// only (the
    # agent speaks to the socket mounted into its container; no TLS, no ssh: the agent runs on its node).
    docker_host: Endpoint | None = None
    # How often the agent asks its Engine (GET /info) while it answers; after a failure it retries sooner
    # (1 s, doubling up to this interval).
    engine_check_interval_seconds: Annotated[float, Field(ge=0.1, le=HOUR_SECONDS)] = 15.0
    # /healthz answers 503 once the Engine has not answered for this long (a dockerd restart takes seconds).
    engine_unreachable_after_seconds: Annotated[float, Field(ge=0.1, le=HOUR_SECONDS)] = 60.0
    # How often the controller fetches every agent's /v1/report, and how long it waits for one.
    report_poll_interval_seconds: Annotated[float, Field(ge=1, le=HOUR_SECONDS)] = 30.0
    report_timeout_seconds: Annotated[float, Field(ge=0.1, le=60)] = 2.0

    @field_validator("docker_host")
    @classmethod
    def _local_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("unix://", "tcp://")):
            raise fail(f"the agent speaks to its own node's Engine: expected unix:// or tcp://, found {value!r}")
        return value
