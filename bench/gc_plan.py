"""Garbage collection planner: plan time on a large node, and how it grows.

A seeded synthetic node (``--images`` 10,000 images in ~2,000 repositories with several tags each, some
dangling, some only pulled by digest as a Swarm worker pulls them; ``--containers`` 5,000 containers of every
state, two in five of them Swarm tasks; 3,000 volumes; Swarm facts naming ~1,500 services' images) is built
once as a real ``NodeInventory``, then ``plan_gc`` is timed (median of ``--repeat`` runs) for a full run
("schedule") and a threshold run on a disk 90% full.

The baseline, in the same run because the machine is noisy: the same generator at a tenth of the size (1,000
images, 500 containers). The ratio of the two shows the growth: 10 is linear, 100 would be quadratic. It is
measured twice: as the agent runs (Python's cyclic garbage collector on: its passes over a heap that holds the
whole inventory, and caches that a larger inventory outgrows, make it somewhat more than 10), and with the
collector paused, which leaves the planner's own work. Target (issue 14): the full plan at 10,000 images and
5,000 containers well under 1 s.

Every plan is also checked: no image a kept container uses and no running container is in it.

Usage: python -m bench.gc_plan [--images 10000] [--containers 5000] [--repeat 7] [--seed 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orcastra.features.hygiene.gc import plan_gc
from orcastra.features.hygiene.gc_types import (
    SWARM_TASK_ID_LABEL,
    ContainerInfo,
    DiskUsage,
    GcPlan,
    GcPolicy,
    ImageInfo,
    NodeInventory,
    SwarmFacts,
    VolumeInfo,
)

RESULTS = Path(__file__).parent / "results"
NOW = 1_700_000_000.0
DAY = 86400.0
MB = 1_000_000
STATES = (("running", 30), ("exited", 45), ("created", 10), ("dead", 5), ("paused", 5), ("restarting", 5))
POLICY = GcPolicy(keep_per_repository=3, disk_threshold_percent=85, disk_target_percent_below=10)


def hexid(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def repository_name(rng: random.Random, r: int) -> str:
    kind = rng.random()
    if kind < 0.5:
        return f"registry.example:5000/team{r % 40}/app{r}"
    if kind < 0.8:
        return f"user{r % 70}/app{r}"  # Docker Hub, shown without docker.io/
    return f"app{r}"  # Docker Hub official-style: docker.io/library/app<r>


def make_images(rng: random.Random, n: int) -> list[ImageInfo]:
    repositories = max(1, n // 5)
    images: list[ImageInfo] = []
    for i in range(n):
        repo = repository_name(random.Random(i % repositories), i % repositories)
        digest = f"{repo}@sha256:{hexid(rng)}"
        kind = rng.random()
        if kind < 0.08:  # dangling: a build's leftover, or an image whose tag moved on
            tags: tuple[str, ...] = ("<none>:<none>",) if rng.random() < 0.5 else ()
            digests: tuple[str, ...] = ()
        elif kind < 0.25:  # pulled by digest for a Swarm service: no tag at all
            tags, digests = ("<none>:<none>",), (digest,)
        else:
            tags = tuple(f"{repo}:v{i}.{t}" for t in range(rng.randint(1, 3)))
            digests = (digest,) if rng.random() < 0.7 else ()
        image_size = int(rng.lognormvariate(5.3, 0.8) * MB)
        shared = int(image_size * rng.uniform(0.2, 0.8)) if rng.random() < 0.6 else -1
        created = NOW - rng.uniform(0, 400) * DAY
        images.append(ImageInfo(f"sha256:{hexid(rng)}", tags, digests, created, image_size, shared))
    return images


def pick_state(rng: random.Random) -> str:
    return rng.choices([s for s, _ in STATES], weights=[w for _, w in STATES])[0]


def image_ref(rng: random.Random, image: ImageInfo) -> str:
    names = [t for t in image.repo_tags if t != "<none>:<none>"] + list(image.repo_digests)
    return rng.choice(names) if names and rng.random() < 0.9 else image.id


def make_node(n_images: int, n_containers: int, seed: int) -> NodeInventory:
    rng = random.Random(seed)
    images = make_images(rng, n_images)
    containers: list[ContainerInfo] = []
    tracked: set[str] = set()
    named_volumes = [f"data{v}" for v in range(n_containers * 3 // 10)]
    anonymous_volumes = [hexid(rng) for _ in range(n_containers * 3 // 10)]
    for c in range(n_containers):
        image = images[min(int(rng.expovariate(3 / n_images)), n_images - 1)]  # recent-ish images are busier
        labels = {}
        if rng.random() < 0.4:
            task_id = f"task{c}"
            labels[SWARM_TASK_ID_LABEL] = task_id
            if rng.random() < 0.8:
                tracked.add(task_id)
        state = pick_state(rng)
        created = NOW - rng.uniform(0, 60) * DAY
        finished = None if state in ("created", "running") else created + rng.uniform(0, NOW - created)
        mounts = tuple(rng.sample(named_volumes, 1) + rng.sample(anonymous_volumes, 1)) if rng.random() < 0.3 else ()
        containers.append(
            ContainerInfo(
                hexid(rng), f"/c{c}", image.id, image_ref(rng, image), state, created, finished, labels, mounts
            )
        )
    volumes = [VolumeInfo(v, NOW - 30 * DAY, {}, False) for v in named_volumes] + [
        VolumeInfo(v, NOW - 30 * DAY, {"com.docker.volume.anonymous": ""}, True, rng.randint(0, 50 * MB))
        for v in anonymous_volumes
    ]
    service_refs = set()
    for image in rng.sample(images, min(len(images), n_images * 3 // 20)):  # a service (or its PreviousSpec) each
        ref = image_ref(rng, image)
        service_refs.add(ref if "@" in ref or ref.startswith("sha256:") else f"{ref}@sha256:{hexid(rng)}")
    last_used = {i.id: NOW - rng.uniform(0, 90) * DAY for i in images if rng.random() < 0.6}
    facts = SwarmFacts(frozenset(service_refs), frozenset(tracked), frozenset(rng.sample(named_volumes, 50)))
    return NodeInventory(
        tuple(images),
        tuple(containers),
        tuple(volumes),
        MappingProxyType(last_used),
        DiskUsage(total_bytes=500_000 * MB, used_bytes=450_000 * MB),
        facts,
        NOW,
    )


def check(node: NodeInventory, plan: GcPlan) -> None:
    """The planner's promises, on this node: what a kept container uses stays, running containers stay."""
    gone = {r.id for r in plan.removals}
    kept = [c for c in node.containers if c.id not in gone]
    assert not {c.image_id for c in kept} & gone, "an image a kept container uses is in the plan"
    assert not {v for c in kept for v in c.volumes} & gone, "a volume a kept container mounts is in the plan"
    assert all(c.state in ("exited", "dead", "created") for c in node.containers if c.id in gone)


def seconds(fn: Callable[[], object], gc_paused: bool = False) -> float:
    if gc_paused:
        gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def describe(node: NodeInventory) -> dict[str, Any]:
    """The node's size and what its plans remove, each plan checked against the planner's promises."""
    full = plan_gc(node, POLICY, "schedule")
    threshold = plan_gc(node, POLICY, "threshold")
    check(node, full)
    check(node, threshold)
    return {
        "images": len(node.images),
        "containers": len(node.containers),
        "volumes": len(node.volumes),
        "removals": {k: sum(1 for r in full.removals if r.kind == k) for k in ("container", "image", "volume")},
        "threshold_images_removed": sum(1 for r in threshold.removals if r.kind == "image"),
    }


def timings(small: NodeInventory, large: NodeInventory, repeat: int) -> dict[str, float]:
    """Medians of ``repeat`` rounds. Each round times every case once (the small node's five times: it plans in
    about a hundredth of a second, where a burst of noise weighs most), so a slow phase of the machine hits
    the baseline and the large node alike and their ratio holds."""
    cases: dict[str, tuple[NodeInventory, str, bool, int]] = {
        "large_full": (large, "schedule", False, 1),
        "large_threshold": (large, "threshold", False, 1),
        "large_full_gc_paused": (large, "schedule", True, 1),
        "small_full": (small, "schedule", False, 5),
        "small_full_gc_paused": (small, "schedule", True, 5),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (node, trigger, paused, runs) in cases.items():

            def plan(node: NodeInventory = node, trigger: str = trigger) -> GcPlan:
                return plan_gc(node, POLICY, trigger)

            samples[name] += [seconds(plan, paused) for _ in range(runs)]
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gc_plan", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--containers", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="where to write the results (default bench/results/)")
    args = ap.parse_args(argv)

    small_node = make_node(max(1, args.images // 10), max(1, args.containers // 10), args.seed)
    large_node = make_node(args.images, args.containers, args.seed)
    small, large = describe(small_node), describe(large_node)
    t = timings(small_node, large_node, args.repeat)
    growth = t["large_full"] / t["small_full"]
    growth_paused = t["large_full_gc_paused"] / t["small_full_gc_paused"]
    r = large["removals"]
    print(f"gc plan: medians of {args.repeat} interleaved rounds ({args.repeat * 5} baseline runs), seed {args.seed}")
    print(
        f"FIGURE gc_plan full run, {large['images']} images / {large['containers']} containers / "
        f"{large['volumes']} volumes: {t['large_full'] * 1000:.1f} ms "
        f"({r['container']} containers, {r['image']} images, {r['volume']} volumes removed)"
    )
    print(
        f"FIGURE gc_plan threshold run, same node (90% full, target 75%): {t['large_threshold'] * 1000:.1f} ms "
        f"({large['threshold_images_removed']} images removed)"
    )
    print(
        f"FIGURE baseline full run, {small['images']} images / {small['containers']} containers: "
        f"{t['small_full'] * 1000:.2f} ms"
    )
    print(f"FIGURE growth for 10x the node: {growth:.1f}x (10 = linear, 100 = quadratic)")
    print(
        f"FIGURE growth for 10x the node, cyclic GC paused: {growth_paused:.1f}x "
        f"({t['small_full_gc_paused'] * 1000:.2f} -> {t['large_full_gc_paused'] * 1000:.1f} ms)"
    )
    print(f"FIGURE per image and container: {t['large_full'] * 1e6 / (args.images + args.containers):.2f} us")
    out = {
        "bench": "gc_plan",
        "when": datetime.now().isoformat(timespec="seconds"),
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "large": large,
        "baseline": small,
        "seconds": t,
        "growth": growth,
        "growth_gc_paused": growth_paused,
    }
    path = args.json
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"gc_plan-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
