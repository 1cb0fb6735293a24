"""The bootstrap planner: from one observation, the actions that build and heal the Swarm.

A pure function (no Engine, no clock: the observation carries ``now``). It initialises a Swarm when there
is none, joins inventory nodes that are not members, removes stale or long-Down node entries when allowed,
and keeps the number of managers at an odd target. Whatever it refuses to do is explained in ``findings``.
See docs/bootstrap.md for the rules and why they are what a careful operator would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from orcastra.domain.actions import BootstrapAction, DemoteNode, InitSwarm, JoinSwarm, PromoteNode, RemoveNode, Role
from orcastra.domain.labels import ANCHOR_LABEL_PREFIX, PIN_LABEL_PREFIX
from orcastra.domain.snapshot import Node
from orcastra.features.bootstrap.model import BootstrapObservation, BootstrapPlan, NodeObservation
from orcastra.features.bootstrap.settings import BootstrapSettings
from orcastra.features.inventory import NodeSettings

# Node labels that follow where things run now (anchors, pins): recomputed, never kept across a removal.
DYNAMIC_LABEL_PREFIXES = (ANCHOR_LABEL_PREFIX, PIN_LABEL_PREFIX)
# A node in one of these local states is on its way into (or stuck joining) a swarm: a fresh join after a
# forced leave is what recovers it (seen in the lab: a timed-out join never recovered by itself).
JOINABLE_STATES = ("inactive", "pending", "error")


def largest_odd_at_most(n: int) -> int:
    """1, 1, 3, 3, 5, ... for n = 1, 2, 3, 4, 5 (at least 1): Raft wants an odd number of managers."""
    if n <= 1:
        return 1
    return n if n % 2 == 1 else n - 1


def _short(cluster_id: str) -> str:
    return cluster_id[:12]


@dataclass(frozen=True)
class _Member:
    """A Swarm node entry, with the inventory name it belongs to (None: not an inventory node)."""

    node: Node
    name: str | None

    @property
    def label(self) -> str:
        return self.name or self.node.hostname or self.node.id[:12]

    @property
    def healthy(self) -> bool:
        return self.node.state == "ready" and self.node.availability == "active"

    @property
    def manager(self) -> bool:
        return self.node.role == "manager"

    @property
    def reachable_manager(self) -> bool:
        return self.manager and self.node.state == "ready" and self.node.manager_reachability == "reachable"


def plan_bootstrap(
    observation: BootstrapObservation,
    inventory: Mapping[str, NodeSettings],
    settings: BootstrapSettings,
    *,
    remove_down_after_seconds: float | None = None,
) -> BootstrapPlan:
    """The actions that bring the inventory into one Swarm with ``settings.manager_target`` managers."""
    planner = _Planner(observation, inventory, remove_down_after_seconds)
    observed = [o for o in observation.nodes if o.name in inventory]
    planner.note_left_alone(observed)
    reachable = [o for o in observed if o.reachable]
    split = _split_brain(observation, reachable)
    if split is not None:
        return BootstrapPlan(findings=(*planner.findings, split), refused=True)

    if any(o.local_state == "active" for o in reachable) or observation.members:
        start = planner.existing_swarm(reachable)
    else:
        start = planner.new_swarm(reachable)
    if isinstance(start, str):
        return BootstrapPlan(findings=(*planner.findings, start))

    joinable = planner.with_address(start.joiners)
    target = planner.manager_target(settings.manager_target, start.healthy + len(joinable))
    joins = planner.joins(joinable, start, target)
    managers = start.managers + sum(j.role == "manager" for j in joins)
    actions = [*start.actions, *joins, *planner.manager_changes(start.members, managers, target, start.manager)]
    return BootstrapPlan(actions=tuple(actions), findings=tuple(planner.findings))


@dataclass(frozen=True)
class _Start:
    """Where joins and manager changes start from: the Swarm about to be initialised, or the one that exists
    with its stale and long-Down entries removed."""

    manager: str  # inventory name of the manager that admits the joiners
    manager_address: str
    members: list[_Member]  # the Swarm's node entries, after removals
    joiners: list[NodeObservation]  # inventory nodes to join
    actions: list[BootstrapAction]  # the init, or the removals
    managers: int
    healthy: int


class _Planner:
    """One planning pass: the inventory's ranking (who is meant to be a manager, in which order) and the
    findings collected along the way."""

    def __init__(
        self,
        observation: BootstrapObservation,
        inventory: Mapping[str, NodeSettings],
        remove_down_after_seconds: float | None,
    ) -> None:
        self.observation = observation
        self.inventory = inventory
        self.remove_down_after_seconds = remove_down_after_seconds
        self.order = {name: i for i, name in enumerate(inventory)}
        self.wants_manager = {name for name, n in inventory.items() if n.role == "manager"}
        self.findings: list[str] = []

    def note_left_alone(self, observed: list[NodeObservation]) -> None:
        for o in observed:
            if not o.reachable:
                self.findings.append(
                    f"{o.name}: Engine at {o.endpoint} not reachable ({o.error or 'no answer'}); left alone"
                )
            elif o.local_state == "locked":
                self.findings.append(f"{o.name}: its Swarm is locked (autolock); unlock it by hand, left alone")

    def new_swarm(self, reachable: list[NodeObservation]) -> _Start | str:
        """No swarm anywhere: initialise one on the first reachable node meant to be a manager (else the first
        reachable one); the others join it. A string says why it cannot be done."""
        candidates = [o for o in reachable if o.local_state in JOINABLE_STATES]
        first = next((o for o in candidates if o.name in self.wants_manager), None) or next(iter(candidates), None)
        if first is None:
            return "no reachable inventory node can start a Swarm"
        if not first.address:
            return _no_address(first.name, "initialise the Swarm")
        init = InitSwarm(first.name, first.address, reason="no inventory node is in a Swarm; starting one here")
        joiners = [o for o in candidates if o is not first]
        return _Start(first.name, first.address, [], joiners, [init], managers=1, healthy=1)

    def existing_swarm(self, reachable: list[NodeObservation]) -> _Start | str:
        """A Swarm exists: the manager whose node list was read admits the joiners, after stale and long-Down
        entries are removed. A string says why nothing can be done."""
        observation = self.observation
        manager = observation.node(observation.manager) if observation.manager else None
        if manager is None:
            return "a Swarm exists but no inventory manager answered; nothing changed"
        member_ids = {m.id for m in observation.members}
        joiners = []
        for o in reachable:
            if o.local_state in JOINABLE_STATES:
                joiners.append(o)
            elif o.local_state == "active" and o.node_id not in member_ids:
                self.findings.append(
                    f"{o.name}: reports Swarm node {o.node_id[:12]}, which {manager.name}'s Swarm does not list; "
                    "left alone (leave that swarm by hand to have it joined)"
                )
        removals, members = self.removals(_members(observation, self.inventory), reachable, manager.name)
        managers = sum(m.manager for m in members)
        healthy = sum(m.healthy for m in members)
        return _Start(manager.name, manager.address, members, joiners, removals, managers, healthy)

    def removals(
        self, members: list[_Member], reachable: list[NodeObservation], manager: str
    ) -> tuple[list[BootstrapAction], list[_Member]]:
        """Remove stale and long-Down entries (a manager is demoted first); the members that remain."""
        # Entries left behind by a node that has since left (it now reports another ID or none): the
        # node itself says it is not that member, so the entry can only ever be Down. Removed before the
        # node joins again, so the Raft membership never counts a dead manager twice.
        after = self.remove_down_after_seconds
        stale = _stale_entries(members, reachable)
        long_down = _long_down(members, self.observation, after, stale)
        actions: list[BootstrapAction] = []
        for m, why in [*((m, "stale") for m in stale), *((m, "down") for m in long_down)]:
            reason = (
                f"{m.label} left the Swarm and is not node {m.node.id[:12]} any more; removing its Down entry"
                if why == "stale"
                else f"{m.label} has been {m.node.state} for "
                f"{self.observation.now - m.node.updated_at:.1f} s (limit {after:g} s); removing it"
            )
            if m.manager:
                # Swarm refuses to remove a manager; demoting an unreachable manager shrinks the Raft
                # membership, which keeps the quorum the remaining managers need.
                actions.append(DemoteNode(m.label, m.node.id, manager, reason=reason))
            keep = MappingProxyType(
                {k: v for k, v in m.node.labels.items() if not k.startswith(DYNAMIC_LABEL_PREFIXES)}
            )
            actions.append(RemoveNode(m.label, m.node.id, manager, reason=reason, keep_labels=keep))
        gone = {m.node.id for m in [*stale, *long_down]}
        return actions, [m for m in members if m.node.id not in gone]

    def with_address(self, joiners: list[NodeObservation]) -> list[NodeObservation]:
        """The joiners that can be joined: a node with no known address is left alone, with a finding."""
        joinable = []
        for o in joiners:
            if not o.address:
                self.findings.append(_no_address(o.name, "join it"))
            else:
                joinable.append(o)
        return joinable

    def manager_target(self, wanted: int, healthy: int) -> int:
        """``wanted`` managers, lowered to the largest odd number the ``healthy`` nodes can make."""
        target = min(wanted, largest_odd_at_most(healthy))
        if target < wanted:
            self.findings.append(f"manager target {wanted} lowered to {target}: only {healthy} Ready, active nodes")
        return target

    def joins(self, joinable: list[NodeObservation], start: _Start, target: int) -> list[JoinSwarm]:
        """Join each node, as a manager while the Swarm has fewer than ``target``; joiners meant to be managers
        first, then inventory order."""
        managers = start.managers
        joins = []
        for o in sorted(joinable, key=lambda o: (o.name not in self.wants_manager, self.order[o.name])):
            role: Role = "manager" if managers < target else "worker"
            managers += role == "manager"
            state_note = "" if o.local_state == "inactive" else f" (was {o.local_state}: leaves first)"
            joins.append(
                JoinSwarm(
                    o.name,
                    role,
                    start.manager,
                    o.address,
                    start.manager_address,
                    reason=f"{o.name} is in the inventory but not in the Swarm{state_note}",
                )
            )
        return joins

    def manager_changes(
        self, members: list[_Member], managers: int, target: int, manager: str
    ) -> list[BootstrapAction]:
        """Promotions or demotions that bring ``managers`` (after the joins) to ``target``."""
        if managers < target:
            return self.promotions(members, missing=target - managers, manager=manager)
        if managers > target:
            return self.demotions(members, managers=managers, target=target, manager=manager)
        return []

    def promotions(self, members: list[_Member], *, missing: int, manager: str) -> list[BootstrapAction]:
        order = self.order
        candidates = [m for m in members if m.name is not None and not m.manager and m.healthy]
        candidates.sort(key=lambda m: (m.name not in self.wants_manager, order.get(m.name or "", 0)))
        chosen = candidates[:missing]
        if len(chosen) < missing:
            self.findings.append(
                f"{missing - len(chosen)} more manager(s) wanted but no healthy (Ready, active) inventory worker "
                "left to promote"
            )
        return [
            PromoteNode(m.label, m.node.id, manager, reason="fewer managers than the target; this worker is healthy")
            for m in chosen
        ]

    def demotions(self, members: list[_Member], *, managers: int, target: int, manager: str) -> list[BootstrapAction]:
        if target == 1:
            # Going down to a single manager drops all fault tolerance; Orcastra never does it on its own.
            self.findings.append(
                f"{managers} managers but the target is 1: refusing to go down to a single manager automatically "
                "(demote by hand with `docker node demote` if that is really meant)"
            )
            return []
        observation, order = self.observation, self.order
        roles = {name: n.role for name, n in self.inventory.items()}
        protected = {observation.self_node_id}
        read = observation.node(manager)
        if read is not None:
            protected.add(read.node_id)
        candidates = [m for m in members if m.manager and m.name is not None and m.node.id not in protected]
        # Inventory workers first (then nodes with no role given), unreachable managers before reachable ones
        # (demoting those only shrinks the Raft membership), and later inventory entries before earlier ones.
        rank = {"worker": 0, None: 1, "manager": 2}
        candidates.sort(key=lambda m: (rank[roles.get(m.name or "")], m.reachable_manager, -order.get(m.name or "", 0)))
        reachable_left = sum(m.reachable_manager for m in members)
        remaining = managers
        actions: list[BootstrapAction] = []
        for m in candidates:
            if remaining <= target:
                break
            left_after = reachable_left - m.reachable_manager
            if left_after <= (remaining - 1) // 2:
                self.findings.append(
                    f"not demoting {m.label}: the reachable managers left would lose the Raft majority"
                )
                continue
            actions.append(
                DemoteNode(m.label, m.node.id, manager, reason=f"{remaining} managers, more than the target {target}")
            )
            remaining -= 1
            reachable_left = left_after
        if remaining > target:
            self.findings.append(
                f"{remaining} managers remain (target {target}): no other manager may be demoted safely"
            )
        return actions


def _no_address(name: str, what: str) -> str:
    return f"{name}: no address known to {what} (set nodes.{name}.ip); left alone"


def _split_brain(observation: BootstrapObservation, reachable: list[NodeObservation]) -> str | None:
    """A finding naming each cluster and its nodes when inventory nodes report different cluster IDs."""
    clusters: dict[str, list[str]] = {}
    for o in reachable:
        if o.cluster_id:
            clusters.setdefault(o.cluster_id, []).append(o.name)
    if len(clusters) <= 1:
        return None
    # Workers do not report a cluster ID; a worker listed by the manager we read belongs to its cluster.
    if observation.manager is not None:
        read = observation.node(observation.manager)
        listed = {m.id for m in observation.members}
        if read is not None and read.cluster_id in clusters:
            for o in reachable:
                if not o.cluster_id and o.node_id and o.node_id in listed:
                    clusters[read.cluster_id].append(o.name)
    parts = [f"cluster {_short(cid)} ({', '.join(names)})" for cid, names in sorted(clusters.items())]
    return (
        "split brain: inventory nodes report different Swarm clusters: "
        + "; ".join(parts)
        + ". Refusing to change anything until an operator makes one of them leave."
    )


def _members(observation: BootstrapObservation, inventory: Mapping[str, NodeSettings]) -> list[_Member]:
    """The manager's node list, each entry mapped to its inventory name: by the node ID the node itself
    reports (exact), else by hostname for a node whose Engine did not answer."""
    by_id = {o.node_id: o.name for o in observation.nodes if o.reachable and o.node_id}
    reported = {o.name for o in observation.nodes if o.reachable}
    members = []
    for n in observation.members:
        name = by_id.get(n.id)
        if name is None and n.hostname in inventory and n.hostname not in reported:
            name = n.hostname
        members.append(_Member(n, name))
    return members


def _stale_entries(members: list[_Member], reachable: list[NodeObservation]) -> list[_Member]:
    """Entries named like an inventory node that reports another node ID: stale when the entry is no longer
    Ready, or when the node says it is in no swarm at all (a manager may list a node that just left as
    Ready for a few seconds). An entry that is Ready while the node is active under another ID is left
    alone: that is two machines with one hostname, not a stale entry."""
    by_name = {o.name: o for o in reachable}
    stale = []
    for m in members:
        o = by_name.get(m.node.hostname)
        if m.name is not None or o is None or o.node_id == m.node.id:
            continue
        if not m.node.ready or o.local_state in JOINABLE_STATES:
            stale.append(m)
    return stale


def _long_down(
    members: list[_Member],
    observation: BootstrapObservation,
    after_seconds: float | None,
    already: list[_Member],
) -> list[_Member]:
    if after_seconds is None:
        return []
    skip = {m.node.id for m in already} | {observation.self_node_id}
    # UpdatedAt changes with every change of the node object, so ``now - updated_at`` never overstates
    # how long the node has been Down: removal may come later than configured, never earlier.
    # Only inventory nodes: a node nobody listed is somebody else's to remove. ``now`` is the manager's own
    # clock when it told it (the observation carries it), so a skewed Orcastra host never removes early.
    return [
        m
        for m in members
        if m.name is not None
        and m.node.id not in skip
        and m.node.state in ("down", "disconnected")
        and observation.now - m.node.updated_at > after_seconds
    ]
