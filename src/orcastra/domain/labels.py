"""Every ``orcastra.*`` label key Orcastra reads or writes, in one place, and the rules for node label keys and
values (shared by the config schema and the label controller).

Where each key lives and who writes it:

- node labels: ``orcastra.owned-labels`` (static labels' ownership record), ``orcastra.anchor.<service>``
  (colocation: the nodes where an anchor runs), ``orcastra.place.<service>`` (rebalancing pins);
- service labels written by Orcastra: ``orcastra.restart.*`` (colocation's restart backoff),
  ``orcastra.rebalance.moved-from/-to/-at`` and ``.move-state`` (the record of a rebalancing move, followed
  through by any leader), ``orcastra.lease.*`` (the
  leader lease's placeholder service);
- service labels written by users in stack files: ``orcastra.follow``, ``orcastra.restart-dependents``,
  ``orcastra.retry-intervals``, ``orcastra.rebalance``, ``orcastra.rebalance.preferred-node``, ``orcastra.role``
  (``agent`` marks the node agent's global service, whose tasks the controller asks for their reports;
  ``node-exporter`` a node_exporter service whose tasks are scraped as memory sources, on the host port in
  ``orcastra.node-exporter.port``);
- Swarm labels (``docker info``): ``orcastra.paused``, ``orcastra.reboot.lock``;
- Swarm config labels: ``orcastra.command`` and ``orcastra.command.*`` (a command request kept in the Swarm:
  its state, holder, result and finish time; see ``orcastra.commands.swarm_queue``).

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

LABEL_TRUE = "true"

# --- node labels -------------------------------------------------------------------------------------------
ANCHOR_LABEL_PREFIX = "orcastra.anchor."  # + anchor service name: the anchor runs on this node
PIN_LABEL_PREFIX = "orcastra.place."  # + service name: rebalancing pinned the service to this node

# --- service labels, written by users ----------------------------------------------------------------------
FOLLOW_LABEL = "orcastra.follow"  # on a dependent: the anchor it follows
RESTART_DEPENDENTS_LABEL = "orcastra.restart-dependents"  # on an anchor: restart dependents after a restart
RETRY_INTERVALS_LABEL = "orcastra.retry-intervals"  # on an anchor: restart backoff, e.g. 2,10,60
REBALANCE_LABEL = "orcastra.rebalance"  # false: never moved by rebalancing
PREFERRED_NODE_LABEL = "orcastra.rebalance.preferred-node"
ROLE_LABEL = "orcastra.role"  # on Orcastra's own services, in the stack file: which part of Orcastra it is
AGENT_ROLE = "agent"  # orcastra.role=agent: the node agent's global service (docs/agent.md)
# orcastra.role=node-exporter: a node_exporter service (deploy/node-exporter.yml); each node running one of its
# tasks is scraped at http://<node address>:<port>/metrics, the port being this label's (default 9100).
NODE_EXPORTER_ROLE = "node-exporter"
NODE_EXPORTER_PORT_LABEL = "orcastra.node-exporter.port"

# --- service labels, written by Orcastra --------------------------------------------------------------------
# On a dependent: the anchor whose placement constraint Orcastra added to it (so Orcastra, and only Orcastra,
# removes that constraint again when the service stops following that anchor).
ADDED_CONSTRAINT_LABEL = "orcastra.added-constraint"
RESTART_ATTEMPTS_LABEL = "orcastra.restart.attempts"
RESTART_AT_LABEL = "orcastra.restart.at"
DEPENDENTS_PENDING_LABEL = "orcastra.restart.dependents-pending"
MOVED_FROM_LABEL = "orcastra.rebalance.moved-from"
MOVED_TO_LABEL = "orcastra.rebalance.moved-to"
MOVED_AT_LABEL = "orcastra.rebalance.moved-at"  # epoch seconds, as an integer
MOVE_STATE_LABEL = "orcastra.rebalance.move-state"  # moving | converged | rolled-back
LEASE_MARKER_LABEL = "orcastra.lease"  # marks the lease's placeholder service (never moved or rebalanced)
LEASE_HOLDER_LABEL = "orcastra.lease.holder"
LEASE_RENEWED_LABEL = "orcastra.lease.renewed"

# --- Swarm labels (shared by every instance, kept with the Swarm's version) ---------------------------------
PAUSED_LABEL = "orcastra.paused"
# + hostname: the labels of a node entry bootstrap removed (JSON), given back when that node joins again.
REMOVED_NODE_LABELS_PREFIX = "orcastra.removed-node-labels."
REBOOT_LOCK_LABEL = "orcastra.reboot.lock"

# --- Swarm config labels: command requests (the Data is the command entry as JSON; labels are its state) ------
COMMAND_MARKER_LABEL = "orcastra.command"  # "true": this config is a command request
COMMAND_STATE_LABEL = "orcastra.command.state"  # pending | running | done | error | interrupted | cancelled
COMMAND_HOLDER_LABEL = "orcastra.command.holder"  # the leader (lease holder id) that claimed it
COMMAND_RESULT_LABEL = "orcastra.command.result"  # JSON {"result", "message"}, bounded in size
COMMAND_FINISHED_LABEL = "orcastra.command.finished"  # epoch seconds, as an integer

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
