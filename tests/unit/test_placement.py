"""Table tests of the placement-constraint evaluator against swarmkit's rules (manager/constraint)."""

from __future__ import annotations

import pytest

from orcastra.domain.placement import constraint_matches, node_satisfies, parse_constraint
from orcastra.domain.snapshot import Node, frozen_labels

NODE = Node(
    id="abc123", version=1, hostname="node-1", role="manager", availability="active", state="ready",
    addr="10.0.0.5", labels=frozen_labels({"zone": "eu", "disk": "SSD", "orcastra.anchor.app_db": "true"}),
)  # fmt: skip

CASES = [
    ("hostname-equal", "node.hostname==node-1", True),
    ("hostname-not-equal", "node.hostname!=node-1", False),
    ("hostname-other", "node.hostname==node-2", False),
    ("spaces-tolerated", "  node.hostname  ==  node-1 ", True),
    ("key-case-insensitive", "NODE.Hostname==node-1", True),
    ("value-case-insensitive", "node.hostname==NODE-1", True),
    ("id", "node.id==abc123", True),
    ("role", "node.role==manager", True),
    ("role-not", "node.role!=manager", False),
    ("role-worker", "node.role==worker", False),
    ("label-equal", "node.labels.zone==eu", True),
    ("label-value-case-insensitive", "node.labels.disk==ssd", True),
    ("label-prefix-case-insensitive", "Node.Labels.zone==eu", True),
    ("label-key-case-sensitive", "node.labels.Zone==eu", False),
    ("label-missing-equal", "node.labels.gpu==true", False),
    ("label-missing-not-equal", "node.labels.gpu!=true", True),
    ("label-dotted-key", "node.labels.orcastra.anchor.app_db==true", True),
    ("label-not-equal", "node.labels.zone!=eu", False),
    ("ip-equal", "node.ip==10.0.0.5", True),
    ("ip-cidr", "node.ip==10.0.0.0/24", True),
    ("ip-cidr-not", "node.ip!=10.0.0.0/24", False),
    ("ip-other-net", "node.ip==192.168.0.0/16", False),
    ("ip-malformed", "node.ip==not-an-ip", False),
    ("engine-label-unknown", "engine.labels.os==linux", None),
    ("platform-os-unknown", "node.platform.os==linux", None),
    ("platform-arch-unknown", "node.platform.arch!=x86_64", None),
    ("unknown-attribute", "node.colour==blue", False),
    ("no-operator", "node.hostname=node-1", None),
    ("empty-key", "==node-1", None),
]


@pytest.mark.parametrize(("constraint", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_constraint_matches(constraint: str, expected: bool | None) -> None:
    assert constraint_matches(constraint, NODE) is expected


SETS = [
    ("none", (), True),
    ("all-hold", ("node.role==manager", "node.labels.zone==eu"), True),
    ("one-fails", ("node.role==manager", "node.labels.zone==us"), False),
    ("unknown-only", ("node.role==manager", "engine.labels.os==linux"), None),
    ("fail-beats-unknown", ("engine.labels.os==linux", "node.hostname==other"), False),
]


@pytest.mark.parametrize(("constraints", "expected"), [c[1:] for c in SETS], ids=[c[0] for c in SETS])
def test_node_satisfies(constraints: tuple[str, ...], expected: bool | None) -> None:
    assert node_satisfies(constraints, NODE) is expected


def test_equal_operator_is_found_first() -> None:
    # swarmkit looks for "==" before "!=": "a!=b==c" is the key "a!=b" compared with "c".
    c = parse_constraint("a!=b==c")
    assert c is not None
    assert (c.key, c.equal, c.value) == ("a!=b", True, "c")
