"""From a Swarm snapshot and memory readings to a rebalancing plan: which units may move, where, and why not.

This module does the Swarm side (units, eligibility, placement, anti-flap); ``explain`` words the moves and
what was left over; the choice among eligible moves is ``optimize.choose_moves`` on plain arrays. Pure: ``now``
is a parameter (in ``RebalanceInput``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orcastra.domain.labels import (
    ANCHOR_LABEL_PREFIX,
    LEASE_MARKER_LABEL,
    PIN_LABEL_PREFIX,
    PREFERRED_NODE_LABEL,
    REBALANCE_LABEL,
)
from orcastra.domain.placement import NODE_LABEL_PREFIX, node_satisfies, parse_constraint
from orcastra.domain.plan import Finding
from orcastra.domain.snapshot import Node, Service
from orcastra.domain.usage import NodeMemory, TaskMemory
from orcastra.features.rebalance.explain import Candidate, Explaining, Unit, format_bytes, format_seconds
from orcastra.features.rebalance.history import MoveRecord
from orcastra.features.rebalance.labels import FALSE_VALUES
from orcastra.features.rebalance.optimize import MoveProblem, choose_moves
from orcastra.features.rebalance.types import NodeReport, RebalanceInput, RebalancePlan

# Constraints on node labels Orcastra itself moves with a unit: a dependent's anchor constraint (the anchor
# label follows the anchor) and the pin of an earlier move (pins.plan_move re-points it to the new node).
# Holding them against a target would forbid every move after the first, so the target check skips them.
OWNED_LABEL_PREFIXES = (ANCHOR_LABEL_PREFIX, PIN_LABEL_PREFIX, REBALANCE_LABEL + ".")
MEASURED_SOURCES = frozenset({"engine-stats", "prometheus"})
NEVER_MOVING_MODES = frozenset({"global", "replicated-job", "global-job"})


def _owned(constraint: str) -> bool:
    c = parse_constraint(constraint)
    if c is None or not c.key.casefold().startswith(NODE_LABEL_PREFIX):
        return False
    label = c.key[len(NODE_LABEL_PREFIX) :]
    return label.startswith(OWNED_LABEL_PREFIXES)


class _Planner(Explaining):
    def __init__(self, inputs: RebalanceInput) -> None:
        self.snap = inputs.snapshot
        self.memory = inputs.memory
        self.groups = inputs.groups
        self.settings = inputs.settings
        self.overrides = inputs.overrides  # by full service name
        self.history = inputs.history
        self.now = inputs.now
        # What the memory sources could not read (an unreachable exporter, a bad label...): said where the plan
        # is read (``orcastra plan``, the daemon's log of new findings), not only kept in the view.
        self.findings: list[Finding] = [Finding(p.subject, p.message, "warning") for p in inputs.memory.problems]
        self.nodes: list[Node] = []  # nodes with fresh memory data: the optimiser's index space
        self.samples: list[NodeMemory] = []
        self.index: dict[str, int] = {}  # hostname -> index
        self.targets_cache: dict[tuple[str, ...], tuple[int, ...] | str] = {}

    # --- nodes ------------------------------------------------------------------------------------

    def read_nodes(self) -> tuple[list[NodeReport], list[int], set[int]]:
        """Node reports, the sources (overloaded long enough), and the nodes that may receive a unit."""
        st, now = self.settings, self.now
        reports: list[NodeReport] = []
        sources: list[int] = []
        receivers: set[int] = set()
        for node in sorted(self.snap.nodes, key=lambda n: n.hostname):
            sample = self.memory.nodes.get(node.hostname)
            if sample is None or not st.fresh(sample, now):
                if sample is None:
                    why = "no memory data"
                elif sample.total_bytes <= 0:
                    why = "memory data without a total"
                else:
                    why = (
                        f"memory data {format_seconds(now - sample.sampled_at)} old "
                        f"(stale after {format_seconds(st.stale_after_seconds)})"
                    )
                reports.append(NodeReport(node.hostname, None, False, 0.0, f"{why}: left alone"))
                if node.ready:
                    self.findings.append(
                        Finding(node.hostname, f"{why}: never a source or target of a move", "warning")
                    )
                continue
            i = len(self.nodes)
            self.nodes.append(node)
            self.samples.append(sample)
            self.index[node.hostname] = i
            pct = sample.used_percent
            since = self.history.overloaded_since.get(node.hostname)
            above = pct > st.high_percent
            for_seconds = now - since if above and since is not None else 0.0
            overloaded = above and since is not None and for_seconds >= st.sustained_seconds
            if not node.ready:
                note = f"{node.state}: left alone"
            elif overloaded:
                note = f"overloaded: above {st.high_percent:g}% for {format_seconds(for_seconds)}"
                sources.append(i)
            elif above:
                note = (
                    f"above {st.high_percent:g}% for {format_seconds(for_seconds)} of "
                    f"{format_seconds(st.sustained_seconds)}: not yet overloaded"
                )
            elif node.availability != "active":
                note = f"availability {node.availability}: not a target"
            else:
                note = "ok"
            if node.ready and node.availability == "active" and not above:
                receivers.add(i)
            reports.append(NodeReport(node.hostname, pct, overloaded, for_seconds, note))
        return reports, sources, receivers

    # --- units ------------------------------------------------------------------------------------

    def units(self) -> dict[str, Unit]:
        """Service name -> its unit: anchor groups (anchor first) and every other service alone."""
        by_service: dict[str, Unit] = {}
        for g in self.groups:
            anchor = self.snap.service(g.anchor)
            if anchor is None:
                continue
            members = [anchor] + [s for d in g.dependents if (s := self.snap.service(d)) is not None]
            unit = Unit(g.anchor, tuple(members))
            for s in members:
                by_service.setdefault(s.name, unit)
        for s in self.snap.services:
            by_service.setdefault(s.name, Unit(s.name, (s,)))
        return by_service

    def override_rebalance(self, svc: Service) -> bool:
        o = self.overrides.get(svc.name)
        if o is not None:  # the config wins over the label
            return o.rebalance
        return svc.labels.get(REBALANCE_LABEL, "").strip().lower() not in FALSE_VALUES

    def preferred(self, unit: Unit) -> str | None:
        for svc in unit.services:
            o = self.overrides.get(svc.name)
            if o is not None and o.preferred_node:
                return o.preferred_node
            label = svc.labels.get(PREFERRED_NODE_LABEL, "").strip()
            if label:
                return label
        return None

    def cooldown(self, unit: Unit) -> float:
        set_ = [
            o.cooldown_seconds
            for s in unit.services
            if (o := self.overrides.get(s.name)) is not None and o.cooldown_seconds is not None
        ]
        return max(set_) if set_ else self.settings.service_cooldown_seconds

    # --- candidates ---------------------------------------------------------------------------------

    def targets_for(self, constraints: tuple[str, ...], receivers: set[int]) -> tuple[int, ...] | str:
        """Receivers satisfying every constraint, or why there are none (cached per constraint set)."""
        cached = self.targets_cache.get(constraints)
        if cached is not None:
            return cached
        ok: list[int] = []
        failed = unknown = 0
        for i in sorted(receivers):
            result = node_satisfies(constraints, self.nodes[i])
            if result is True:
                ok.append(i)
            elif result is None:
                unknown += 1
            else:
                failed += 1
        value: tuple[int, ...] | str = tuple(ok)
        if not ok:
            parts = [f"{len(receivers)} node(s) Ready, active, under high and with fresh data"]
            if failed:
                parts.append(f"{failed} fail the placement constraints ({', '.join(constraints)})")
            if unknown:
                parts.append(f"{unknown} cannot be checked against them (engine labels or platform)")
            value = "no qualified target: " + "; ".join(parts)
        self.targets_cache[constraints] = value
        return value

    def candidate(
        self,
        unit: Unit,
        src: int,
        running_on: Mapping[str, frozenset[str]],
        task_memory: Mapping[tuple[str, str], TaskMemory],
        receivers: set[int],
    ) -> Candidate | str:
        """The unit as a move candidate off node ``src``, or why it cannot move (the first reason found, in
        the order: never moved, not movable as one from this node, cooldown, memory, targets)."""
        node = self.nodes[src]
        why = self.why_never_moved(unit) or self.why_not_movable_from(unit, node, running_on)
        if why is not None:
            return why
        cooldown = self.cooldown(unit)
        moves = [m for m in self.history.recent_moves if m.service == unit.name]  # the unit's pinned service
        why = self.why_cooling_down(moves, cooldown)
        if why is not None:
            return why
        measured = self.unit_bytes(unit, node, running_on, task_memory)
        if isinstance(measured, str):
            return measured
        total, estimated = measured
        roomy = self.targets_with_room(unit, src, total, self.left_recently(moves, cooldown), receivers)
        if isinstance(roomy, str):
            return roomy
        return Candidate(unit, src, total, estimated, roomy, self.preferred_target(unit, roomy))

    def why_never_moved(self, unit: Unit) -> str | None:
        """Global services, jobs and the leader lease never move, nor anything opted out (config or label)."""
        for svc in unit.services:
            if svc.mode in NEVER_MOVING_MODES:
                return f"{svc.name} is a {svc.mode} service: never moved"
            if svc.labels.get(LEASE_MARKER_LABEL, "").strip().lower() == "true":
                return f"{svc.name} is Orcastra's leader lease: never moved"
        for svc in unit.services:
            if not self.override_rebalance(svc):
                return f"opted out ({svc.name}: {REBALANCE_LABEL}=false or rebalance: false in the config)"
        return None

    def why_not_movable_from(self, unit: Unit, node: Node, running_on: Mapping[str, frozenset[str]]) -> str | None:
        """A unit moves off ``node`` only if its anchor runs there and none of its services runs elsewhere."""
        if node.id not in running_on.get(unit.pin.name, frozenset()):
            return (
                f"anchor {unit.pin.name} does not run on {node.hostname} (its dependents follow it; colocation "
                "fixes it)"
            )
        for svc in unit.services:
            elsewhere = running_on.get(svc.name, frozenset()) - {node.id}
            if elsewhere:
                names = sorted(n.hostname if (n := self.snap.node(x)) is not None else x for x in elsewhere)
                return (
                    f"spread over nodes: {svc.name} also runs on {', '.join(names)}; pinning it to one node "
                    "would move those tasks too"
                )
        return None

    def why_cooling_down(self, moves: Sequence[MoveRecord], cooldown: float) -> str | None:
        last = max(moves, key=lambda m: m.at, default=None)
        if last is not None and self.now - last.at < cooldown:
            return (
                f"cooldown: moved {last.from_node} -> {last.to_node} {format_seconds(self.now - last.at)} ago "
                f"(cooldown {format_seconds(cooldown)})"
            )
        return None

    def unit_bytes(
        self,
        unit: Unit,
        node: Node,
        running_on: Mapping[str, frozenset[str]],
        task_memory: Mapping[tuple[str, str], TaskMemory],
    ) -> tuple[int, bool] | str:
        """What the unit's tasks on ``node`` use, and whether some of it is an estimate; or why it is not
        known well enough to move on (never guessed)."""
        host = node.hostname
        total = 0
        estimated = False
        for svc in unit.services:
            if node.id not in running_on.get(svc.name, frozenset()):
                continue
            tm = task_memory.get((svc.name, host))
            if tm is None:
                return f"no memory measurement for {svc.name} on {host}: not guessed"
            if self.now - tm.sampled_at > self.settings.stale_after_seconds:
                return f"memory of {svc.name} on {host} is {format_seconds(self.now - tm.sampled_at)} old: not used"
            total += tm.used_bytes
            estimated = estimated or tm.source not in MEASURED_SOURCES
        if total <= 0:
            return "uses no memory: moving it would not help"
        return total, estimated

    def left_recently(self, moves: Sequence[MoveRecord], cooldown: float) -> tuple[frozenset[str], float]:
        """The nodes the unit may not go back to, and for how long that holds. Never back to a node the unit
        left within its cooldown (the descheduler's classic flap). A short per-service cooldown lets a unit
        move again sooner, but not back: that window is never shorter than the settings' service cooldown."""
        window = max(cooldown, self.settings.service_cooldown_seconds)
        return frozenset(m.from_node for m in moves if self.now - m.at < window), window

    def targets_with_room(
        self, unit: Unit, src: int, total: int, left: tuple[frozenset[str], float], receivers: set[int]
    ) -> tuple[int, ...] | str:
        """The nodes that qualify for the unit (constraints, not one it left recently) and stay under
        ``target`` with it (margin included), or why there are none."""
        st = self.settings
        constraints = tuple(sorted({c for s in unit.services for c in s.constraints if not _owned(c)}))
        allowed = self.targets_for(constraints, receivers)
        if isinstance(allowed, str):
            return allowed
        left_nodes, window = left
        targets = tuple(i for i in allowed if i != src and self.nodes[i].hostname not in left_nodes)
        excluded = sorted(self.nodes[i].hostname for i in allowed if self.nodes[i].hostname in left_nodes)
        would_return = (
            f" ({', '.join(excluded)} excluded: it left them within {format_seconds(window)})" if excluded else ""
        )
        if not targets:
            return "no qualified target: the only qualified node(s) are ones it left" + would_return
        margin = 1.0 + st.safety_margin_percent / 100.0
        roomy = tuple(
            i
            for i in targets
            if self.samples[i].used_bytes + total * margin <= st.target_percent / 100.0 * self.samples[i].total_bytes
        )
        if not roomy:
            return (
                f"no qualified target has room: {format_bytes(total)} (+{st.safety_margin_percent:g}% margin) "
                f"would take each of the {len(targets)} qualified node(s) above {st.target_percent:g}%" + would_return
            )
        return roomy

    def preferred_target(self, unit: Unit, roomy: tuple[int, ...]) -> int:
        """The index of the unit's preferred node if it is among ``roomy``, else -1 (with a finding when a
        preferred node was named but does not qualify)."""
        wanted = self.preferred(unit)
        if wanted is None:
            return -1
        j = self.index.get(wanted, -1)
        if j in roomy:
            return j
        self.findings.append(
            Finding(unit.name, f"preferred node {wanted} does not qualify as a target; choosing another")
        )
        return -1

    # --- the plan -----------------------------------------------------------------------------------

    def collect_candidates(self, sources: list[int], receivers: set[int]) -> list[Candidate]:
        """Every unit running on a source node, as a candidate or as a finding saying why not."""
        running_on: dict[str, frozenset[str]] = {}
        on_node: dict[str, list[str]] = {}
        for svc in self.snap.services:
            ids = frozenset(t.node_id for t in self.snap.running_tasks(svc.id))
            running_on[svc.name] = ids
            for node_id in ids:
                on_node.setdefault(node_id, []).append(svc.name)
        task_memory: dict[tuple[str, str], TaskMemory] = {}
        for tm in self.memory.tasks:
            key = (tm.service, tm.hostname)
            old = task_memory.get(key)
            # A measurement beats an estimate; among equals the newest wins.
            if old is None or (tm.source in MEASURED_SOURCES, tm.sampled_at) > (
                old.source in MEASURED_SOURCES,
                old.sampled_at,
            ):
                task_memory[key] = tm
        unit_of = self.units()

        candidates: list[Candidate] = []
        for src in sources:
            host = self.nodes[src].hostname
            seen: set[str] = set()
            for name in sorted(on_node.get(self.nodes[src].id, ())):
                unit = unit_of[name]
                if unit.name in seen:
                    continue
                seen.add(unit.name)
                result = self.candidate(unit, src, running_on, task_memory, receivers)
                if isinstance(result, str):
                    self.findings.append(Finding(unit.name, f"not moved off {host}: {result}"))
                else:
                    candidates.append(result)
        return candidates

    def problem(self, sources: list[int], candidates: list[Candidate]) -> MoveProblem:
        st = self.settings
        return MoveProblem(
            node_used=[s.used_bytes for s in self.samples],
            node_total=[s.total_bytes for s in self.samples],
            sources=sources,
            cand_source=[c.source for c in candidates],
            cand_bytes=[c.bytes for c in candidates],
            cand_targets=[c.targets for c in candidates],
            cand_preferred=[c.preferred for c in candidates],
            high_percent=st.high_percent,
            target_percent=st.target_percent,
            safety_margin_percent=st.safety_margin_percent,
            max_moves=st.max_moves_per_cycle,
            max_moves_per_node=st.max_moves_per_node,
        )

    def plan(self) -> RebalancePlan:
        st, now = self.settings, self.now
        reports, sources, receivers = self.read_nodes()
        if not sources:
            return RebalancePlan((), tuple(reports), tuple(self.findings))
        candidates = self.collect_candidates(sources, receivers)

        if st.max_moves_per_cycle > 0 and self.history.last_move_at is not None:
            since_last = now - self.history.last_move_at
            if since_last < st.global_cooldown_seconds:
                self.findings.append(
                    Finding(
                        "rebalance",
                        f"global cooldown: last move {format_seconds(since_last)} ago, next one possible in "
                        f"{format_seconds(st.global_cooldown_seconds - since_last)}",
                    )
                )
                return RebalancePlan((), tuple(reports), tuple(self.findings))

        # Report the worst node's moves first (the optimiser's order is an artefact of its search).
        chosen = sorted(
            choose_moves(self.problem(sources, candidates)),
            key=lambda m: (-self.samples[candidates[m[0]].source].used_percent, m[0]),
        )
        moves = self.describe(candidates, chosen, dict(enumerate(s.used_bytes for s in self.samples)))
        self.explain_left_over(candidates, chosen, sources, moves)
        return RebalancePlan(tuple(moves), tuple(reports), tuple(self.findings))


def plan_rebalance(inputs: RebalanceInput) -> RebalancePlan:
    """The moves for this cycle (possibly none), a report per node, and why candidates were skipped."""
    return _Planner(inputs).plan()


def build_problem(inputs: RebalanceInput) -> MoveProblem:
    """The arrays ``plan_rebalance`` hands to the optimiser (cooldown aside): for the benchmark."""
    planner = _Planner(inputs)
    _, sources, receivers = planner.read_nodes()
    return planner.problem(sources, planner.collect_candidates(sources, receivers))
