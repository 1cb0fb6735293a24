"""`orcastra status` names the leader from the lease service's labels (pure rendering, snapshots built here)."""

from __future__ import annotations

import json

import pytest

from orcastra.cli.render import leader_json, render_leader, render_status
from orcastra.domain.labels import LEASE_HOLDER_LABEL, LEASE_MARKER_LABEL, LEASE_RENEWED_LABEL
from orcastra.domain.snapshot import Service, Snapshot

NOW = 1_000_000.0


def _snapshot(labels: dict[str, str] | None) -> Snapshot:
    services = () if labels is None else (Service(id="l", version=1, name="orcastra-leader", labels=labels),)
    return Snapshot(nodes=(), services=services, tasks=(), taken_at=NOW)


@pytest.mark.parametrize(
    ("labels", "state", "line"),
    [
        (None, "absent", "Leader: none (no lease service orcastra-leader"),
        (
            {LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: "orcastra-node2:1:ab", LEASE_RENEWED_LABEL: f"{NOW - 3}"},
            "held",
            "Leader: orcastra-node2:1:ab (lease orcastra-leader, renewed 3 s ago)",
        ),
        (
            {LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: "x", LEASE_RENEWED_LABEL: f"{NOW - 60}"},
            "expired",
            "Leader: none (x expired the lease, renewed 60 s ago)",
        ),
        ({LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: ""}, "released", "Leader: none (the last holder released"),
        # Values read from the Swarm are input: a holder that is not text for a terminal, a renewed that is no number.
        ({LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: "a\x1b[2Jb", LEASE_RENEWED_LABEL: "soon"}, "expired", "a\\x"),
    ],
)
def test_leader_from_lease_labels(labels: dict[str, str] | None, state: str, line: str) -> None:
    leader = leader_json(_snapshot(labels), "orcastra-leader", 15.0)
    assert leader["state"] == state
    assert line in render_leader(leader)
    assert "\x1b" not in render_leader(leader)


def test_status_shows_leader_first_and_in_json() -> None:
    snap = _snapshot({LEASE_MARKER_LABEL: "true", LEASE_HOLDER_LABEL: "h", LEASE_RENEWED_LABEL: f"{NOW}"})
    leader = leader_json(snap, "orcastra-leader", 15.0)
    assert render_status(snap, [], as_json=False, leader=leader).startswith("Leader: h ")
    assert json.loads(render_status(snap, [], as_json=True, leader=leader))["leader"]["holder"] == "h"
