"""Human (table) and JSON renderings of plans and snapshots for ``orcastra plan`` and ``orcastra status``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from orcastra.domain.actions import Action, SetNodeAvailability, UpdateNodeLabels, UpdateService
from orcastra.domain.labels import LEASE_HOLDER_LABEL, LEASE_MARKER_LABEL, LEASE_RENEWED_LABEL, OWNED_LABELS_KEY
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.wording import printable
from orcastra.features.agents.report import AgentEntry, LogrotateSummary
from orcastra.features.agents.view import AgentTarget
from orcastra.features.colocation.status import GroupStatus
from orcastra.features.rebalance import PlannedMove, RebalancePlan
from orcastra.features.static_labels.plan import owned_keys


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def action_json(a: Action) -> dict[str, object]:
    out: dict[str, object] = {"action": a.kind, "target": a.target, "change": a.describe()}
    if isinstance(a, SetNodeAvailability):
        out |= {"node_version": a.node_version, "availability": a.availability}
    elif isinstance(a, UpdateNodeLabels):
        out |= {
            "node_version": a.node_version,
            "set_labels": dict(a.set_labels),
            "remove_labels": list(a.remove_labels),
        }
    elif isinstance(a, UpdateService):
        out |= {
            "service_version": a.service_version,
            "add_constraints": list(a.add_constraints),
            "remove_constraints": list(a.remove_constraints),
            "force": a.force,
            "set_labels": dict(a.set_labels),
            "remove_labels": list(a.remove_labels),
        }
    return out | {"controller": a.controller, "reason": a.reason}


def moves_table(moves: Sequence[PlannedMove]) -> list[list[str]]:
    return [
        [
            m.unit,
            f"{m.from_node} -> {m.to_node}",
            f"{m.bytes / 2**20:.0f} MiB" + (" (estimated)" if m.estimated else ""),
            f"{m.from_before_percent:.0f}% -> {m.from_after_percent:.0f}%",
            f"{m.to_before_percent:.0f}% -> {m.to_after_percent:.0f}%",
            m.reason,
        ]
        for m in moves
    ]


def rebalance_json(r: RebalancePlan) -> dict[str, object]:
    return {
        "note": ONE_SHOT_NOTE,
        "moves": [
            {
                "unit": m.unit,
                "services": list(m.services),
                "pin_service": m.pin_service,
                "from_node": m.from_node,
                "to_node": m.to_node,
                "bytes": m.bytes,
                "estimated": m.estimated,
                "from_before_percent": m.from_before_percent,
                "from_after_percent": m.from_after_percent,
                "to_before_percent": m.to_before_percent,
                "to_after_percent": m.to_after_percent,
                "reason": m.reason,
            }
            for m in r.moves
        ],
        "nodes": [
            {
                "node": n.hostname,
                "used_percent": n.used_percent,
                "overloaded": n.overloaded,
                "overloaded_for_seconds": n.overloaded_for_seconds,
                "note": n.note,
            }
            for n in r.nodes
        ],
        "findings": [{"subject": f.subject, "level": f.level, "message": f.message} for f in r.findings],
    }


ONE_SHOT_NOTE = "one-shot plan: nodes above high are treated as if they had stayed there for the sustained period"


def render_rebalance(r: RebalancePlan) -> str:
    out = ["", f"rebalance ({ONE_SHOT_NOTE}):"]
    nodes = [
        [
            n.hostname,
            "-" if n.used_percent is None else f"{n.used_percent:.1f}%",
            "OVERLOADED" if n.overloaded else "",
            n.note,
        ]
        for n in r.nodes
    ]
    out.append(table(["NODE", "MEMORY", "", "NOTE"], nodes))
    out.append("")
    if r.moves:
        out.append(
            table(
                ["MOVE", "FROM -> TO", "MEMORY", "FROM BEFORE -> AFTER", "TO BEFORE -> AFTER", "REASON"],
                moves_table(r.moves),
            )
        )
    else:
        out.append("no moves")
    out += [f"{f.level}: {f.subject}: {f.message}" for f in r.findings]
    return "\n".join(out)


def render_plan(plan: Plan, rebalance: RebalancePlan | None = None, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "rebalance": rebalance_json(rebalance) if rebalance is not None else None,
                "actions": [action_json(a) for a in plan.actions],
                "findings": [{"subject": f.subject, "level": f.level, "message": f.message} for f in plan.findings],
            },
            indent=2,
        )
    out = []
    if plan.actions:
        rows = [[a.controller, a.target, a.describe(), a.reason] for a in plan.actions]
        out.append(table(["CONTROLLER", "TARGET", "CHANGE", "REASON"], rows))
    else:
        out.append("nothing to do: the Swarm matches the configuration")
    if plan.findings:
        out.append("")
        out += [f"{f.level}: {f.subject}: {f.message}" for f in plan.findings]
    if rebalance is not None:
        out.append(render_rebalance(rebalance))
    return "\n".join(out)


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f" (in {max(0.0, ts - now):.0f}s)"


def group_json(g: GroupStatus, now: float) -> dict[str, object]:
    return {
        "anchor": g.anchor,
        "source": g.source,
        "anchor_nodes": list(g.anchor_nodes),
        "colocated": g.colocated,
        "why": g.why,
        "restart_attempts": g.restart_attempts,
        "next_restart_at": g.next_restart_at,
        "next_restart": _when(g.next_restart_at, now),
        "dependents": [
            {
                "service": d.name,
                "nodes": list(d.nodes),
                "running": d.running,
                "desired": d.desired,
                "has_constraint": d.has_constraint,
                "colocated": d.colocated,
                "why": d.why,
            }
            for d in g.dependents
        ],
    }


def render_groups(groups: Sequence[GroupStatus], now: float) -> str:
    if not groups:
        return "no anchor groups (declare anchors: in the config or orcastra.follow labels on services)"
    rows = []
    for g in groups:
        state = "colocated" if g.colocated else "NOT colocated"
        backoff = f"; restart attempts {g.restart_attempts}" if g.restart_attempts else ""
        if g.next_restart_at is not None:
            backoff += f"; next restart {_when(g.next_restart_at, now)}"
        rows.append([g.anchor, "anchor", ",".join(g.anchor_nodes) or "-", state, (g.why or "") + backoff])
        for d in g.dependents:
            count = f"{d.running}/{d.desired}" if d.desired is not None else str(d.running)
            rows.append(
                ["", f"  {d.name}", ",".join(d.nodes) or "-", f"{count} running", "ok" if d.colocated else d.why]
            )
    return table(["ANCHOR", "SERVICE", "NODES", "STATE", "WHY"], rows)


def leader_json(snapshot: Snapshot, lease_name: str, ttl_seconds: float) -> dict[str, object]:
    """Who holds the leader lease (a 0-replica service of that name, see runtime/leadership.py), as its labels
    say: ``state`` is held, expired (not renewed within the ttl: no leader acts until a follower takes it
    over), released (a clean stop) or absent (no Orcastra ever ran leader election on this Swarm)."""
    lease = next((s for s in snapshot.services if s.name == lease_name and LEASE_MARKER_LABEL in s.labels), None)
    if lease is None:
        return {"lease": lease_name, "state": "absent", "holder": None, "renewed_seconds_ago": None}
    holder = lease.labels.get(LEASE_HOLDER_LABEL, "")
    try:
        ago: float | None = max(0.0, snapshot.taken_at - float(lease.labels.get(LEASE_RENEWED_LABEL, "")))
    except ValueError:
        ago = None
    fresh = ago is not None and ago <= ttl_seconds
    state = "released" if not holder else "held" if fresh else "expired"
    return {"lease": lease_name, "state": state, "holder": holder or None, "renewed_seconds_ago": ago}


def render_leader(leader: dict[str, object]) -> str:
    holder = printable(str(leader["holder"])) if leader["holder"] else "none"
    ago = leader["renewed_seconds_ago"]
    when = f", renewed {ago:.0f} s ago" if isinstance(ago, float) else ""
    state = leader["state"]
    if state == "held":
        return f"Leader: {holder} (lease {leader['lease']}{when})"
    if state == "absent":
        return f"Leader: none (no lease service {leader['lease']}: no Orcastra runs with leader election here)"
    return f"Leader: none ({holder if state == 'expired' else 'the last holder'} {state} the lease{when})"


AgentRow = tuple[AgentTarget, AgentEntry | None]


def _safe(text: str, limit: int = 80) -> str:
    """Text read from the network (a report, a task error) made safe for a terminal: no control characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _agent_report_cell(entry: AgentEntry | None, now: float) -> str:
    if entry is None:
        return "(no report: the controller's API did not answer, or has not polled yet)"
    r = entry.report
    seen = "" if entry.last_ok_at is None else f"; last ok {max(0.0, now - entry.last_ok_at):.0f}s ago"
    if not entry.up:
        return _safe(f"DOWN: {entry.error}{seen}", 120)
    if r is None:
        return "up"
    engine = "engine ok" if r.engine.reachable else f"ENGINE UNREACHABLE: {r.engine.error}"
    rss = f"{r.process.rss_bytes / 2**20:.1f} MiB"
    return _safe(f"up {r.uptime_seconds:.0f}s, v{r.version}, {rss}, {engine}", 120)


def _hygiene_cell(entry: AgentEntry | None, now: float) -> str:
    """The node's hygiene in a few words: the last GC run, what autoheal did, the last log rotation."""
    r = entry.report if entry is not None else None
    if r is None:
        return "-"
    parts = []
    if r.gc is not None:
        ago = f"{max(0.0, now - r.gc.finished_at):.0f}s ago"
        verb = "would free" if r.gc.dry_run else "freed"
        failed = f", {r.gc.failed} failed" if r.gc.failed else ""
        outcome = (
            f"ERROR {r.gc.error}"
            if r.gc.error
            else f"{r.gc.removed} removed{failed}, {verb} {r.gc.freed_bytes / 1e6:.0f} MB"
        )
        parts.append(f"gc ({r.gc.trigger}) {ago}: {outcome}")
    if r.autoheal is not None:
        gave_up = f", GAVE UP on {', '.join(r.autoheal.given_up)}" if r.autoheal.given_up else ""
        parts.append(f"autoheal: {r.autoheal.restarts} restart(s), {r.autoheal.swarm_left} left to Swarm{gave_up}")
    if r.mods is not None:
        m = r.mods
        ago = f"{max(0.0, now - m.finished_at):.0f}s ago"
        failed = f", {m.failed} FAILED" if m.failed else ""
        error = f", ERROR {m.error}" if m.error else ""
        parts.append(
            f"mods ({m.trigger}) {ago}: {m.wanted} wanted, {m.fetched} fetched, {m.pruned} pruned{failed}{error}"
        )
    if "gc" in r.features and r.facts_age_seconds is None:
        parts.append("no Swarm facts yet: images and volumes kept")
    if r.logrotate is not None:
        parts.extend(_logrotate_parts(r.logrotate, now))
    return _safe("; ".join(parts), 200) or "-"


def _logrotate_parts(lr: LogrotateSummary, now: float) -> list[str]:
    """The last log rotation run, and the containers whose json-file logs have no max-size."""
    ago = f"{max(0.0, now - lr.finished_at):.0f}s ago"
    parts = [f"logrotate {ago}: " + (f"ERROR {lr.error}" if lr.error else f"{lr.rotated} rotated")]
    if lr.unbounded_logs:
        names = ", ".join(lr.unbounded_examples[:3])
        more = ", ..." if lr.unbounded_logs > 3 else ""
        parts.append(f"{lr.unbounded_logs} json-file log(s) without max-size ({names}{more})")
    return parts


def render_agents(rows: Sequence[AgentRow], now: float) -> str:
    table_rows = [
        [
            t.hostname,
            t.task_state or "no task",
            t.address or "-",
            _agent_report_cell(e, now) if t.task_state else _safe(t.task_error) or "-",
            _hygiene_cell(e, now) if t.task_state else "-",
        ]
        for t, e in rows
    ]
    return table(["AGENT ON NODE", "TASK", "ADDRESS", "REPORT", "HYGIENE"], table_rows)


def agent_json(t: AgentTarget, e: AgentEntry | None) -> dict[str, object]:
    from msgspec import to_builtins

    out: dict[str, object] = {"node_id": t.node_id, "node": t.hostname, "task_state": t.task_state}
    return out | {"address": t.address, "entry": to_builtins(e) if e is not None else None}


def render_status(
    snapshot: Snapshot,
    groups: Sequence[GroupStatus],
    *,
    as_json: bool,
    leader: dict[str, object] | None = None,
    agents: Sequence[AgentRow] = (),
) -> str:
    nodes = sorted(snapshot.nodes, key=lambda n: n.hostname)
    now = snapshot.taken_at
    if as_json:
        return json.dumps(
            {
                "leader": leader,
                "agents": [agent_json(t, e) for t, e in agents],
                "groups": [group_json(g, now) for g in groups],
                "nodes": [
                    {
                        "id": n.id,
                        "hostname": n.hostname,
                        "state": n.state,
                        "availability": n.availability,
                        "role": n.role,
                        "leader": n.leader,
                        "addr": n.addr,
                        "labels": dict(n.labels),
                        "owned_labels": sorted(owned_keys(n)),
                    }
                    for n in nodes
                ],
            },
            indent=2,
        )
    rows = []
    for n in nodes:
        owned = owned_keys(n)
        labels = " ".join(
            f"{k}={v}{'*' if k in owned else ''}" for k, v in sorted(n.labels.items()) if k != OWNED_LABELS_KEY
        )
        role = n.role + (" (leader)" if n.leader else "")
        rows.append([n.hostname, n.state, n.availability, role, n.addr, labels or "-"])
    return "\n".join(
        ([render_leader(leader), ""] if leader is not None else [])
        + [
            table(["NODE", "STATE", "AVAILABILITY", "ROLE", "ADDR", "LABELS (* = set by Orcastra)"], rows),
            "",
            render_groups(groups, now),
            *(["", render_agents(agents, now)] if agents else []),
        ]
    )


def render_gc(node: str, result: dict[str, Any]) -> str:
    """One agent's GC run (``POST /v1/gc``'s answer), as lines: the totals, then each removal."""
    dry = bool(result.get("dry_run"))
    verb, freed = ("would remove", "would free") if dry else ("removed", "freed")
    head = (
        f"{_safe(node)}: {result.get('removed_count', 0)} {verb}, {freed} {int(result.get('freed_bytes', 0)):,} bytes"
    )
    if result.get("failed_count"):
        head += f", {result['failed_count']} failed"
    if result.get("error"):
        head += f"; ERROR {_safe(str(result['error']), 200)}"
    lines = [head]
    for item in result.get("removed", []) or []:
        lines.append(
            _safe(
                f"  {item.get('kind')} {item.get('name')} ({int(item.get('bytes', 0)):,} B): {item.get('reason')}", 300
            )
        )
    for item in result.get("failed", []) or []:
        lines.append(_safe(f"  FAILED {item.get('kind')} {item.get('name')}: {item.get('error')}", 300))
    lines += [_safe(f"  note: {n}", 300) for n in result.get("notes", []) or []]
    shown = len(result.get("removed", []) or [])
    if shown < int(result.get("removed_count", 0)):
        lines.append(f"  ... and {int(result['removed_count']) - shown} more (the agent's audit lines list them all)")
    return "\n".join(lines)
