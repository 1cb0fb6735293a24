"""Rules for node label keys and values, shared by the config schema and the label controller.

Orcastra writes node labels so that services can pin themselves with placement constraints such as
``node.labels.zone==a``. A label that the constraint parser rejects is useless (or worse: a service that
names it can never be scheduled), so the config refuses such keys and values up front.

The rules are swarmkit's, from ``manager/constraint/constraint.go``::

    alphaNumeric = regexp.MustCompile(`^(?i)[a-z_][a-z0-9\\-_.]+$`)
    valuePattern = regexp.MustCompile(`^(?i)[a-z0-9:\\-_\\s\\.\\*\\(\\)\\?\\+\\[\\]\\\\\\^\\$\\|\\/]+$`)

``alphaNumeric`` is matched against the whole constraint key, ``node.labels.KEY``. The prefix already
supplies the leading letter, so the label key itself may be any non-empty run of ASCII letters, digits,
``_``, ``-`` and ``.`` (a leading digit is fine: ``node.labels.1a`` matches). The parser trims spaces around
the value before matching, so a value with leading or trailing whitespace can never be matched; Orcastra
rejects it. ``\\s`` in Go's RE2 is ``[\\t\\n\\f\\r ]``, spelled out below because Python's ``\\s`` is wider.
"""

from __future__ import annotations

import re

ORCASTRA_LABEL_PREFIX = "orcastra."
"""Node label keys under this prefix belong to Orcastra itself and cannot be configured."""

OWNED_LABELS_KEY = "orcastra.owned-labels"
"""Node label in which Orcastra records (comma-separated) the keys it set, so it never touches others."""

LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+\Z")
"""A node label key usable as ``node.labels.KEY`` in a Swarm placement constraint (anchored both ends)."""

LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9:\-_\t\n\f\r .*()?+\[\]\\^$|/]+\Z")
"""A node label value usable on the right of ``==`` in a Swarm placement constraint."""

_ALLOWED_KEY_CHARS = "ASCII letters, digits, '_', '-' and '.'"
_ALLOWED_VALUE_CHARS = "ASCII letters, digits, spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /"


def check_label_key(key: str) -> str | None:
    """Say what is wrong with a node label key Orcastra would manage, or return None if it is usable."""
    if key == "":
        return "a label key must not be empty"
    if any(ch.isspace() for ch in key):
        return (
            f"label key {key!r} contains whitespace; Swarm placement constraints "
            f"(node.labels.KEY==VALUE) accept only {_ALLOWED_KEY_CHARS} in KEY"
        )
    if "=" in key:
        return (
            f"label key {key!r} contains '='; write key and value in map form "
            f"(for example {{zone: a}}) instead of 'zone=a'"
        )
    if not LABEL_KEY_RE.match(key):
        bad = sorted({ch for ch in key if not re.match(r"[A-Za-z0-9_.-]", ch)})
        return (
            f"label key {key!r} contains {', '.join(repr(ch) for ch in bad)}; Swarm placement "
            f"constraints (node.labels.KEY==VALUE) accept only {_ALLOWED_KEY_CHARS} in KEY"
        )
    # Case-insensitive on purpose: an "Orcastra." key would look like ours to a person reading labels.
    if key.lower().startswith(ORCASTRA_LABEL_PREFIX):
        return (
            f"label key {key!r} is reserved: keys starting with {ORCASTRA_LABEL_PREFIX!r} "
            "are Orcastra's own bookkeeping labels"
        )
    return None


def check_label_value(value: str) -> str | None:
    """Say what is wrong with a node label value, or return None if a constraint can match it."""
    if value == "":
        return (
            "a label value must not be empty: Swarm cannot match an empty value in a placement "
            "constraint (use the list form to get the value 'true')"
        )
    if value != value.strip():
        return (
            f"label value {value!r} starts or ends with whitespace, which Swarm strips from "
            "placement constraints, so no constraint could match it"
        )
    if not LABEL_VALUE_RE.match(value):
        bad = sorted({ch for ch in value if not LABEL_VALUE_RE.match(ch)})
        return (
            f"label value {value!r} contains {', '.join(repr(ch) for ch in bad)}; Swarm placement "
            f"constraints accept only {_ALLOWED_VALUE_CHARS} in a value"
        )
    return None
