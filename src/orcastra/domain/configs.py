"""Swarm configs as Orcastra reads them: the immutable object behind a command request kept in the Swarm.

A config lives in the Swarm's Raft store, so every manager answers for it. Its ``data`` never changes after it is
created; only its labels can be updated, at its ``version`` (``POST /configs/{id}/update?version=``), which is
what makes a label write a compare-and-set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orcastra.domain.snapshot import EMPTY_LABELS


@dataclass(frozen=True)
class SwarmConfig:
    """One config (GET /configs): ``data`` is the decoded Spec.Data, ``created_at`` epoch seconds."""

    id: str
    version: int
    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    data: bytes = b""
    created_at: float = 0.0
