"""Swarm placement constraints evaluated against a snapshot node, the way swarmkit's scheduler does.

Used by planners that pick a node for a service themselves (the rebalancer) and must never pick one the
Swarm scheduler would refuse. Semantics follow swarmkit ``manager/constraint/constraint.go``:

- an expression is ``key == value`` or ``key != value``; ``==`` is looked for first, spaces around the key
  and the value are ignored;
- the attribute names (``node.hostname``, the ``node.labels.`` prefix...) are case-insensitive, the label
  key after the prefix is case-sensitive;
- every value comparison is case-insensitive (Go ``strings.EqualFold``), label values included;
- a missing label compares as the empty string, so ``node.labels.ssd != true`` holds on a node without it;
- ``node.ip`` takes an address or a CIDR network, a malformed one matches no node;
- an unknown attribute matches no node (swarmkit accepts the service and leaves its tasks pending).

``engine.labels.*`` and ``node.platform.*`` are real constraints, but the snapshot does not carry the
engine labels or the platform, so they evaluate to ``None``: unknown, which callers must treat as
"cannot verify: do not target this node". Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from orcastra.domain.snapshot import Node

NODE_LABEL_PREFIX = "node.labels."
ENGINE_LABEL_PREFIX = "engine.labels."
# swarmkit tries the operators in this order: "a==b" is never read as "a=" != ... and vice versa.
OPERATORS = ("==", "!=")
UNKNOWN_KEYS = frozenset({"node.platform.os", "node.platform.arch"})


@dataclass(frozen=True)
class Constraint:
    """One parsed expression: ``key`` as written (trimmed), ``equal`` for ``==``, ``value`` trimmed."""

    key: str
    equal: bool
    value: str


@lru_cache(maxsize=4096)
def has_constraint(constraints: Sequence[str], wanted: str) -> bool:
    """Whether ``wanted`` is among ``constraints``, ignoring spaces (``a == b`` is ``a==b`` to Swarm)."""
    key = "".join(wanted.split())
    return any("".join(c.split()) == key for c in constraints)


def parse_constraint(expression: str) -> Constraint | None:
    """``"node.labels.zone == eu"`` -> Constraint; None when it has no operator or an empty key.

    Cached: a planner evaluates the same few expressions against hundreds of nodes.
    """
    for op in OPERATORS:
        if op in expression:
            key, _, value = expression.partition(op)
            key = key.strip()
            if not key:
                return None
            return Constraint(key=key, equal=op == "==", value=value.strip())
    return None


def _matches(c: Constraint, actual: str) -> bool:
    same = c.value.casefold() == actual.casefold()
    return same if c.equal else not same


def _ip_matches(c: Constraint, addr: str) -> bool:
    try:
        node_ip = ipaddress.ip_address(addr)
    except ValueError:
        node_ip = None
    try:
        network = ipaddress.ip_network(c.value, strict=False)
    except ValueError:
        return False  # swarmkit: a malformed address or network matches no node
    within = node_ip is not None and node_ip.version == network.version and node_ip in network
    return within if c.equal else not within


def constraint_matches(constraint: str, node: Node) -> bool | None:
    """Whether ``node`` satisfies one placement constraint; None when the snapshot cannot tell."""
    c = parse_constraint(constraint)
    if c is None:
        return None  # the Engine rejects such a service; a planner must not guess what it meant
    key = c.key.casefold()
    if key == "node.id":
        return _matches(c, node.id)
    if key == "node.hostname":
        return _matches(c, node.hostname)
    if key == "node.role":
        return _matches(c, node.role)
    if key == "node.ip":
        return _ip_matches(c, node.addr)
    if key in UNKNOWN_KEYS:
        return None
    if len(key) > len(NODE_LABEL_PREFIX) and key.startswith(NODE_LABEL_PREFIX):
        label = c.key[len(NODE_LABEL_PREFIX) :]  # the label key itself is case-sensitive
        return _matches(c, node.labels.get(label, ""))
    if len(key) > len(ENGINE_LABEL_PREFIX) and key.startswith(ENGINE_LABEL_PREFIX):
        return None
    return False


def node_satisfies(constraints: Sequence[str], node: Node) -> bool | None:
    """All constraints hold (True), one fails (False), or none fails but one cannot be verified (None)."""
    unknown = False
    for constraint in constraints:
        result = constraint_matches(constraint, node)
        if result is False:
            return False
        if result is None:
            unknown = True
    return None if unknown else True
