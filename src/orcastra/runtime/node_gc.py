"""The agent's garbage collection: when it runs, what it reads, and the executors that carry out a plan.

- ``GcRunner`` (a thread) wakes at the next ``hygiene.gc.schedule`` time (cron, in its time zone), every
  ``check_interval_seconds`` when a ``disk_threshold`` is set, and when asked (``POST /v1/gc``, which
  ``orcastra gc`` sends); one run at a time.
- ``read_inventory`` makes the planner's ``NodeInventory`` from three list calls (containers, images,
  volumes), one inspect per stopped plain container (for its end time), the disk's ``statvfs``, the images
  the events showed in use, and the Swarm's facts the controller last handed over.
- ``plan_gc`` (pure, ``orcastra.features.hygiene.gc``) decides; ``EngineGcExecutor`` removes, one removal at a
  time with a pause between them (a large cleanup never stalls the Engine), an audit line each, and skips a
  removal whose prerequisites failed; ``DryRunGcExecutor`` only says what it would do. Dry-run is the
  executor, never a branch in the planner.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

import cronsim
import msgspec

from orcastra.adapters.node_engine import NodeEngine
from orcastra.errors import EngineNotFoundError, OrcastraError, cut
from orcastra.features.hygiene.gc import plan_gc
from orcastra.features.hygiene.gc_types import (
    ContainerInfo,
    DiskUsage,
    GcPlan,
    GcPolicy,
    ImageInfo,
    NodeInventory,
    Removal,
    SwarmFacts,
    VolumeInfo,
    is_anonymous_volume,
)
from orcastra.features.hygiene.thresholds import parse_threshold

log = logging.getLogger("orcastra.agent.gc")
audit = logging.getLogger("orcastra.agent.audit")

# Facts older than this are not trusted (the controller hands them over every report poll, 30 s by default).
FACTS_MAX_AGE_SECONDS = 600.0
STOPPED_STATES = frozenset({"exited", "dead", "created"})
MAX_RESULT_ITEMS = 50


class GcItem(msgspec.Struct, frozen=True):
    kind: str
    name: str
    bytes: int
    reason: str
    error: str = ""


class GcResult(msgspec.Struct, frozen=True, kw_only=True):
    """One run: what it removed (or would have), what failed, the notes, and the bytes freed."""

    trigger: str
    dry_run: bool
    started_at: float
    finished_at: float
    removed: tuple[GcItem, ...] = ()
    failed: tuple[GcItem, ...] = ()
    removed_count: int = 0
    failed_count: int = 0
    freed_bytes: int = 0
    notes: tuple[str, ...] = ()
    error: str = ""


# --- facts and last use -------------------------------------------------------------------------------------


class FactsBox:
    """The last Swarm facts a controller handed over (``POST /v1/report``) and when they arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: tuple[frozenset[str], frozenset[str]] | None = None
        self._mods: dict[str, str] | None = None
        self._at = 0.0
        self.autoheal: dict[str, str] = {}  # service name -> "true"/"false" (its orcastra.autoheal label)

    def put(
        self, image_refs: tuple[str, ...], volume_names: tuple[str, ...], now: float, mods: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self._facts, self._at = (frozenset(image_refs), frozenset(volume_names)), now
            self._mods = dict(mods) if mods is not None else None

    def service_mods(self, now: float) -> dict[str, str] | None:
        """Service name -> its ``DOCKER_MODS``, if the facts are recent and carried them (else unknown: None)."""
        with self._lock:
            mods, at = self._mods, self._at
        return None if mods is None or now - at > FACTS_MAX_AGE_SECONDS else dict(mods)

    def put_autoheal(self, on: tuple[str, ...], off: tuple[str, ...]) -> None:
        self.autoheal = {**dict.fromkeys(off, "false"), **dict.fromkeys(on, "true")}

    def fresh(self, task_ids: frozenset[str], now: float) -> SwarmFacts | None:
        """The facts, if recent; every task container on the node counts as tracked (module docstring of
        ``orcastra.features.agents.facts``: an agent never collects a task's container)."""
        with self._lock:
            facts, at = self._facts, self._at
        if facts is None or now - at > FACTS_MAX_AGE_SECONDS:
            return None
        return SwarmFacts(image_refs=facts[0], task_ids=task_ids, volume_names=facts[1])

    def age(self, now: float) -> float | None:
        with self._lock:
            return None if self._facts is None else now - self._at


class LastUse:
    """Image reference -> when the events last showed a container created or started from it; kept in
    ``hygiene.gc.state_file`` when set (written after each run, read at start)."""

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, float] = {}

    def load(self, path: str | None) -> None:
        if not path:
            return
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            refs = {str(k)[:1024]: float(v) for k, v in data.items() if isinstance(v, int | float)}
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as e:
            log.warning("gc: cannot read the last-use state %s (starting afresh): %s", path, cut(str(e), 200))
            return
        with self._lock:
            self._refs = {**dict(list(refs.items())[: self.MAX_ENTRIES]), **self._refs}

    def save(self, path: str | None) -> None:
        if not path:
            return
        with self._lock:
            newest = sorted(self._refs.items(), key=lambda kv: kv[1], reverse=True)[: self.MAX_ENTRIES]
        tmp = f"{path}.tmp"
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(newest), f)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("gc: cannot write the last-use state %s: %s", path, e.strerror or e)

    def saw(self, ref: str, at: float) -> None:
        if ref:
            with self._lock:
                self._refs[ref] = max(at, self._refs.get(ref, 0.0))

    def by_image_id(self, images: tuple[ImageInfo, ...]) -> dict[str, float]:
        with self._lock:
            refs = dict(self._refs)
        out: dict[str, float] = {}
        for image in images:
            names = (image.id, image.id.removeprefix("sha256:"), *image.repo_tags, *image.repo_digests)
            seen = [refs[n] for n in names if n in refs]
            if seen:
                out[image.id] = max(seen)
        return out


# --- reading ------------------------------------------------------------------------------------------------


def disk_usage(path: str | None) -> DiskUsage | None:
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except OSError as e:
        log.warning("gc: cannot measure the disk at %s: %s", path, e.strerror or e)
        return None
    total = st.f_blocks * st.f_frsize
    return DiskUsage(total_bytes=total, used_bytes=total - st.f_bavail * st.f_frsize)


def _container(node: NodeEngine, row: Any, now: float) -> ContainerInfo:
    labels = dict(row.Labels or {})
    finished: float | None = None
    if row.State in STOPPED_STATES and "com.docker.swarm.task.id" not in labels:
        try:
            finished = node.inspect(row.Id).finished_at
        except EngineNotFoundError:
            finished = now  # removed meanwhile: counts as just finished, so it is not collected this run
    volumes = tuple(m.Name for m in row.Mounts or () if m.Type == "volume" and m.Name)
    return ContainerInfo(
        id=row.Id,
        name=row.name,
        image_id=row.ImageID,
        image_ref=row.Image,
        state=row.State,
        created=float(row.Created),
        finished_at=finished,
        labels=labels,
        volumes=volumes,
    )


def read_inventory(
    node: NodeEngine, facts: FactsBox, last_use: LastUse, disk_path: str | None, now: float
) -> NodeInventory:
    containers = tuple(_container(node, row, now) for row in node.containers())
    images = tuple(
        ImageInfo(
            id=i.Id,
            repo_tags=tuple(i.RepoTags or ()),
            repo_digests=tuple(i.RepoDigests or ()),
            created=float(i.Created),
            size=int(i.Size),
            shared_size=int(i.SharedSize),
        )
        for i in node.images()
    )
    volumes = tuple(
        VolumeInfo(
            name=v.Name,
            created=None,
            labels=dict(v.Labels or {}),
            anonymous=is_anonymous_volume(v.Name, v.Labels or {}),
        )
        for v in node.volumes()
    )
    task_ids = frozenset(t for c in containers if (t := c.task_id))
    return NodeInventory(
        images=images,
        containers=containers,
        volumes=volumes,
        last_used=last_use.by_image_id(images),
        disk=disk_usage(disk_path),
        swarm=facts.fresh(task_ids, now),
        now=now,
    )


# --- executors ----------------------------------------------------------------------------------------------


class DryRunGcExecutor:
    """Says what a plan would remove; removes nothing."""

    dry_run = True

    def apply(self, plan: GcPlan) -> tuple[list[GcItem], list[GcItem]]:
        done = []
        for r in plan.removals:
            audit.info("gc (dry run): would remove %s %s (%d bytes): %s", r.kind, r.name, r.bytes, r.reason)
            done.append(GcItem(r.kind, r.name, r.bytes, r.reason))
        return done, []


class EngineGcExecutor:
    """Removes, paced; one failure never stops the rest, but a removal waits on the ones it depends on."""

    dry_run = False

    def __init__(self, node: NodeEngine, pace_seconds: float, stop: threading.Event) -> None:
        self.node, self.pace, self.stop = node, pace_seconds, stop

    def _remove(self, r: Removal) -> None:
        if r.kind == "container":
            self.node.remove_container(r.id)
        elif r.kind == "image":
            self.node.remove_image(r.id, force=r.force)
        else:
            self.node.remove_volume(r.id)

    def apply(self, plan: GcPlan) -> tuple[list[GcItem], list[GcItem]]:
        done: list[GcItem] = []
        failed: list[GcItem] = []
        failed_ids: set[str] = set()
        for r in plan.removals:
            if self.stop.is_set():
                break
            if failed_ids.intersection(r.after):
                failed_ids.add(r.id)
                failed.append(GcItem(r.kind, r.name, 0, r.reason, "skipped: a container using it was not removed"))
                continue
            try:
                self._remove(r)
            except EngineNotFoundError:
                audit.info("gc: %s %s was already gone", r.kind, r.name)
                continue
            except OrcastraError as e:  # 409: in use again since the plan, and the like
                failed_ids.add(r.id)
                failed.append(GcItem(r.kind, r.name, 0, r.reason, cut(str(e), 200)))
                audit.warning("gc: could not remove %s %s: %s", r.kind, r.name, cut(str(e), 300))
                continue
            audit.info("gc: removed %s %s (%d bytes): %s", r.kind, r.name, r.bytes, r.reason)
            done.append(GcItem(r.kind, r.name, r.bytes, r.reason))
            if self.pace:
                self.stop.wait(self.pace)
        return done, failed


# --- policy and schedule ------------------------------------------------------------------------------------


def gc_policy(gc: Mapping[str, Any]) -> GcPolicy:
    """The planner's policy from the validated ``hygiene.gc`` section (as handed to the agent process)."""
    percent, size = parse_threshold(gc["disk_threshold"]) if gc.get("disk_threshold") else (None, None)
    return GcPolicy(
        remove_images=gc["remove_images"],
        keep_per_repository=gc["keep_per_repository"],
        keep_patterns=tuple(gc["keep"]),
        min_image_age_seconds=gc["min_image_age_seconds"],
        force_image_removal=gc["force_image_removal"],
        remove_containers=gc["remove_containers"],
        grace_period_seconds=gc["grace_period_seconds"],
        remove_anonymous_volumes=gc["remove_anonymous_volumes"],
        volume_patterns=tuple(gc["volume_patterns"]),
        disk_threshold_bytes=size,
        disk_threshold_percent=percent,
        disk_target_percent_below=gc["disk_target_below_percent"],
    )


def next_scheduled(expression: str | None, zone: str | None, now: float) -> float | None:
    """The next time ``expression`` fires after ``now`` (epoch seconds), in ``zone`` (else local time)."""
    if not expression:
        return None
    tz = zoneinfo.ZoneInfo(zone) if zone else None
    start = dt.datetime.fromtimestamp(now, tz) if tz else dt.datetime.fromtimestamp(now).astimezone()
    return next(cronsim.CronSim(expression, start)).timestamp()


class GcRunner(threading.Thread):
    """Runs the garbage collection on its schedule, on its disk threshold, and when asked (``run_now``)."""

    def __init__(  # noqa: PLR0913 - the node, its settings, what the events and controllers tell, the stop
        self,
        node: NodeEngine,
        gc: Mapping[str, Any],
        facts: FactsBox,
        last_use: LastUse,
        stop: threading.Event,
        *,
        on_result: Callable[[GcResult], None] = lambda result: None,
    ) -> None:
        super().__init__(name="orcastra-agent-gc", daemon=True)
        self.node, self.gc, self.facts, self.last_use, self.stop = node, gc, facts, last_use, stop
        self.policy = gc_policy(gc)
        self.on_result = on_result
        self._run_lock = threading.Lock()
        self.last: GcResult | None = None

    def run_now(self, trigger: str, dry_run: bool | None = None) -> GcResult:
        """One run (plan and execute), serialised with any other; never raises."""
        dry = self.gc["dry_run"] if dry_run is None else dry_run
        with self._run_lock:
            started = time.time()
            try:
                inventory = read_inventory(self.node, self.facts, self.last_use, self.gc.get("disk_path"), started)
                plan = plan_gc(inventory, self.policy, trigger)
                pace = self.gc["pace_seconds"]
                executor = DryRunGcExecutor() if dry else EngineGcExecutor(self.node, pace, self.stop)
                done, failed = executor.apply(plan)
                result = GcResult(
                    trigger=trigger,
                    dry_run=dry,
                    started_at=started,
                    finished_at=time.time(),
                    removed=tuple(done[:MAX_RESULT_ITEMS]),
                    failed=tuple(failed[:MAX_RESULT_ITEMS]),
                    removed_count=len(done),
                    failed_count=len(failed),
                    freed_bytes=sum(i.bytes for i in done),
                    notes=tuple(n[:300] for n in plan.notes[:20]),
                )
            except OrcastraError as e:
                log.warning("gc (%s): %s", trigger, e)
                result = GcResult(
                    trigger=trigger, dry_run=dry, started_at=started, finished_at=time.time(), error=cut(str(e), 300)
                )
            self.last = result
            self.last_use.save(self.gc.get("state_file"))
        verb = "would free" if dry else "freed"
        # A threshold check that found the disk below its threshold is routine: not an info line every 5 min.
        quiet = trigger == "threshold" and not (result.removed_count or result.failed_count or result.error)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "gc (%s): %d removed, %d failed, %s %d bytes",
            trigger,
            result.removed_count,
            result.failed_count,
            verb,
            result.freed_bytes,
        )
        self.on_result(result)
        return result

    def _due(self, now: float, next_run: float | None, next_check: float | None) -> str | None:
        if next_run is not None and now >= next_run:
            return "schedule"
        if next_check is not None and now >= next_check:
            return "threshold"
        return None

    def run(self) -> None:
        self.last_use.load(self.gc.get("state_file"))
        interval = float(self.gc["check_interval_seconds"])
        threshold = bool(self.gc.get("disk_threshold"))
        next_run = next_scheduled(self.gc.get("schedule"), self.gc.get("timezone"), time.time())
        next_check = time.time() + interval if threshold else None
        while not self.stop.is_set():
            now = time.time()
            trigger = self._due(now, next_run, next_check)
            if trigger == "schedule":
                next_run = next_scheduled(self.gc.get("schedule"), self.gc.get("timezone"), now)
            elif trigger == "threshold":
                next_check = now + interval
            if trigger is not None:
                try:
                    self.run_now(trigger)
                except Exception:  # a bug must not kill the thread: logged, and the next run comes
                    log.exception("gc: unexpected error")
                continue
            wake = min(t for t in (next_run, next_check, now + 3600) if t is not None)
            self.stop.wait(max(0.5, wake - now))
