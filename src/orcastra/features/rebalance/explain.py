"""The words of a rebalancing plan: each move with its before/after figures and reason, and why an overloaded
node stays above ``high`` after the cycle. A mixin of the planner (``plan._Planner``), which holds the state
named below."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orcastra.domain.plan import Finding
from orcastra.domain.snapshot import Node, Service
from orcastra.domain.usage import NodeMemory
from orcastra.features.rebalance.history import RebalanceHistory
from orcastra.features.rebalance.settings import RebalanceSettings
from orcastra.features.rebalance.types import PlannedMove


@dataclass(frozen=True)
class Unit:
    name: str  # anchor or service
    services: tuple[Service, ...]  # pin service first

    @property
    def pin(self) -> Service:
        return self.services[0]


@dataclass(frozen=True)
class Candidate:
    unit: Unit
    source: int
    bytes: int
    estimated: bool
    targets: tuple[int, ...]
    preferred: int


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s"


class Explaining:
    """What the planner knows that the explanations read."""

    settings: RebalanceSettings
    history: RebalanceHistory
    now: float
    nodes: list[Node]
    samples: list[NodeMemory]
    findings: list[Finding]

    def describe(
        self, candidates: list[Candidate], chosen: Sequence[tuple[int, int]], used: dict[int, int]
    ) -> list[PlannedMove]:
        """PlannedMoves with before/after figures applied in order (a node's second move starts from the
        first one's result)."""
        st = self.settings
        out: list[PlannedMove] = []
        for c_index, t in chosen:
            c = candidates[c_index]
            s = c.source
            s_total, t_total = self.samples[s].total_bytes, self.samples[t].total_bytes
            fb, tb = 100.0 * used[s] / s_total, 100.0 * used[t] / t_total
            used[s] -= c.bytes
            used[t] += c.bytes
            fa, ta = 100.0 * used[s] / s_total, 100.0 * used[t] / t_total
            src_host, dst_host = self.nodes[s].hostname, self.nodes[t].hostname
            what = (
                f"group {c.unit.name} ({', '.join(x.name for x in c.unit.services)})"
                if len(c.unit.services) > 1
                else f"service {c.unit.name}"
            )
            since = self.history.overloaded_since.get(src_host, self.now)
            how = "estimated from reservation/limit" if c.estimated else "measured"
            why_target = "its preferred node" if t == c.preferred else "the qualified node left lowest"
            reason = (
                f"{src_host} above {st.high_percent:g}% for {format_seconds(self.now - since)}: move {what}, "
                f"{format_bytes(c.bytes)} {how}, to {dst_host} ({why_target}); "
                f"{src_host} {fb:.1f}% -> {fa:.1f}%, {dst_host} {tb:.1f}% -> {ta:.1f}% "
                f"(target {st.target_percent:g}% with a {st.safety_margin_percent:g}% margin)"
            )
            out.append(
                PlannedMove(
                    unit=c.unit.name,
                    services=tuple(x.name for x in c.unit.services),
                    pin_service=c.unit.pin.name,
                    from_node=src_host,
                    to_node=dst_host,
                    bytes=c.bytes,
                    from_before_percent=fb,
                    from_after_percent=fa,
                    to_before_percent=tb,
                    to_after_percent=ta,
                    estimated=c.estimated,
                    reason=reason,
                )
            )
        return out

    def explain_left_over(
        self,
        candidates: list[Candidate],
        chosen: Sequence[tuple[int, int]],
        sources: list[int],
        moves: list[PlannedMove],
    ) -> None:
        st = self.settings
        moved = {c for c, _ in chosen}
        after = {m.from_node: m.from_after_percent for m in moves}
        for src in sources:
            host = self.nodes[src].hostname
            pct = after.get(host, self.samples[src].used_percent)
            idle = [c for i, c in enumerate(candidates) if c.source == src and i not in moved]
            if pct <= st.high_percent:
                if idle:
                    self.findings.append(
                        Finding(host, f"{len(idle)} other movable unit(s) not needed: {host} ends at {pct:.1f}%")
                    )
                continue
            n_out = sum(1 for c, _ in chosen if candidates[c].source == src)
            if not idle and n_out == 0:
                why = "no unit on it can move (see the findings for each)"
            elif len(chosen) >= st.max_moves_per_cycle:
                why = f"the move budget (max_moves_per_cycle={st.max_moves_per_cycle}) is used"
            elif n_out >= st.max_moves_per_node:
                why = f"the per-node limit (max_moves_per_node={st.max_moves_per_node}) is reached"
            elif idle:
                why = "the other movable units no longer fit on any qualified target after this cycle's moves"
            else:
                why = "all its movable units are moving and it is still above high"
            self.findings.append(
                Finding(host, f"stays above {st.high_percent:g}% ({pct:.1f}%) after this cycle: {why}", "warning")
            )
