"""Reconcile cost as the cluster grows: Engine calls, bytes read, CPU and wall time of one cycle.

One cycle is what the daemon does on every trigger: ``run_cycle`` = one snapshot (GET /nodes, /services, the
tasks desired to run, and the task history of anchor-group services only) and the plan of every registered
controller; plan-only (no executor), so only Orcastra's own cost is
measured. Sizes: 10, 100, 1,000 and 5,000 services of 3 tasks each with 50 anchor groups (``min(50, S/4)``):
- against the fake Engine (orcastra_lab/fake_engine.py, run in a child process so its CPU is not counted), which
  serves stack-shaped objects and one shutdown history task per slot;
- against the real lab Swarm for the sizes that fit (10, 100, 300 services; ``--no-lab`` skips it): the bench
  creates the services with the lab image (SDK-created: leaner objects than a stack's), labels the anchors'
  nodes so every group is colocated (nothing to do: the idle cost), measures, and removes all it created.
Per size: the median of ``--cycles`` cycles after one warm-up cycle. CPU is ``time.process_time`` of this
process around the cycle. Baselines measured in the same run, since the machine is noisy: ``json.loads`` of
the three unfiltered list payloads (CPU: what a controller reading ``nodes()``/``services()``/``tasks()`` with
the SDK decodes before doing anything) and one GET /_ping round trip (wall).

Targets (issue 6): calls per cycle constant; CPU per cycle at 1,000 services <= 100 ms; growth linear or
better (the fitted exponent of CPU ~ services^k over sizes >= 100).

Usage: python -m bench.reconcile_cost [--cycles 5] [--no-lab] [--lab-replicas 3] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orcastra import __version__
from orcastra.adapters.engine import EngineAdapter
from orcastra.adapters.engine.adapter import EngineSettings
from orcastra.config import Config, load_config
from orcastra.runtime.controllers import Controller, registry
from orcastra.runtime.reconcile import run_cycle
from orcastra_lab.fake_engine import STACK, Cluster, _plan_services, _ServicePlan

RESULTS = Path(__file__).parent / "results"
FAKE_SIZES = (10, 100, 1_000, 5_000)
LAB_SIZES = (10, 100, 300)
QUICK_SIZES = (10, 40)
MAX_GROUPS = 50
CPU_TARGET_SECONDS = 0.100
LAB_PREFIX = "costbench"
LAB_READY_TIMEOUT_SECONDS = 600.0


def groups_for(services: int) -> int:
    return min(MAX_GROUPS, services // 4)


@dataclass
class SizeResult:
    engine: str  # "fake" | "lab"
    services: int
    groups: int
    tasks: int
    calls: int
    bytes: int
    cpu_s: float
    wall_s: float
    loads_cpu_s: float  # baseline: json.loads of the unfiltered nodes/services/tasks payloads
    ping_wall_s: float  # baseline: one GET /_ping round trip
    cycles: int
    actions: int

    @property
    def cpu_over_loads(self) -> float:
        return self.cpu_s / self.loads_cpu_s if self.loads_cpu_s else math.nan

    @property
    def wall_over_ping(self) -> float:
        return self.wall_s / self.ping_wall_s if self.ping_wall_s else math.nan


def measure(
    engine_kind: str, docker_host: str, *, services: int, groups: int, cycles: int, config: Config
) -> SizeResult:
    controllers: list[Controller] = [factory() for factory in registry().values()]
    with EngineAdapter(EngineSettings(host=docker_host)) as engine:
        engine.ping()  # connects (GET /version for the API version)
        first = run_cycle(engine, None, config, controllers)  # warm-up: imports, connection pool
        calls, sizes, cpus, walls = [], [], [], []
        for _ in range(cycles):
            before_bytes = engine.bytes_read
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = run_cycle(engine, None, config, controllers)
            cpus.append(time.process_time() - cpu0)
            walls.append(time.perf_counter() - wall0)
            calls.append(result.engine_calls)
            sizes.append(engine.bytes_read - before_bytes)
        loads, ping = baselines(engine, cycles)
    return SizeResult(
        engine=engine_kind,
        services=services,
        groups=groups,
        tasks=len(first.snapshot.tasks),
        calls=int(statistics.median(calls)),
        bytes=int(statistics.median(sizes)),
        cpu_s=statistics.median(cpus),
        wall_s=statistics.median(walls),
        loads_cpu_s=loads,
        ping_wall_s=ping,
        cycles=cycles,
        actions=len(result.plan.actions),
    )


def baselines(engine: EngineAdapter, repeats: int) -> tuple[float, float]:
    """Median CPU of json.loads of the three unfiltered list payloads (what a controller reading the SDK's
    ``nodes()``/``services()``/``tasks()`` decodes, before any work of its own); median wall time of one
    GET /_ping."""
    client: Any = engine._client
    payloads = [client.get(client._url(p)).content for p in ("/nodes", "/services", "/tasks")]
    loads = []
    for _ in range(repeats):
        cpu0 = time.process_time()
        for body in payloads:
            json.loads(body)
        loads.append(time.process_time() - cpu0)
    pings = []
    for _ in range(max(repeats, 5)):
        wall0 = time.perf_counter()
        engine.ping()
        pings.append(time.perf_counter() - wall0)
    return statistics.median(loads), statistics.median(pings)


# --- the fake Engine in a child process -------------------------------------------------------------------


@contextmanager
def fake_engine_process(cluster: Cluster) -> Iterator[str]:
    """``python -m orcastra_lab.fake_engine`` for ``cluster``; yields its docker_host."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "orcastra_lab.fake_engine", "--nodes", str(cluster.nodes)]
    cmd += ["--services", str(cluster.services), "--groups", str(cluster.groups)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("docker_host="):
            raise RuntimeError(f"fake engine did not start (exit {proc.poll()})")
        yield line.split("=", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def run_fake(sizes: Sequence[int], cycles: int, config: Config) -> list[SizeResult]:
    out = []
    for n in sizes:
        cluster = Cluster(nodes=3, services=n, groups=groups_for(n))
        with fake_engine_process(cluster) as host:
            reps = cycles if n < 5_000 else max(3, cycles // 2)
            out.append(measure("fake", host, services=n, groups=cluster.group_count, cycles=reps, config=config))
        print_row(out[-1])
    return out


# --- the real lab ---------------------------------------------------------------------------------------------


class LabServices:
    """Services of the benchmark's layout created in the lab Swarm (names ``costbench_*``), and the anchor
    labels on nodes that make every group colocated. ``remove()`` takes away everything it created."""

    def __init__(self, api: Any, image: str, replicas: int) -> None:
        self.api = api
        self.image = image
        self.replicas = replicas
        self.created: dict[str, str] = {}  # name -> id
        self.labelled: dict[str, set[str]] = {}  # node hostname -> label keys set by the bench
        # What an earlier run left (--keep-lab-services) is the bench's own by its names: adopt it.
        for svc in api.services(filters={"name": LAB_PREFIX + "_"}):
            if svc["Spec"]["Name"].startswith(LAB_PREFIX + "_"):
                self.created[svc["Spec"]["Name"]] = svc["ID"]
        for node in api.nodes():
            keys = {k for k in node["Spec"].get("Labels") or {} if k.startswith(f"orcastra.anchor.{LAB_PREFIX}_")}
            if keys:
                self.labelled[node["Description"]["Hostname"]] = keys

    @staticmethod
    def lab_name(plan: _ServicePlan) -> str:
        return LAB_PREFIX + plan.name[len(STACK) :]

    def grow_to(self, services: int) -> int:
        """Create what is missing for ``services`` services; returns the number of groups."""
        import docker.types

        cluster = Cluster(nodes=3, services=services, groups=groups_for(services))
        plans = _plan_services(cluster)
        for p in plans:  # anchors' node labels first, so dependents can be placed at once
            if p.node is not None and "orcastra.follow" not in p.labels:
                self.label_node(f"node{p.node + 1}", f"orcastra.anchor.{self.lab_name(p)}")
        for p in plans:
            name = self.lab_name(p)
            if name in self.created:
                continue
            labels = {k: (LAB_PREFIX + v[len(STACK) :] if v.startswith(STACK) else v) for k, v in p.labels.items()}
            constraints = [c.replace(f"anchor.{STACK}_", f"anchor.{LAB_PREFIX}_") for c in p.constraints]
            template = docker.types.TaskTemplate(
                docker.types.ContainerSpec(self.image, ["sleep", "86400"], stop_grace_period=1_000_000_000),
                placement=docker.types.Placement(constraints=constraints),
                restart_policy=docker.types.RestartPolicy(condition="any", delay=5_000_000_000),
            )
            self.created[name] = self.api.create_service(
                template,
                name=name,
                labels={"com.docker.stack.namespace": LAB_PREFIX, **labels},
                mode=docker.types.ServiceMode("replicated", self.replicas),
            )["ID"]
        return cluster.group_count

    def label_node(self, hostname: str, key: str) -> None:
        if key in self.labelled.get(hostname, set()):
            return
        self._update_labels(hostname, lambda labels: labels.__setitem__(key, "true"))
        self.labelled.setdefault(hostname, set()).add(key)

    def _update_labels(self, hostname: str, change: Any) -> None:
        import docker.errors

        for _ in range(10):
            node = next(n for n in self.api.nodes() if n["Description"]["Hostname"] == hostname)
            spec = dict(node["Spec"])
            labels = dict(spec.get("Labels") or {})
            change(labels)
            spec["Labels"] = labels
            try:
                self.api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
                return
            except docker.errors.APIError:  # a concurrent update: read the new version and try again
                time.sleep(0.1)
        raise RuntimeError(f"could not update the labels of {hostname}")

    def wait_running(self, timeout: float = LAB_READY_TIMEOUT_SECONDS) -> tuple[int, int, float]:
        """Wait until every created service runs all its replicas; (running, expected, seconds waited)."""
        expected = len(self.created) * self.replicas
        started = time.monotonic()
        running = 0
        while time.monotonic() - started < timeout:
            tasks = self.api.tasks(filters={"desired-state": "running"})
            ids = set(self.created.values())
            running = sum(1 for t in tasks if t["ServiceID"] in ids and t["Status"]["State"] == "running")
            if running >= expected:
                break
            time.sleep(2)
        return running, expected, time.monotonic() - started

    def remove(self) -> None:
        import docker.errors

        for name, sid in list(self.created.items()):
            with suppress(docker.errors.NotFound):
                self.api.remove_service(sid)
            del self.created[name]
        for hostname, keys in list(self.labelled.items()):
            self._update_labels(hostname, lambda labels, ks=keys: [labels.pop(k, None) for k in ks])
            del self.labelled[hostname]


@contextmanager
def lab_env(name: str) -> Iterator[Any]:
    """The named lab's LabEnv; a lab that is not up is brought up for the bench and taken down after."""
    from orcastra_lab import Lab
    from orcastra_lab.errors import LabError

    lab = Lab(name=name)
    try:
        yield lab.env()
        return
    except LabError:
        pass
    print(f"  lab {name} is not up: bringing it up for the benchmark (and down after)")
    try:
        yield lab.up()
    finally:
        lab.down()


def run_lab(
    sizes: Sequence[int], cycles: int, replicas: int, config: Config, *, keep: bool = False, lab: str = "orcastra"
) -> tuple[list[SizeResult], str]:
    with lab_env(lab) as env:
        return _run_lab(env, sizes, cycles, replicas, config, keep=keep)


def _run_lab(
    env: Any, sizes: Sequence[int], cycles: int, replicas: int, config: Config, *, keep: bool
) -> tuple[list[SizeResult], str]:
    import docker

    api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=120)
    version = str(api.version().get("Version", ""))
    services = LabServices(api, env.image, replicas)
    out = []
    try:
        for n in sizes:
            t0 = time.monotonic()
            groups = services.grow_to(n)
            running, expected, waited = services.wait_running()
            print(
                f"  lab: {n} services x {replicas} created in {time.monotonic() - t0 - waited:.0f}s; "
                f"{running}/{expected} tasks running after {waited:.0f}s more"
            )
            out.append(measure("lab", env.docker_host, services=n, groups=groups, cycles=cycles, config=config))
            print_row(out[-1])
    finally:
        if keep:
            print(f"  lab: kept {len(services.created)} {LAB_PREFIX}_* services (bench.footprint adopts them)")
        else:
            services.remove()
        api.close()
    return out, version


# --- report -----------------------------------------------------------------------------------------------------


def fitted_exponent(rows: Sequence[SizeResult], min_services: int = 100) -> float:
    """k in cpu ~ services^k, least squares in log-log over sizes >= ``min_services``."""
    pts = [(math.log(r.services), math.log(r.cpu_s)) for r in rows if r.services >= min_services and r.cpu_s > 0]
    if len(pts) < 2:
        pts = [(math.log(r.services), math.log(r.cpu_s)) for r in rows if r.cpu_s > 0]
    if len(pts) < 2:
        return math.nan
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else math.nan


HEADER = (
    f"{'engine':6} {'services':>8} {'groups':>6} {'tasks':>6} {'calls':>5} {'bytes':>11} {'cpu ms':>8} "
    f"{'wall ms':>8} {'cpu/loads':>9} {'wall/ping':>9} {'actions':>7}"
)


def print_row(r: SizeResult) -> None:
    print(
        f"{r.engine:6} {r.services:>8} {r.groups:>6} {r.tasks:>6} {r.calls:>5} {r.bytes:>11,} "
        f"{r.cpu_s * 1000:>8.1f} {r.wall_s * 1000:>8.1f} {r.cpu_over_loads:>9.2f} {r.wall_over_ping:>9.0f} "
        f"{r.actions:>7}"
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": mem_kib * 1024,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


def verdict(rows: Sequence[SizeResult]) -> dict[str, Any]:
    fake = [r for r in rows if r.engine == "fake"]
    at_1000 = next((r for r in fake if r.services == 1_000), None)
    calls = {r.calls for r in rows}
    k = fitted_exponent(fake)
    return {
        "calls_per_cycle": sorted(calls),
        "calls_constant": len(calls) == 1,
        "cpu_at_1000_s": at_1000.cpu_s if at_1000 else None,
        "cpu_at_1000_met": (at_1000.cpu_s <= CPU_TARGET_SECONDS) if at_1000 else None,
        "cpu_exponent": k,
        "linear_or_better": (k <= 1.1) if not math.isnan(k) else None,
        "lab_cpu_exponent": fitted_exponent([r for r in rows if r.engine == "lab"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5, help="measured cycles per size (median)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="fake-engine sizes (services)")
    ap.add_argument("--no-lab", action="store_true", help="skip the real lab Swarm")
    ap.add_argument("--lab-sizes", type=int, nargs="*", default=list(LAB_SIZES))
    ap.add_argument("--lab-replicas", type=int, default=3)
    ap.add_argument("--lab", default="orcastra", help="lab name (brought up and down again if not up)")
    ap.add_argument("--keep-lab-services", action="store_true", help="leave them for bench.footprint")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, fake engine only, 2 cycles (smoke test)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FAKE_SIZES)
    cycles = 2 if args.quick else args.cycles
    config = load_config(None, {})
    print(f"reconcile cost: one cycle (snapshot + plan of {', '.join(registry())}), median of {cycles}")
    print(HEADER)
    rows = run_fake(sizes, cycles, config)
    lab_version = None
    if not (args.quick or args.no_lab):
        lab_rows, lab_version = run_lab(
            args.lab_sizes, cycles, args.lab_replicas, config, keep=args.keep_lab_services, lab=args.lab
        )
        rows += lab_rows

    v = verdict(rows)
    print()
    print(f"calls per cycle: {v['calls_per_cycle']} ({'constant' if v['calls_constant'] else 'NOT constant'})")
    if v["cpu_at_1000_s"] is not None:
        print(
            f"CPU per cycle at 1,000 services: {v['cpu_at_1000_s'] * 1000:.0f} ms "
            f"(target <= {CPU_TARGET_SECONDS * 1000:.0f} ms: {'met' if v['cpu_at_1000_met'] else 'MISSED'})"
        )
    print(f"CPU growth: services^{v['cpu_exponent']:.2f} (fake engine, sizes >= 100; linear or better: "
          f"{'yes' if v['linear_or_better'] else 'no'})")  # fmt: skip
    result: dict[str, Any] = {
        "bench": "reconcile_cost",
        "orcastra_version": __version__,
        "engine_versions": {"fake": "20.10.24 (API 1.41, generated)", "lab": lab_version},
        "machine": machine(),
        "cycles": cycles,
        "controllers": list(registry()),
        "rows": [asdict(r) | {"cpu_over_loads": r.cpu_over_loads, "wall_over_ping": r.wall_over_ping} for r in rows],
        "verdict": v,
    }
    RESULTS.mkdir(exist_ok=True)
    path = args.json or RESULTS / f"reconcile-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
