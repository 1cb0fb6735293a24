"""Pure decisions of node maintenance: the lock's text and expiry, the schedule window, whether a node may be
rebooted, which node to reboot next, and whether a drained node's tasks run elsewhere yet.

No Engine, no clock, no subprocess: everything comes in as arguments, so it is table-tested.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from orcastra.domain.labels import REBOOT_LOCK_LABEL
from orcastra.domain.snapshot import Snapshot
from orcastra.features.reboot.settings import WEEKDAYS, RebootSchedule, RebootSettings

LOCK_LABEL = REBOOT_LOCK_LABEL
_SEP = "|"


@dataclass(frozen=True)
class RebootLock:
    """The Swarm-wide reboot lock, kept as the Swarm label ``orcastra.features.reboot.lock`` =
    ``<node>|<holder>|<expires epoch seconds>``."""

    node: str
    holder: str
    expires_at: float

    def format(self) -> str:
        return f"{self.node}{_SEP}{self.holder}{_SEP}{self.expires_at:.0f}"

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def parse_lock(text: str | None) -> RebootLock | None:
    """The lock in a label value; None when there is none. A value that cannot be read counts as an expired lock
    (expires_at 0): someone wrote garbage, and it must not block reboots forever."""
    if not text:
        return None
    parts = text.split(_SEP)
    if len(parts) != 3:
        return RebootLock(node=text, holder="", expires_at=0.0)
    node, holder, expires = parts
    try:
        expires_at = float(expires)
    except ValueError:
        expires_at = 0.0
    if math.isnan(expires_at):
        expires_at = 0.0
    return RebootLock(node=node, holder=holder, expires_at=expires_at)


def lock_blocks(current: RebootLock | None, holder: str, now: float) -> bool:
    """True when another holder's lock is still valid (ours, a missing one or an expired one may be taken)."""
    return current is not None and current.holder != holder and not current.expired(now)


def in_window(schedule: RebootSchedule, now_local: dt.datetime) -> bool:
    """Whether ``now_local`` falls in the schedule's window. A window crossing midnight belongs to its start day."""
    start = dt.time.fromisoformat(schedule.start)
    end = dt.time.fromisoformat(schedule.end)
    t = now_local.time().replace(tzinfo=None)
    today = WEEKDAYS[now_local.weekday()]
    yesterday = WEEKDAYS[(now_local.weekday() - 1) % 7]
    if start < end:
        return today in schedule.days and start <= t < end
    return (today in schedule.days and t >= start) or (yesterday in schedule.days and t < end)


def reboot_refusal(snapshot: Snapshot, hostname: str) -> str | None:
    """Why rebooting ``hostname`` now would hurt the Swarm, or None when it may go.

    - the only Ready node: nothing could take its tasks;
    - a manager whose loss would break the Raft quorum (with 1 or 2 managers, any manager): the Swarm could
      not schedule anything until it is back, and Orcastra itself talks to a manager.
    """
    node = snapshot.node_by_hostname(hostname)
    if node is None:
        return f"no node {hostname!r} in the Swarm"
    ready = [n for n in snapshot.nodes if n.ready]
    if node.ready and len(ready) <= 1:
        return f"{hostname} is the only Ready node"
    if node.role == "manager":
        managers = [n for n in snapshot.nodes if n.role == "manager"]
        reachable = [n for n in managers if n.ready and n.manager_reachability != "unreachable"]
        remaining = len(reachable) - (1 if node in reachable else 0)
        if remaining <= len(managers) // 2:
            return (
                f"{hostname} is a manager and the other {remaining} reachable manager(s) of {len(managers)} "
                "would not keep the Raft quorum"
            )
    return None


def plan_scheduled_reboot(
    snapshot: Snapshot, required: set[str], now_local: dt.datetime, settings: RebootSettings
) -> str | None:
    """The node to reboot now in scheduled mode, or None.

    None outside the window, and whenever any node is not Ready or not Active (a reboot or an operator's
    maintenance is under way: one node at a time). Otherwise the first (by hostname) node that needs a reboot
    and may go (``reboot_refusal``).
    """
    if not in_window(settings.schedule, now_local):
        return None
    if any(not n.ready or n.availability != "active" for n in snapshot.nodes):
        return None
    for hostname in sorted(required):
        if snapshot.node_by_hostname(hostname) is not None and reboot_refusal(snapshot, hostname) is None:
            return hostname
    return None


def pinned_to(constraints: tuple[str, ...], node_id: str, hostname: str) -> bool:
    """Whether a service's constraints pin it to this node (it cannot run elsewhere: not waited for)."""
    wanted = {f"node.hostname=={hostname}", f"node.id=={node_id}"}
    return any(c.replace(" ", "") in wanted for c in constraints)


def tasks_left_on(snapshot: Snapshot, node_id: str, moved_service_ids: frozenset[str]) -> list[str]:
    """What a drain still waits for: services with a task desired running on the node (global services
    excepted: their task stays with the node), and services that ran there and do not run elsewhere yet.
    Empty when the node's work runs elsewhere."""
    node = snapshot.node(node_id)
    hostname = node.hostname if node is not None else ""
    waiting: list[str] = []
    for svc in snapshot.services:
        if svc.mode in ("global", "global-job"):
            continue
        if any(t.node_id == node_id and t.active for t in snapshot.tasks_of(svc.id)):
            waiting.append(f"{svc.name} (still on the node)")
        elif (
            svc.id in moved_service_ids
            and not pinned_to(svc.constraints, node_id, hostname)
            and not any(t.node_id != node_id for t in snapshot.running_tasks(svc.id))
        ):
            waiting.append(f"{svc.name} (not running elsewhere yet)")
    return waiting


def services_on(snapshot: Snapshot, node_id: str) -> frozenset[str]:
    """Ids of the non-global services with a task desired running on the node."""
    return frozenset(
        svc.id
        for svc in snapshot.services
        if svc.mode not in ("global", "global-job")
        and any(t.node_id == node_id and t.active for t in snapshot.tasks_of(svc.id))
    )
