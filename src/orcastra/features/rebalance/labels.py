"""The values of the rebalancing feature's labels (the keys themselves are in ``orcastra.domain.labels``).

Service labels set by people: ``orcastra.rebalance`` (``false`` opts a service out) and
``orcastra.rebalance.preferred-node``. Labels Orcastra writes: the pin ``orcastra.place.<service>=true`` on
the node a service was moved to, and the record of the last move on the moved service
(``orcastra.rebalance.moved-from/-to/-at``, read back as the anti-flap history, and
``orcastra.rebalance.move-state``, by which any leader follows the move through).
"""

from __future__ import annotations

from orcastra.domain.labels import PIN_LABEL_PREFIX

FALSE_VALUES = frozenset({"false", "0", "no", "off"})  # values of REBALANCE_LABEL that opt out
# Where the recorded move stands (MOVE_STATE_LABEL). Only a move "moving" is followed (tracking.track_moves):
# once it is "converged" a later disruption (a restarted dependent) is never taken for a failed move, and a
# move recorded before this label existed is left alone.
MOVING = "moving"
CONVERGED = "converged"
ROLLED_BACK = "rolled-back"


def pin_label_key(service: str) -> str:
    """The node label that pins ``service`` (its full name) to the nodes carrying it."""
    return PIN_LABEL_PREFIX + service
