"""The ``labels:`` section: how Orcastra manages the static node labels declared under ``nodes:``."""

from __future__ import annotations

from orcastra.domain.fields import Section


class LabelSettings(Section):
    """How Orcastra manages node labels."""

    prune: bool = False
