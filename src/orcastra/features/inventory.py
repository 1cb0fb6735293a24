"""The ``nodes:`` section: every node Orcastra knows by hostname, with its static labels, address, Engine
endpoint and role. Static labels, bootstrap, memory sources and reboots read it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from orcastra.domain.fields import Endpoint, IpAddress, LabelKey, LabelValue, Section, duplicates, fail
from orcastra.domain.wording import describe


class NodeSettings(Section):
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
                raise fail(
                    "in the list form every item must be a label name, found "
                    + ", ".join(not_names)
                    + " (use the map form, key: value, to give values)"
                )
            twice = duplicates(value)
            if twice:
                raise fail(f"label {', '.join(repr(k) for k in twice)} listed more than once")
            return dict.fromkeys(value, "true")
        raise fail(
            "expected a list of label names ([ssd, zone-a]) or a mapping of labels ({zone: a}), "
            f"found {describe(value)}"
        )
