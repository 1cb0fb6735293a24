"""Footprint: resident memory and CPU of a real ``orcastra run`` process, idle, watching 300 services.

A child ``python -m orcastra run`` is started against the lab Swarm (default) or the fake Engine (``--fake``,
quick: orcastra_lab/fake_engine.py in this process), with the benchmark's layout: ``--services`` services of 3 tasks
and 50 anchor groups, every group colocated, so the daemon has nothing to do but watch (events, the task poll
every 0.5 s, the periodic resync, the leader lease on the lab). Once its first cycle is done (``/healthz``
answers ok) it is sampled every ``--interval`` seconds for ``--seconds``: VmRSS and VmHWM from
/proc/PID/status, utime+stime from /proc/PID/stat (all threads).

Targets (issue 6): <= 80 MB resident, <= 1% of one core over the window.
On the lab, the services are created with the lab image (or adopted from ``bench.reconcile_cost
--keep-lab-services``) and removed at the end, with the lease service, unless ``--keep``.

Usage: python -m bench.footprint [--seconds 300] [--interval 5] [--services 300] [--fake] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.reconcile_cost import LabServices, groups_for, lab_env, machine
from orcastra import __version__
from orcastra_lab.fake_engine import Cluster, FakeEngine

RESULTS = Path(__file__).parent / "results"
RSS_TARGET_BYTES = 80 * 1024 * 1024
CPU_TARGET_PERCENT = 1.0
LEASE_NAME = "footprint-lease"
READY_TIMEOUT_SECONDS = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float  # seconds since the window opened
    rss_bytes: int
    hwm_bytes: int
    cpu_s: float  # utime + stime since the process started


def read_sample(pid: int, t0: float) -> Sample:
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces: skip past ")"
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from "state" = 3
    return Sample(time.monotonic() - t0, rss, hwm, (utime + stime) / CLOCK_TICKS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(api_port: int, lease: bool) -> str:
    lines = ["leader_election:", f"  enabled: {'true' if lease else 'false'}"]
    if lease:
        lines.append(f"  lease_name: {LEASE_NAME}")
    lines += ["api:", f"  listen: 127.0.0.1:{api_port}"]
    return "\n".join(lines) + "\n"


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        if proc.poll() is not None:
            raise RuntimeError(f"orcastra run exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"orcastra run not healthy after {READY_TIMEOUT_SECONDS:.0f}s; see {log}")


@contextmanager
def orcastra_run(docker_host: str, workdir: Path, lease: bool) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    cfg = workdir / "orcastra.yml"
    cfg.write_text(config_text(port, lease))
    log_path = workdir / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orcastra", "--config", str(cfg), "run"],
            env={**os.environ, "DOCKER_HOST": docker_host},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, port, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def lab_engine(services: int, replicas: int, keep: bool, name: str) -> Iterator[tuple[str, str]]:
    """The lab with ``services`` bench services running; yields (docker_host, engine version)."""
    with lab_env(name) as env:
        yield from _lab_services(env, services, replicas, keep)


def _lab_services(env: Any, services: int, replicas: int, keep: bool) -> Iterator[tuple[str, str]]:
    import docker
    import docker.errors

    api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=120)
    lab = LabServices(api, env.image, replicas=replicas)
    had_lease = bool(api.services(filters={"name": LEASE_NAME}))
    try:
        lab.grow_to(services)
        running, expected, waited = lab.wait_running()
        print(f"  lab: {len(lab.created)} services, {running}/{expected} tasks running (waited {waited:.0f}s)")
        yield env.docker_host, str(api.version().get("Version", ""))
    finally:
        if not had_lease:
            for svc in api.services(filters={"name": LEASE_NAME}):
                if svc["Spec"]["Name"] == LEASE_NAME:
                    with suppress(docker.errors.NotFound):
                        api.remove_service(svc["ID"])
        if not keep:
            lab.remove()
        api.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="length of the measured idle window")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--services", type=int, default=300)
    ap.add_argument("--replicas", type=int, default=3, help="tasks per service on the lab (1 keeps it light)")
    ap.add_argument("--fake", action="store_true", help="the fake Engine instead of the lab (no lease: read-only)")
    ap.add_argument("--keep", action="store_true", help="leave the lab services in place")
    ap.add_argument("--lab", default="orcastra", help="lab name (brought up and down again if not up)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    groups = groups_for(args.services)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orcastra-footprint-")))
        fake: FakeEngine | None = None
        if args.fake:
            fake = stack.enter_context(FakeEngine(Cluster(nodes=3, services=args.services, groups=groups)))
            host, engine_version = fake.docker_host, "fake 20.10.24 (API 1.41)"
        else:
            host, engine_version = stack.enter_context(lab_engine(args.services, args.replicas, args.keep, args.lab))
        proc, port, log_path = stack.enter_context(orcastra_run(host, workdir, lease=not args.fake))
        ready_s = wait_healthy(proc, port, log_path)
        print(f"footprint: orcastra run (pid {proc.pid}) healthy after {ready_s:.1f}s; sampling {args.seconds:.0f}s")
        if fake is not None:
            fake.reset_stats()
        t0 = time.monotonic()
        samples = [read_sample(proc.pid, t0)]
        while samples[-1].t < args.seconds:
            time.sleep(max(0.0, min(args.interval, args.seconds - samples[-1].t)))
            if proc.poll() is not None:
                raise RuntimeError(f"orcastra run exited ({proc.returncode}); see {log_path}")
            samples.append(read_sample(proc.pid, t0))
            s = samples[-1]
            print(f"  t={s.t:6.1f}s  rss {s.rss_bytes / 2**20:6.1f} MiB  cpu {s.cpu_s:7.2f}s")
        requests = {p: asdict(v) for p, v in fake.stats().items()} if fake is not None else None

    first, last = samples[0], samples[-1]
    window = last.t - first.t
    cpu_percent = 100.0 * (last.cpu_s - first.cpu_s) / window if window > 0 else float("nan")
    rss_max = max(s.rss_bytes for s in samples)
    hwm = max(s.hwm_bytes for s in samples)
    result: dict[str, Any] = {
        "bench": "footprint",
        "orcastra_version": __version__,
        "engine": "fake" if args.fake else "lab",
        "engine_version": engine_version,
        "machine": machine(),
        "services": args.services,
        "groups": groups,
        "seconds": window,
        "ready_seconds": ready_s,
        "rss_final_bytes": last.rss_bytes,
        "rss_max_bytes": rss_max,
        "rss_hwm_bytes": hwm,
        "cpu_seconds": last.cpu_s - first.cpu_s,
        "cpu_percent_of_one_core": cpu_percent,
        "rss_target_met": rss_max <= RSS_TARGET_BYTES,
        "cpu_target_met": cpu_percent <= CPU_TARGET_PERCENT,
        "engine_requests": requests,
        "samples": [asdict(s) for s in samples],
    }
    print()
    print(f"{'resident memory, max over the window (MiB; target <= 80)':58} {rss_max / 2**20:8.1f}")
    print(f"{'resident memory, peak incl. start-up (VmHWM, MiB)':58} {hwm / 2**20:8.1f}")
    print(f"{'CPU, % of one core over the window (target <= 1)':58} {cpu_percent:8.2f}")
    if requests:
        per_min = {p: round(v["requests"] * 60 / window, 1) for p, v in requests.items()}
        print(f"{'Engine requests per minute while idle':58} {per_min}")
    print(f"targets: memory {'met' if result['rss_target_met'] else 'MISSED'}, "
          f"CPU {'met' if result['cpu_target_met'] else 'MISSED'}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = args.json or RESULTS / f"footprint-{result['engine']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
