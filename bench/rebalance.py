"""Rebalancing planner: plan quality against a MILP optimum, and plan time on a large cluster.

Quality: seeded random clusters (10-200 nodes, up to 5,000 services, anchor groups, placement constraints,
global and spread services, a few nodes over `high`) are built as real Snapshots and MemoryViews. The
planner's own eligibility step turns each into a MoveProblem (candidate units on overloaded nodes, their
qualified targets); the heuristic ``choose_moves`` and scipy's MILP (HiGHS) solve the same problem with the
same budget and the same lexicographic objective (nodes left above high, their excess, moves, peak), and
both plans are scored by ``evaluate``. Targets: peak within 3% of the optimum, moves <= optimum + 1.

Speed: ``plan_rebalance`` on 500 nodes x 10,000 services (from Snapshot + MemoryView) and the core alone,
medians of repeated runs, also as ratios to baselines measured in the same run (building the Snapshot;
sorting its tasks) because the machine is noisy.

Usage: python -m bench.rebalance [--quick] [--instances 100] [--seed 1] [--time-limit 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy  # type: ignore[import-untyped]
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
from scipy.sparse import coo_array  # type: ignore[import-untyped]

from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.domain.usage import MemoryView, NodeMemory, TaskMemory
from orcastra.features.colocation.plan import AnchorGroup, anchor_constraint
from orcastra.features.rebalance import (
    MoveProblem,
    RebalanceHistory,
    RebalanceInput,
    choose_moves,
    evaluate,
    plan_rebalance,
)
from orcastra.features.rebalance.plan import build_problem
from orcastra.features.rebalance.settings import RebalanceSettings

RESULTS = Path(__file__).parent / "results"
NOW = 1_000_000.0
GIB = 1 << 30
MIB = 1 << 20
PEAK_TOLERANCE = 0.03  # relative
ZONES = ("a", "b", "c")


# --- cluster generation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    snapshot: Snapshot
    memory: MemoryView
    groups: tuple[AnchorGroup, ...]
    settings: RebalanceSettings
    history: RebalanceHistory


def generate(rng: random.Random, n_nodes: int, n_services: int, settings: RebalanceSettings) -> Cluster:
    """A cluster where most nodes are fine and a few are over `high`; usage is the sum of what runs."""
    nodes = []
    for i in range(n_nodes):
        labels = {"zone": ZONES[i % 3], **({"ssd": "true"} if rng.random() < 0.5 else {})}
        availability = "drain" if rng.random() < 0.03 else "active"
        role = "manager" if i < 3 else "worker"
        memory = rng.choice((8, 16, 32, 64)) * GIB
        nodes.append(
            Node(
                f"id{i}", 1, f"node{i}", role, availability, "ready", labels=frozen_labels(labels), memory_bytes=memory
            )
        )
    # Units to place: (services, bytes per service). ~10% are anchor groups with 1-3 dependents.
    services: list[Service] = []
    groups: list[AnchorGroup] = []
    units: list[list[tuple[Service, int]]] = []
    k = 0
    while len(services) < n_services:
        size = int(rng.lognormvariate(np.log(300 * MIB), 1.0))
        constraints: tuple[str, ...] = ()
        r = rng.random()
        if r < 0.08:
            constraints = (f"node.labels.zone=={rng.choice(ZONES)}",)
        elif r < 0.12:
            constraints = ("node.labels.ssd==true",)
        elif r < 0.14:
            constraints = ("node.role==worker",)
        elif r < 0.15:
            constraints = (f"node.hostname!=node{rng.randrange(n_nodes)}",)
        mode = "global" if rng.random() < 0.01 else "replicated"
        anchor = Service(id=f"s{k}", version=1, name=f"svc{k}", mode=mode, replicas=1, constraints=constraints)
        k += 1
        members = [(anchor, size)]
        if mode == "replicated" and rng.random() < 0.1:
            deps = []
            for _ in range(rng.randint(1, 3)):
                dep = Service(
                    id=f"s{k}", version=1, name=f"svc{k}", replicas=1, constraints=(anchor_constraint(anchor.name),)
                )
                k += 1
                deps.append(dep.name)
                members.append((dep, int(rng.lognormvariate(np.log(100 * MIB), 0.8))))
            groups.append(AnchorGroup(anchor.name, tuple(deps)))
        services += [s for s, _ in members]
        units.append(members)
    # Per-node desired utilisation: ~5% of nodes over high, the rest spread below it.
    desired = [
        rng.uniform(settings.high_percent + 1, 98) if rng.random() < 0.05 else rng.uniform(20, 80)
        for _ in range(n_nodes)
    ]
    if not any(d > settings.high_percent for d in desired):
        desired[rng.randrange(n_nodes)] = rng.uniform(settings.high_percent + 1, 98)
    load = [int(rng.uniform(0.3, 1.0) * GIB) for _ in nodes]  # system memory
    tasks: list[Task] = []
    mem_tasks: list[TaskMemory] = []
    active = [i for i, n in enumerate(nodes) if n.availability == "active"]
    for members in units:
        i = rng.choice(active)
        spread = members[0][0].mode == "replicated" and rng.random() < 0.03
        for svc, size in members:
            hosts = [i] if not spread else [i, rng.choice(active)]
            for j, h in enumerate(dict.fromkeys(hosts)):
                tasks.append(Task(f"t{svc.id}.{j}", svc.id, nodes[h].id, j + 1, "running", "running"))
                load[h] += size
                if rng.random() > 0.002:  # a very few tasks have no measurement
                    mem_tasks.append(TaskMemory(svc.name, nodes[h].hostname, size, NOW - 10, "engine-stats"))
    # Each node's size makes its utilisation the desired one (what runs there is what it uses).
    node_mem = {
        n.hostname: NodeMemory(n.hostname, int(load[i] * 100 / desired[i]), load[i], NOW - 5, "prometheus")
        for i, n in enumerate(nodes)
    }
    since = {
        h: NOW - 2 * settings.sustained_seconds for h, m in node_mem.items() if m.used_percent > settings.high_percent
    }
    return Cluster(
        snapshot=Snapshot(tuple(nodes), tuple(services), tuple(tasks), taken_at=NOW),
        memory=MemoryView(nodes=MappingProxyType(node_mem), tasks=tuple(mem_tasks), taken_at=NOW),
        groups=tuple(groups),
        settings=settings,
        history=RebalanceHistory(overloaded_since=MappingProxyType(since)),
    )


# --- the MILP optimum -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimum:
    moves: tuple[tuple[int, int], ...]
    proven: bool
    seconds: float


def solve_milp(p: MoveProblem, time_limit: float) -> Optimum:
    """Lexicographic optimum by three solves: (W*above + excess), then moves, then peak."""
    started = time.perf_counter()
    used = np.asarray(p.node_used, dtype=float)
    total = np.asarray(p.node_total, dtype=float)
    margin = 1 + p.safety_margin_percent / 100
    pairs = [(c, t) for c in range(len(p.cand_source)) for t in p.cand_targets[c]]
    nx, ns = len(pairs), len(p.sources)
    # Variables: x (pairs) | z (one per source, binary) | e (excess per source) | P (peak)
    iz, ie, ip = nx, nx + ns, nx + 2 * ns
    nv = ip + 1
    src_pos = {s: k for k, s in enumerate(p.sources)}
    rows: list[tuple[dict[int, float], float, float]] = []

    def row(coefs: dict[int, float], lo: float, hi: float) -> None:
        rows.append((coefs, lo, hi))

    by_cand: dict[int, dict[int, float]] = {}
    by_target: dict[int, dict[int, float]] = {}
    cap_row: dict[int, dict[int, float]] = {}
    out_of: dict[int, dict[int, float]] = {}
    peak_in: dict[int, dict[int, float]] = {}
    for v, (c, t) in enumerate(pairs):
        s, b = p.cand_source[c], float(p.cand_bytes[c])
        by_cand.setdefault(c, {})[v] = 1
        by_target.setdefault(t, {})[v] = 1
        cap_row.setdefault(t, {})[v] = b * margin
        out_of.setdefault(s, {})[v] = -100 * b / total[s]
        peak_in.setdefault(t, {})[v] = 100 * b / total[t]
    for coefs in by_cand.values():
        row(coefs, -np.inf, 1)
    row(dict.fromkeys(range(nx), 1.0), -np.inf, p.max_moves)
    for t, coefs in by_target.items():
        row(coefs, -np.inf, p.max_moves_per_node)
        row(cap_row[t], -np.inf, p.target_percent / 100 * total[t] - used[t])
        row({**peak_in[t], ip: -1}, -np.inf, -100 * used[t] / total[t])
    for s in p.sources:
        k = src_pos[s]
        coefs = out_of.get(s, {})
        base = 100 * used[s] / total[s]
        if coefs:
            row(dict.fromkeys(coefs, 1.0), -np.inf, p.max_moves_per_node)
        row({**coefs, ie + k: -1}, -np.inf, p.high_percent - base)  # e >= util - high
        row({**coefs, iz + k: -100}, -np.inf, p.high_percent - base)  # util - high <= 100 z
        row({**coefs, ip: -1}, -np.inf, -base)  # P >= util
    fixed = [i for i in range(len(used)) if i not in src_pos]
    peak_floor = max((100 * used[i] / total[i] for i in fixed), default=0.0)

    integrality = np.zeros(nv)
    integrality[: nx + ns] = 1
    lower = np.zeros(nv)
    upper = np.concatenate([np.ones(nx + ns), np.full(ns, np.inf), [np.inf]])
    lower[ip] = peak_floor
    bounds = Bounds(lower, upper)
    proven = True

    def solve(objective: np.ndarray, extra: list[tuple[dict[int, float], float, float]]) -> np.ndarray | None:
        nonlocal proven
        all_rows = rows + extra
        r_idx, c_idx, vals = [], [], []
        for i, (coefs, _, _) in enumerate(all_rows):
            for j, v in coefs.items():
                r_idx.append(i)
                c_idx.append(j)
                vals.append(v)
        a = coo_array((vals, (r_idx, c_idx)), shape=(len(all_rows), nv)).tocsr()
        lo = np.array([r[1] for r in all_rows])
        hi = np.array([r[2] for r in all_rows])
        left = max(0.1, time_limit - (time.perf_counter() - started))
        res = milp(
            objective,
            constraints=LinearConstraint(a, lo, hi),
            integrality=integrality,
            bounds=bounds,
            options={"time_limit": left, "mip_rel_gap": 1e-6},
        )
        if res.status != 0:
            proven = False
        return None if res.x is None else np.asarray(res.x)

    w = 100.0 * (ns + 1)  # more than any possible sum of excess: fewer nodes above high always wins
    obj1 = np.zeros(nv)
    obj1[iz : iz + ns] = w
    obj1[ie : ie + ns] = 1
    x1 = solve(obj1, [])
    if x1 is None:
        return Optimum((), False, time.perf_counter() - started)
    above = round(float(x1[iz : iz + ns].sum()))
    excess = float(x1[ie : ie + ns].sum())
    keep = [
        (dict.fromkeys(range(iz, iz + ns), 1.0), -np.inf, above + 0.5),
        (dict.fromkeys(range(ie, ie + ns), 1.0), -np.inf, excess + 1e-6 + 1e-6 * excess),
    ]
    obj2 = np.zeros(nv)
    obj2[:nx] = 1
    x2 = solve(obj2, keep)
    best = x2 if x2 is not None else x1
    n_moves = round(float(best[:nx].sum()))
    obj3 = np.zeros(nv)
    obj3[ip] = 1
    x3 = solve(obj3, [*keep, (dict.fromkeys(range(nx), 1.0), -np.inf, n_moves + 0.5)])
    best = x3 if x3 is not None else best
    moves = tuple(pairs[v] for v in range(nx) if best[v] > 0.5)
    return Optimum(moves, proven, time.perf_counter() - started)


# --- quality --------------------------------------------------------------------------------------------


def quality(instances: int, seed: int, time_limit: float, max_nodes: int, max_services: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    attempts = 0
    while len(rows) < instances and attempts < instances * 5:
        attempts += 1
        n_nodes = rng.randint(10, max_nodes)
        n_services = min(max_services, n_nodes * rng.randint(5, 25))
        settings = RebalanceSettings(
            max_moves_per_cycle=rng.choice((1, 2, 3, 5, 8)), max_moves_per_node=rng.choice((1, 2, 3))
        )
        cluster = generate(rng, n_nodes, n_services, settings)
        problem = build_problem(
            RebalanceInput(
                cluster.snapshot, cluster.memory, cluster.groups, settings, cluster.history, NOW, overrides={}
            )
        )
        if not problem.cand_source:
            continue  # nothing movable: both sides trivially agree; not a test of anything
        t0 = time.perf_counter()
        heuristic = choose_moves(problem)
        heuristic_seconds = time.perf_counter() - t0
        optimum = solve_milp(problem, time_limit)
        h, o = evaluate(problem, heuristic), evaluate(problem, optimum.moves)
        gap = (h.peak_percent - o.peak_percent) / o.peak_percent
        rows.append(
            {
                "nodes": n_nodes,
                "services": n_services,
                "sources": len(problem.sources),
                "candidates": len(problem.cand_source),
                "pairs": sum(len(t) for t in problem.cand_targets),
                "budget": settings.max_moves_per_cycle,
                "per_node": settings.max_moves_per_node,
                "heuristic": {"above": h.above, "excess": h.excess_percent, "moves": h.moves, "peak": h.peak_percent},
                "optimum": {"above": o.above, "excess": o.excess_percent, "moves": o.moves, "peak": o.peak_percent},
                "proven_optimal": optimum.proven,
                "peak_gap": gap,
                "moves_over": h.moves - o.moves,
                "meets": gap <= PEAK_TOLERANCE and h.moves <= o.moves + 1,
                "heuristic_seconds": heuristic_seconds,
                "milp_seconds": optimum.seconds,
            }
        )
        print(
            f"  #{len(rows):3d} nodes={n_nodes:3d} services={n_services:4d} sources={len(problem.sources):2d} "
            f"cands={len(problem.cand_source):4d} budget={settings.max_moves_per_cycle}/{settings.max_moves_per_node} "
            f"peak {h.peak_percent:6.2f} vs {o.peak_percent:6.2f} moves {h.moves} vs {o.moves} "
            f"above {h.above} vs {o.above}{'' if optimum.proven else ' (not proven)'}",
            flush=True,
        )
    gaps = [r["peak_gap"] for r in rows]
    over = [r["moves_over"] for r in rows]
    return {
        "instances": len(rows),
        "meeting_targets": sum(r["meets"] for r in rows),
        "proven_optimal": sum(r["proven_optimal"] for r in rows),
        "peak_gap_mean": statistics.fmean(gaps) if gaps else 0.0,
        "peak_gap_max": max(gaps, default=0.0),
        "moves_over_mean": statistics.fmean(over) if over else 0.0,
        "moves_over_max": max(over, default=0),
        "more_nodes_left_above_high": sum(r["heuristic"]["above"] > r["optimum"]["above"] for r in rows),
        "heuristic_seconds_max": max((r["heuristic_seconds"] for r in rows), default=0.0),
        "milp_seconds_total": sum(r["milp_seconds"] for r in rows),
        "rows": rows,
    }


# --- speed ----------------------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(n_nodes: int, n_services: int, repeat: int, seed: int) -> dict[str, Any]:
    settings = RebalanceSettings(max_moves_per_cycle=10, max_moves_per_node=2)
    cluster = generate(random.Random(seed), n_nodes, n_services, settings)
    snap = cluster.snapshot
    build = median_seconds(lambda: Snapshot(snap.nodes, snap.services, snap.tasks, snap.taken_at), repeat)
    sort = median_seconds(lambda: sorted(snap.tasks, key=lambda t: (t.node_id, t.service_id)), repeat)
    result = plan_rebalance(RebalanceInput(snap, cluster.memory, cluster.groups, settings, cluster.history, NOW))

    def full() -> object:
        return plan_rebalance(RebalanceInput(snap, cluster.memory, cluster.groups, settings, cluster.history, NOW))

    problem = build_problem(RebalanceInput(snap, cluster.memory, cluster.groups, settings, cluster.history, NOW))
    plan_s = median_seconds(full, repeat)
    core_s = median_seconds(lambda: choose_moves(problem), repeat)
    return {
        "nodes": n_nodes,
        "services": len(snap.services),
        "tasks": len(snap.tasks),
        "sources": len(problem.sources),
        "candidates": len(problem.cand_source),
        "moves": len(result.moves),
        "budget": [settings.max_moves_per_cycle, settings.max_moves_per_node],
        "plan_seconds": plan_s,
        "core_seconds": core_s,
        "baseline_snapshot_build_seconds": build,
        "baseline_task_sort_seconds": sort,
        "plan_over_snapshot_build": plan_s / build,
        "plan_over_task_sort": plan_s / sort,
        "core_over_task_sort": core_s / sort,
        "repeat": repeat,
    }


# --- report ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rebalance", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few small instances: a smoke test in seconds")
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=10.0, help="HiGHS seconds per instance (all stages)")
    ap.add_argument("--json", type=Path, default=None, help="where to write the results (default bench/results/)")
    args = ap.parse_args(argv)
    if args.quick:
        instances, time_limit, max_nodes, max_services = 5, 2.0, 30, 400
        speed_nodes, speed_services, repeat = 50, 1000, 3
    else:
        instances, time_limit, max_nodes, max_services = args.instances, args.time_limit, 200, 5000
        speed_nodes, speed_services, repeat = 500, 10_000, 5

    print(f"quality: {instances} clusters, HiGHS time limit {time_limit:g} s per instance")
    q = quality(instances, args.seed, time_limit, max_nodes, max_services)
    print(f"speed: {speed_nodes} nodes x {speed_services} services, median of {repeat}")
    s = speed(speed_nodes, speed_services, repeat, args.seed)

    print()
    print(f"{'quality':<44}{'value':>14}")
    print(f"{'instances':<44}{q['instances']:>14}")
    print(f"{'meeting targets (peak <=3%, moves <=opt+1)':<44}{q['meeting_targets']:>14}")
    print(f"{'proven optimal by HiGHS':<44}{q['proven_optimal']:>14}")
    print(f"{'peak gap mean / max (relative)':<44}{q['peak_gap_mean']:>7.2%} / {q['peak_gap_max']:.2%}")
    print(f"{'moves over optimum mean / max':<44}{q['moves_over_mean']:>7.2f} / {q['moves_over_max']}")
    print(f"{'instances leaving more nodes above high':<44}{q['more_nodes_left_above_high']:>14}")
    print(f"{'heuristic max seconds per instance':<44}{q['heuristic_seconds_max']:>14.4f}")
    print()
    print(f"{'speed':<44}{'value':>14}")
    print(f"{'plan_rebalance seconds':<44}{s['plan_seconds']:>14.4f}")
    print(f"{'choose_moves (core) seconds':<44}{s['core_seconds']:>14.4f}")
    print(f"{'baseline: Snapshot build seconds':<44}{s['baseline_snapshot_build_seconds']:>14.4f}")
    print(f"{'baseline: task sort seconds':<44}{s['baseline_task_sort_seconds']:>14.4f}")
    print(f"{'plan / Snapshot build':<44}{s['plan_over_snapshot_build']:>14.2f}")
    print(f"{'plan / task sort':<44}{s['plan_over_task_sort']:>14.2f}")
    print(f"{'core / task sort':<44}{s['core_over_task_sort']:>14.2f}")

    out = {
        "bench": "rebalance",
        "when": datetime.now().isoformat(timespec="seconds"),
        "args": {"quick": args.quick, "instances": instances, "seed": args.seed, "time_limit": time_limit},
        "machine": machine(),
        "quality": q,
        "speed": s,
    }
    path = args.json
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"rebalance-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
