"""Colocation reaction on the real lab Swarm: how fast Orcastra follows a moved anchor, against Swarm itself.

Each round moves the anchor between node2 and node3 (its placement constraint is flipped), then measures:
- decision latency: anchor task running (Swarm's own task timestamp) -> Orcastra's label write (audit log, ms);
- end-to-end: anchor task running -> every dependent task running beside it.
The baseline, in the same run: Orcastra is stopped, the anchor moved the same way, and the bench itself moves
the label "by hand" the moment the anchor runs; Swarm's time from that label move to all dependents running
is what Orcastra's end-to-end is compared with (ratio; target <= 1.3).

Usage: python -m bench.colocation [--rounds 10] [--dependents 3] [--mode event|polling] [--json FILE]
Needs root and the lab (`orcastra lab up`); it deploys and removes its own stack "bench".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import docker

from orcastra import __version__
from orcastra.adapters.engine.parse import parse_time
from orcastra.features.colocation.plan import anchor_label_key
from orcastra_lab import Lab, LabEnv

STACK = "bench"
ANCHOR = f"{STACK}_db"
KEY = anchor_label_key(ANCHOR)
RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def stack_file(dependents: int) -> str:
    lines = [
        'version: "3.8"',
        "services:",
        "  db:",
        "    image: ${ORCASTRA_LAB_IMAGE}",
        "    deploy:",
        "      placement:",
        "        constraints: [node.hostname == node2]",
    ]
    for i in range(dependents):
        lines += [
            f"  dep{i}:",
            "    image: ${ORCASTRA_LAB_IMAGE}",
            "    deploy:",
            "      labels: {orcastra.follow: db}",
            "      placement:",
            f"        constraints: [node.labels.{KEY} == true]",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Round:
    mode: str
    anchor_node: str
    anchor_running_at: float
    label_at: float | None
    all_running_at: float

    @property
    def decision(self) -> float | None:
        return None if self.label_at is None else self.label_at - self.anchor_running_at

    @property
    def end_to_end(self) -> float:
        start = self.label_at if self.mode == "swarm-by-hand" and self.label_at else self.anchor_running_at
        return self.all_running_at - start


@dataclass
class Bench:
    env: LabEnv
    api: Any
    dependents: int
    workdir: Path
    rounds: list[Round] = field(default_factory=list)

    def dependent_names(self) -> list[str]:
        return [f"{STACK}_dep{i}" for i in range(self.dependents)]

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        return [
            t
            for t in self.api.tasks(filters={"service": service, "desired-state": "running"})
            if t["Status"]["State"] == "running"
        ]

    def node_id(self, hostname: str) -> str:
        return next(n["ID"] for n in self.api.nodes() if n["Description"]["Hostname"] == hostname)

    def move_anchor(self, target: str) -> float:
        """Flip the anchor's hostname constraint; returns when its new task runs (Swarm's timestamp)."""
        svc = self.api.inspect_service(ANCHOR)
        spec = svc["Spec"]
        spec["TaskTemplate"]["Placement"] = {"Constraints": [f"node.hostname == {target}"]}
        self.api.update_service(
            svc["ID"], svc["Version"]["Index"], task_template=spec["TaskTemplate"], name=spec["Name"],
            labels=spec.get("Labels"), mode=spec["Mode"], update_config=spec.get("UpdateConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )  # fmt: skip
        target_id = self.node_id(target)

        def started() -> float | None:
            for t in self.running_tasks(ANCHOR):
                if t["NodeID"] == target_id:
                    return parse_time(t["Status"]["Timestamp"])
            return None

        return wait_for("anchor running on " + target, started)

    def all_dependents_on(self, target: str) -> float:
        return wait_for("dependents running on " + target, lambda: self.all_dependents_on_now(target))

    def all_dependents_on_now(self, target: str) -> float | None:
        target_id = self.node_id(target)
        latest = 0.0
        for name in self.dependent_names():
            tasks = self.running_tasks(name)
            if not tasks or any(t["NodeID"] != target_id for t in tasks):
                return None
            latest = max(latest, *(parse_time(t["Status"]["Timestamp"]) for t in tasks))
        return latest

    def label_on(self) -> list[str]:
        return sorted(n["Description"]["Hostname"] for n in self.api.nodes() if KEY in (n["Spec"].get("Labels") or {}))

    def set_label(self, hostname: str, present: bool) -> float:
        for _ in range(10):
            n = next(n for n in self.api.nodes() if n["Description"]["Hostname"] == hostname)
            spec = dict(n["Spec"])
            labels = dict(spec.get("Labels") or {})
            if present:
                labels[KEY] = "true"
            else:
                labels.pop(KEY, None)
            spec["Labels"] = labels
            try:
                self.api.update_node(n["ID"], n["Version"]["Index"], node_spec=spec)
                return time.time()
            except docker.errors.APIError:
                continue
        raise RuntimeError("could not set label")

    def label_time_from_audit(self, audit: Path, target: str, after: float) -> float | None:
        if not audit.exists():
            return None
        for line in audit.read_text().splitlines():
            entry = json.loads(line)
            if entry["target"] == f"node/{target}" and KEY in entry["change"] and entry["result"] == "ok":
                at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
                if at >= after - 1:
                    return at
        return None


def deploy(env: LabEnv, workdir: Path, dependents: int) -> None:
    f = workdir / "stack.yml"
    f.write_text(stack_file(dependents))
    run_docker(env, "stack", "deploy", "-c", str(f), STACK)


def run_docker(env: LabEnv, *args: str) -> None:
    full_env = {**os.environ, "DOCKER_HOST": env.docker_host, "ORCASTRA_LAB_IMAGE": env.image}
    subprocess.run(["docker", *args], env=full_env, check=True, capture_output=True)


def config_text(env: LabEnv, audit: Path, mode: str) -> str:
    nodes = "\n".join(f"  {n}:\n    endpoint: {h}" for n, h in sorted(env.node_hosts.items()))
    polling_only = mode == "polling"
    return (
        f"nodes:\n{nodes}\n"
        "reconcile:\n"
        f"  event_mode: {'false' if polling_only else 'true'}\n"
        f"  resync_interval_seconds: {60 if polling_only else 30}\n"
        "leader_election:\n  enabled: false\n"
        f"api:\n  listen: 127.0.0.1:{free_port()}\n"
        f"audit:\n  path: {audit}\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_orcastra(env: LabEnv, workdir: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    audit = workdir / f"audit-{mode}.jsonl"
    cfg = workdir / f"orcastra-{mode}.yml"
    cfg.write_text(config_text(env, audit, mode))
    log = (workdir / f"run-{mode}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orcastra", "--config", str(cfg), "run"],
        env={**os.environ, "DOCKER_HOST": env.docker_host},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, audit


def measure_orcastra(b: Bench, rounds: int, mode: str) -> list[Round]:
    proc, audit = start_orcastra(b.env, b.workdir, mode)
    out = []
    try:
        target = "node2"

        def initial() -> float | None:
            if proc.poll() is not None:
                raise RuntimeError(f"orcastra exited: see {b.workdir}/run-{mode}.log")
            return b.all_dependents_on_now(target)

        wait_for("initial colocation", initial, timeout=120)
        for _ in range(rounds):
            target = "node3" if target == "node2" else "node2"
            running_at = b.move_anchor(target)
            all_at = b.all_dependents_on(target)
            label_at = b.label_time_from_audit(audit, target, running_at)
            out.append(Round(mode, target, running_at, label_at, all_at))
            print(f"  {mode}: anchor -> {target}: decision {out[-1].decision}, end-to-end {out[-1].end_to_end:.2f}s")
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def measure_swarm_by_hand(b: Bench, rounds: int) -> list[Round]:
    out = []
    target = "node2" if b.label_on() == ["node2"] else "node3"
    for _ in range(rounds):
        old, target = target, ("node3" if target == "node2" else "node2")
        running_at = b.move_anchor(target)
        label_at = b.set_label(target, True)
        b.set_label(old, False)
        all_at = b.all_dependents_on(target)
        out.append(Round("swarm-by-hand", target, running_at, label_at, all_at))
        print(f"  swarm by hand: -> {target}: dependents moved in {out[-1].end_to_end:.2f}s after the label")
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(rounds: list[Round]) -> dict[str, Any]:
    decisions = [r.decision for r in rounds if r.decision is not None]
    e2e = [r.end_to_end for r in rounds]
    return {
        "rounds": len(rounds),
        "decision_p50_s": pct(decisions, 0.5),
        "decision_p95_s": pct(decisions, 0.95),
        "decision_max_s": max(decisions, default=float("nan")),
        "end_to_end_p50_s": pct(e2e, 0.5),
        "end_to_end_p95_s": pct(e2e, 0.95),
        "end_to_end_mean_s": statistics.fmean(e2e) if e2e else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--dependents", type=int, default=3)
    ap.add_argument("--polling-rounds", type=int, default=0, help="also measure polling-only mode (RELABEL_TIME=60)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    lab = Lab()
    env = lab.up(nodes=3, managers=1)
    api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=30)
    with tempfile.TemporaryDirectory(prefix="orcastra-bench-") as tmp:
        b = Bench(env, api, args.dependents, Path(tmp))
        deploy(env, b.workdir, args.dependents)
        try:
            print(f"colocation bench: {args.rounds} rounds, anchor + {args.dependents} dependents")
            event = measure_orcastra(b, args.rounds, "event")
            polling = measure_orcastra(b, args.polling_rounds, "polling") if args.polling_rounds else []
            by_hand = measure_swarm_by_hand(b, args.rounds)
        finally:
            run_docker(env, "stack", "rm", STACK)
            for h in ("node1", "node2", "node3"):
                b.set_label(h, False)
            api.close()
    result: dict[str, Any] = {
        "bench": "colocation",
        "orcastra_version": __version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dependents": args.dependents,
        "orcastra_event": summarise(event),
        "orcastra_polling": summarise(polling) if polling else None,
        "swarm_by_hand": summarise(by_hand),
        "rounds": [asdict(r) | {"decision": r.decision, "end_to_end": r.end_to_end} for r in event + polling + by_hand],
    }
    ratio = result["orcastra_event"]["end_to_end_p50_s"] / result["swarm_by_hand"]["end_to_end_p50_s"]
    result["end_to_end_ratio_p50"] = ratio
    e, s = result["orcastra_event"], result["swarm_by_hand"]
    rows = [
        (
            "decision latency p50 / p95 / max (s)",
            f"{e['decision_p50_s']:.3f} / {e['decision_p95_s']:.3f} / {e['decision_max_s']:.3f}",
        ),
        ("end-to-end p50 / p95, Orcastra (s)", f"{e['end_to_end_p50_s']:.2f} / {e['end_to_end_p95_s']:.2f}"),
        (
            "Swarm after a label moved by hand p50 / p95 (s)",
            f"{s['end_to_end_p50_s']:.2f} / {s['end_to_end_p95_s']:.2f}",
        ),
        ("ratio Orcastra / Swarm by hand (p50; target <= 1.3)", f"{ratio:.2f}"),
    ]
    if polling:
        pm = result["orcastra_polling"]
        rows.append(
            (
                "polling only, RELABEL_TIME=60: decision p50 / max (s)",
                f"{pm['decision_p50_s']:.1f} / {pm['decision_max_s']:.1f}",
            )
        )
    print()
    for label, value in rows:
        print(f"{label:56} {value}")
    RESULTS.mkdir(exist_ok=True)
    path = args.json or RESULTS / f"colocation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
