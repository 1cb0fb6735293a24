"""The rebalancer's optimisation core on plain arrays: which candidate units to move, and to which nodes.

Knows nothing of Swarm: nodes are indices with used/total bytes, a candidate is a unit on an overloaded
node with its bytes and the nodes it may go to (placement, availability and anti-flap already applied by
the caller). ``bench.rebalance`` calls it directly and compares it with a MILP optimum.

Objective, lexicographic (docs/rebalancing.md explains why in this order):
1. as few overloaded nodes as possible left above ``high``;
2. the least total excess above ``high`` on those left (a node that cannot be fixed this cycle is relieved
   as far as the budget allows, so the next cycle has less to do);
3. as few moves as possible;
4. the lowest peak utilisation over all nodes.
Hard limits: the move budget, the per-node limit (moves out of a source, into a target), and a target must
stay at or under ``target`` with the unit's bytes counted ``1 + safety margin`` times.

Heuristic (fast; a few milliseconds for hundreds of candidates): fix first the overloaded nodes that need the
fewest moves (largest units first: the fewest units whose removal covers the excess also remove the most),
then spend what is left of the budget on the biggest relief, then a local improvement pass (drop a useless
move, re-target, swap a unit for a bigger one). Run with two target rules (worst fit: lowest resulting
utilisation; best fit: keep big holes for big units) and two unit rules (largest, or the smallest one that
finishes the node); the best plan by the objective wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Relative slack for float comparisons of byte sums: a node exactly at `high` counts as fixed.
EPSILON = 1e-9


@dataclass(frozen=True)
class MoveProblem:
    """One cycle's decision on plain arrays (indices into the node arrays)."""

    node_used: Sequence[float]  # bytes
    node_total: Sequence[float]  # bytes, > 0
    sources: Sequence[int]  # nodes to bring under high (overloaded for the sustained period)
    cand_source: Sequence[int]  # the node each candidate unit runs on
    cand_bytes: Sequence[float]
    cand_targets: Sequence[Sequence[int]]  # nodes the candidate may go to (capacity is checked here)
    cand_preferred: Sequence[int]  # a preferred target node, or -1
    # The thresholds and limits of RebalanceSettings (no defaults here: they are defined there, once).
    high_percent: float
    target_percent: float
    safety_margin_percent: float
    max_moves: int
    max_moves_per_node: int


@dataclass(frozen=True)
class Score:
    above: int  # sources still above high
    excess_percent: float  # sum over sources of percentage points above high
    moves: int
    peak_percent: float  # highest utilisation over all nodes

    def key(self) -> tuple[int, float, int, float]:
        # Rounded so that float noise never makes an equal plan look better.
        return (self.above, round(self.excess_percent, 6), self.moves, round(self.peak_percent, 9))


Move = tuple[int, int]  # (candidate, target node)


class _State:
    """A plan being built: node usage after the moves so far, with commit/undo for trial moves."""

    def __init__(self, p: MoveProblem) -> None:
        self.p = p
        self.used = [float(u) for u in p.node_used]
        self.total = [float(t) for t in p.node_total]
        n = len(self.used)
        self.out_count = [0] * n
        self.in_count = [0] * n
        self.cap = [p.target_percent / 100.0 * t for t in self.total]
        self.hi = [p.high_percent / 100.0 * t for t in self.total]
        margin = 1.0 + p.safety_margin_percent / 100.0
        self.eff = [float(b) * margin for b in p.cand_bytes]
        # Peak without an O(nodes) scan per trial: nodes sorted by their initial utilisation, plus the
        # few nodes a move has touched.
        self.initial_order = sorted(range(n), key=lambda i: -self.used[i] / self.total[i])
        self.touched: dict[int, int] = {}
        self.moved: set[int] = set()
        self.moves: list[Move] = []
        self.by_source: dict[int, list[int]] = {}
        for c, s in enumerate(p.cand_source):
            self.by_source.setdefault(s, []).append(c)
        for cands in self.by_source.values():
            cands.sort(key=lambda c: (-p.cand_bytes[c], c))

    def above(self, s: int) -> bool:
        return self.used[s] > self.hi[s] + EPSILON * self.total[s]

    def commit(self, c: int, t: int) -> None:
        s = self.p.cand_source[c]
        b = float(self.p.cand_bytes[c])
        self.used[s] -= b
        self.used[t] += b
        self.out_count[s] += 1
        self.in_count[t] += 1
        self.touched[s] = self.touched.get(s, 0) + 1
        self.touched[t] = self.touched.get(t, 0) + 1
        self.moved.add(c)
        self.moves.append((c, t))

    def undo(self, c: int, t: int) -> None:
        s = self.p.cand_source[c]
        b = float(self.p.cand_bytes[c])
        self.used[s] += b
        self.used[t] -= b
        self.out_count[s] -= 1
        self.in_count[t] -= 1
        for i in (s, t):
            left = self.touched[i] - 1
            if left:
                self.touched[i] = left
            else:
                del self.touched[i]
        self.moved.discard(c)
        self.moves.remove((c, t))

    def can_leave(self, c: int) -> bool:
        s = self.p.cand_source[c]
        return (
            c not in self.moved and self.out_count[s] < self.p.max_moves_per_node and len(self.moves) < self.p.max_moves
        )

    def fits(self, c: int, t: int) -> bool:
        return (
            self.in_count[t] < self.p.max_moves_per_node
            and self.used[t] + self.eff[c] <= self.cap[t] + EPSILON * self.total[t]
        )

    def target(self, c: int, best_fit: bool) -> int:
        """The target for ``c``: its preferred node if that fits, else by the rule; -1 if none fits."""
        pref = self.p.cand_preferred[c]
        if pref >= 0 and pref in self.p.cand_targets[c] and self.fits(c, pref):
            return pref
        b = float(self.p.cand_bytes[c])
        best, best_value = -1, 0.0
        for t in self.p.cand_targets[c]:
            if not self.fits(c, t):
                continue
            # worst fit: lowest utilisation after the move (lowers the peak); best fit: least room left.
            value = (self.cap[t] - self.used[t] - self.eff[c]) if best_fit else (self.used[t] + b) / self.total[t]
            if best < 0 or value < best_value or (value == best_value and t < best):
                best, best_value = t, value
        return best

    def score(self) -> Score:
        high = self.p.high_percent
        above, excess = 0, 0.0
        for s in self.p.sources:
            if self.above(s):
                above += 1
                excess += max(0.0, 100.0 * self.used[s] / self.total[s] - high)
        peak = max((100.0 * self.used[i] / self.total[i] for i in self.touched), default=0.0)
        for i in self.initial_order:
            if i not in self.touched:
                peak = max(peak, 100.0 * self.used[i] / self.total[i])
                break
        return Score(above, excess, len(self.moves), peak)


def _fix_plan(st: _State, s: int, best_fit: bool, smallest_last: bool) -> list[Move] | None:
    """The moves that bring ``s`` under high, fewest first; None if the limits do not allow it."""
    trial: list[Move] = []
    while st.above(s):
        need = st.used[s] - st.hi[s]
        pick = -1
        pick_target = -1
        cands = [c for c in st.by_source.get(s, ()) if st.can_leave(c)]
        if smallest_last:
            # The smallest unit that finishes the node on its own keeps target room for other nodes.
            for c in reversed(cands):
                if st.p.cand_bytes[c] >= need - EPSILON * st.total[s]:
                    t = st.target(c, best_fit)
                    if t >= 0:
                        pick, pick_target = c, t
                        break
        if pick < 0:
            for c in cands:
                t = st.target(c, best_fit)
                if t >= 0:
                    pick, pick_target = c, t
                    break
        if pick < 0:
            break
        st.commit(pick, pick_target)
        trial.append((pick, pick_target))
    fixed = not st.above(s)
    for c, t in reversed(trial):
        st.undo(c, t)
    return trial if fixed else None


def _greedy(st: _State, best_fit: bool, smallest_last: bool) -> None:
    _fix_nodes(st, best_fit, smallest_last)
    _relieve(st, best_fit)


def _fix_nodes(st: _State, best_fit: bool, smallest_last: bool) -> None:
    """Fix overloaded nodes one at a time, the one needing the fewest moves (then the fullest) first."""
    p = st.p
    hopeless: set[int] = set()  # capacity only shrinks as moves are added: unfixable stays unfixable
    while len(st.moves) < p.max_moves:
        best: list[Move] | None = None
        best_key: tuple[int, float] = (0, 0.0)
        for s in p.sources:
            if s in hopeless or not st.above(s):
                continue
            plan = _fix_plan(st, s, best_fit, smallest_last)
            if plan is None:
                hopeless.add(s)
                continue
            key = (len(plan), -st.used[s] / st.total[s])
            if best is None or key < best_key:
                best, best_key = plan, key
        if best is None:
            return
        for c, t in best:
            st.commit(c, t)


def _relieve(st: _State, best_fit: bool) -> None:
    """Relief: nodes that cannot be fixed this cycle get the biggest unit that can go."""
    p = st.p
    while len(st.moves) < p.max_moves:
        pick: Move | None = None
        pick_value = (0.0, 0.0)
        for s in p.sources:
            if not st.above(s) or st.out_count[s] >= p.max_moves_per_node:
                continue
            move = _first_leaving(st, s, best_fit)
            if move is None:
                continue
            excess = st.used[s] - st.hi[s]
            value = (min(float(p.cand_bytes[move[0]]), excess) / st.total[s], st.used[s] / st.total[s])
            if pick is None or value > pick_value:
                pick, pick_value = move, value
        if pick is None:
            return
        st.commit(*pick)


def _first_leaving(st: _State, s: int, best_fit: bool) -> Move | None:
    """The largest unit of node ``s`` that can leave, with its target."""
    for c in st.by_source.get(s, ()):
        if not st.can_leave(c):
            continue
        t = st.target(c, best_fit)
        if t >= 0:
            return (c, t)
    return None


def _improve(st: _State) -> None:
    p = st.p
    current = st.score().key()
    # 1. Drop a move that does not help (possible when a later, bigger move finished the node).
    for c, t in reversed(list(st.moves)):
        st.undo(c, t)
        key = st.score().key()
        if key <= current:
            current = key
        else:
            st.commit(c, t)
    # 2. Re-target and 3. swap a unit for a bigger one from the same node, whenever that scores better.
    for c, t in list(st.moves):
        s = p.cand_source[c]
        st.undo(c, t)
        best_move, best_key = (c, t), current
        options = [c] + [o for o in st.by_source.get(s, ()) if o != c and p.cand_bytes[o] > p.cand_bytes[c]]
        for o in options:
            if not st.can_leave(o):
                continue
            u = st.target(o, best_fit=False)  # the lowest resulting utilisation: what lowers the peak
            if u < 0:
                continue
            st.commit(o, u)
            key = st.score().key()
            st.undo(o, u)
            if key < best_key:
                best_move, best_key = (o, u), key
        st.commit(*best_move)
        current = best_key


def evaluate(problem: MoveProblem, moves: Sequence[Move]) -> Score:
    """The objective of a plan (the bench scores the MILP's plan with it too)."""
    st = _State(problem)
    for c, t in moves:
        st.commit(c, t)
    return st.score()


def choose_moves(problem: MoveProblem) -> tuple[Move, ...]:
    """The moves to make, as (candidate, target node) in the order they should be reported."""
    if not problem.sources or not problem.cand_source or problem.max_moves <= 0:
        return ()
    best: tuple[Move, ...] = ()
    best_key: tuple[int, float, int, float] | None = None
    for best_fit in (False, True):
        for smallest_last in (False, True):
            st = _State(problem)
            _greedy(st, best_fit, smallest_last)
            if st.moves:
                _improve(st)
            key = st.score().key()
            if best_key is None or key < best_key:
                best, best_key = tuple(st.moves), key
    return best
