"""Soak: ``orcastra run`` under churn on a lab Swarm of its own for ``--minutes`` (an hour by default).

The lab ("soak", 3 nodes, 1 manager) runs an anchor group (db + 2 dependents) and a few plain services. One
Orcastra runs against it (lease on, API with a token, command file), and a churn loop keeps changing the Swarm
under it, one event every ``--every`` seconds, round-robin:

- power loss of the anchor's node (``lab kill``) and its return a period later (``lab start``);
- a worker's daemon restarted (``lab restart``: the lab's reboot);
- ``docker stack deploy`` of the same stack (strips what Orcastra added, Orcastra puts it back);
- an operator command through the API (``restart``) and one through the command file (``sync``);
- another tool rewriting a node label.

Orcastra's resident memory (VmRSS) and open file descriptors are sampled every 10 s; the report gives their
slopes (least squares, per hour) next to the start and end values. At the end: every command sent has exactly
one result in the journal (exactly once), the audit log parses line by line, and the anchor label moved no
more often than the anchor did (no flapping). Prints a table and writes JSON to ``bench/results/``.

Usage: python -m bench.soak [--minutes 60] [--every 20] [--json FILE] [--keep-lab]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx

from orcastra import __version__
from orcastra_lab import Lab, LabEnv

RESULTS = Path(__file__).parent / "results"
LAB_NAME = "soak"
STACK = "sk"
ANCHOR = f"{STACK}_db"
TOKEN = "soak-token"
SAMPLE_SECONDS = 10.0
WARM_UP_SECONDS = 120.0

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.role == worker]
  web:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
      labels: {orcastra.follow: db}
  worker:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels: {orcastra.follow: db}
  plain1:
    image: ${ORCASTRA_LAB_IMAGE}
  plain2:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
"""

CONFIG = """
stack: sk
reconcile:
  resync_interval_seconds: 30
leader_election:
  ttl_seconds: 10
commands:
  file: {commands}
api:
  listen: 127.0.0.1:{port}
  token: {token}
audit:
  path: {audit}
"""


@dataclass
class Sample:
    t: float
    rss_bytes: int
    fds: int


@dataclass
class Report:
    minutes: float
    events: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    commands_sent: int = 0
    commands_with_one_result: int = 0
    anchor_moves: int = 0
    anchor_label_moves: int = 0
    audit_lines: int = 0
    alive: bool = True

    def steady(self) -> list[Sample]:
        """The samples after the warm-up (start-up, the first cycles and connections): the first tenth, at
        least two minutes, of the run."""
        warm = max(WARM_UP_SECONDS, self.minutes * 6.0)
        return [s for s in self.samples if s.t >= warm] or self.samples[-2:]

    def slope(self, attr: str) -> float:
        """Least-squares slope of ``attr`` per hour, after the warm-up."""
        steady = self.steady()
        xs = [s.t for s in steady]
        ys = [float(getattr(s, attr)) for s in steady]
        n = len(xs)
        if n < 2:
            return 0.0
        mx, my = sum(xs) / n, sum(ys) / n
        var = sum((x - mx) ** 2 for x in xs)
        return 3600.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def sample(pid: int, t0: float) -> Sample:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Sample(time.monotonic() - t0, rss, len(os.listdir(f"/proc/{pid}/fd")))


def docker_cli(env: LabEnv, *args: str) -> None:
    full = {**os.environ, "DOCKER_HOST": env.docker_host, "ORCASTRA_LAB_IMAGE": env.image}
    subprocess.run(["docker", *args], env=full, check=True, capture_output=True, timeout=180)


def anchor_node(api: docker.APIClient) -> str | None:
    nodes = {n["ID"]: n for n in api.nodes()}
    for t in api.tasks(filters={"service": ANCHOR, "desired-state": "running"}):
        node = nodes.get(t.get("NodeID", ""))
        if t["Status"]["State"] == "running" and node and node["Status"]["State"] == "ready":
            return str(node["Description"]["Hostname"])
    return None


def labelled(api: docker.APIClient) -> tuple[str, ...]:
    key = f"orcastra.anchor.{ANCHOR}"
    return tuple(sorted(n["Description"]["Hostname"] for n in api.nodes() if key in (n["Spec"].get("Labels") or {})))


class Churn:
    """One churn event per call, round-robin; remembers what it sent and what has to be mended."""

    KINDS = ("kill-anchor-node", "restart-worker", "deploy", "api-command", "file-command", "label-edit")

    def __init__(self, lab: Lab, env: LabEnv, work: Path, port: int, report: Report) -> None:
        self.lab, self.env, self.work, self.port, self.report = lab, env, work, port, report
        self.api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=30)
        self.n = 0
        self.killed: str | None = None
        self.sent: list[str] = []

    def step(self) -> None:
        if self.killed is not None:  # a node killed by the previous step comes back first
            self.lab.start(self.killed)
            self.killed = None
        kind = self.KINDS[self.n % len(self.KINDS)]
        self.n += 1
        self.report.events[kind] = self.report.events.get(kind, 0) + 1
        getattr(self, kind.replace("-", "_"))()

    def kill_anchor_node(self) -> None:
        node = anchor_node(self.api)
        if node is not None and node != "node1":
            self.lab.kill(node)
            self.killed = node
            self.report.anchor_moves += 1

    def restart_worker(self) -> None:
        self.lab.restart("node3" if self.n % 2 else "node2")

    def deploy(self) -> None:
        docker_cli(self.env, "stack", "deploy", "-c", str(self.work / "stack.yml"), STACK)

    def api_command(self) -> None:
        r = httpx.post(
            f"http://127.0.0.1:{self.port}/v1/commands",
            json={"command": "restart", "service": "plain1"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        if r.status_code == 200:
            self.sent.append(str(r.json().get("id", "")))

    def file_command(self) -> None:
        path = self.work / "commands.yml"
        with path.open("a", encoding="utf-8") as f:
            f.write("- sync\n")
        self.sent.append("file")

    def label_edit(self) -> None:
        node = next(n for n in self.api.nodes() if n["Description"]["Hostname"] == "node2")
        spec = {**node["Spec"], "Labels": {**(node["Spec"].get("Labels") or {}), "other.tool": str(self.n)}}
        with contextlib.suppress(docker.errors.APIError):  # a conflict with Orcastra's write: it is the other tool
            self.api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)


def run(minutes: float, every: float, keep_lab: bool) -> Report:
    lab = Lab(name=LAB_NAME)
    env = lab.up(nodes=3, managers=1, swarm=True)
    report = Report(minutes=minutes)
    work = Path(tempfile.mkdtemp(prefix="orcastra-soak-"))
    (work / "stack.yml").write_text(STACK_FILE, encoding="utf-8")
    docker_cli(env, "stack", "deploy", "-c", str(work / "stack.yml"), STACK)
    port = 19000 + os.getpid() % 1000
    audit = work / "audit.jsonl"
    config = work / "orcastra.yml"
    commands = work / "commands.yml"
    config.write_text(CONFIG.format(commands=commands, port=port, token=TOKEN, audit=audit), encoding="utf-8")
    config.chmod(0o600)
    log = (work / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orcastra", "--config", str(config), "run"],
        env={**os.environ, "DOCKER_HOST": env.docker_host},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    churn = Churn(lab, env, work, port, report)
    api = churn.api
    label_history: list[tuple[str, ...]] = []
    t0 = time.monotonic()
    next_event = t0 + every
    try:
        while time.monotonic() - t0 < minutes * 60:
            if proc.poll() is not None:
                report.alive = False
                break
            report.samples.append(sample(proc.pid, t0))
            where = labelled(api)
            if where and (not label_history or label_history[-1] != where):
                label_history.append(where)  # from the first labelling on: every change after it is a move
            if time.monotonic() >= next_event:
                churn.step()
                next_event = time.monotonic() + every
            time.sleep(SAMPLE_SECONDS)
        if churn.killed is not None:
            lab.start(churn.killed)
        time.sleep(30)  # let the last command and cycle finish
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    report.anchor_label_moves = max(0, len(label_history) - 1)
    results = [json.loads(x) for x in (work / "commands.yml.results.jsonl").read_text().splitlines() if x.strip()]
    done = [r for r in results if r.get("type") == "result"]
    ids = [r.get("id") for r in done]
    report.commands_sent = len(churn.sent)
    report.commands_with_one_result = sum(1 for i in set(ids) if ids.count(i) == 1)
    report.audit_lines = sum(1 for x in audit.read_text().splitlines() if json.loads(x))
    if not keep_lab:
        lab.down()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between churn events")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)
    r = run(args.minutes, args.every, args.keep_lab)
    first, last = r.steady()[0], r.samples[-1]
    rows = [
        ("minutes", f"{r.minutes:g}"),
        ("churn events", ", ".join(f"{k} {v}" for k, v in sorted(r.events.items()))),
        ("still running", str(r.alive)),
        ("RSS after warm-up -> end", f"{first.rss_bytes / 2**20:.1f} -> {last.rss_bytes / 2**20:.1f} MiB"),
        ("RSS slope", f"{r.slope('rss_bytes') / 2**20:+.2f} MiB/hour"),
        ("open fds after warm-up -> end", f"{first.fds} -> {last.fds}"),
        ("open fds slope", f"{r.slope('fds'):+.2f} per hour"),
        ("commands sent / with exactly one result", f"{r.commands_sent} / {r.commands_with_one_result}"),
        ("anchor failovers / anchor label moves", f"{r.anchor_moves} / {r.anchor_label_moves}"),
        ("audit lines (all parse)", str(r.audit_lines)),
    ]
    for k, v in rows:
        print(f"{k:42} {v}")
    out = args.json or RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = asdict(r) | {"version": __version__, "rss_slope_bytes_per_hour": r.slope("rss_bytes")}
    data["fds_slope_per_hour"] = r.slope("fds")
    out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"\nresults: {out}")
    return 0 if r.alive else 1


if __name__ == "__main__":
    sys.exit(main())
