"""Every ``orcastra.*`` label key the rebalancing feature reads or writes, in one place.

Service labels set by people: ``orcastra.rebalance`` (``false`` opts a service out) and
``orcastra.rebalance.preferred-node``. Labels Orcastra writes: the pin ``orcastra.place.<service>=true`` on
the node a service was moved to, and the record of the last move on the moved service
(``orcastra.rebalance.moved-from/-to/-at``, read back as the anti-flap history, and
``orcastra.rebalance.move-state``, by which any leader follows the move through).
"""

from __future__ import annotations

REBALANCE_LABEL = "orcastra.rebalance"
PREFERRED_NODE_LABEL = "orcastra.rebalance.preferred-node"
FALSE_VALUES = frozenset({"false", "0", "no", "off"})  # values of REBALANCE_LABEL that opt out
LEASE_LABEL = "orcastra.lease"  # runtime.leadership.LEASE_MARKER_LABEL; that module does I/O, so not imported

PIN_LABEL_PREFIX = "orcastra.place."
MOVED_FROM_LABEL = "orcastra.rebalance.moved-from"
MOVED_TO_LABEL = "orcastra.rebalance.moved-to"
MOVED_AT_LABEL = "orcastra.rebalance.moved-at"  # epoch seconds, as an integer
# Where the recorded move stands. Only a move "moving" is followed (tracking.track_moves): once it is
# "converged" a later disruption (a restarted dependent) is never taken for a failed move, and a move
# recorded before this label existed is left alone.
MOVE_STATE_LABEL = "orcastra.rebalance.move-state"
MOVING = "moving"
CONVERGED = "converged"
ROLLED_BACK = "rolled-back"


def pin_label_key(service: str) -> str:
    """The node label that pins ``service`` (its full name) to the nodes carrying it."""
    return PIN_LABEL_PREFIX + service
