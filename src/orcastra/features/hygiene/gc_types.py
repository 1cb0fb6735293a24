"""The garbage collector's vocabulary: what a node agent knows of its Engine (``NodeInventory``), what the
operator allows (``GcPolicy``) and what the planner decides (``GcPlan``: removals in order, a count of what
was kept and why, notes).

Everything is a frozen dataclass built once by the adapter from the Engine's JSON (GET /images/json,
/containers/json?all=1, /volumes) and the Swarm facts a manager gives the agent; nothing past the adapter
reads raw dicts. ``orcastra.features.hygiene.gc`` holds the planner itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Swarm labels every container it starts for a task with the task's ID (moby daemon/cluster/executor).
SWARM_TASK_ID_LABEL = "com.docker.swarm.task.id"
# Engines >= 23 mark the volumes they create for a container's anonymous mounts with this label; older ones
# only give them a random name of 64 hex digits.
ANONYMOUS_VOLUME_LABEL = "com.docker.volume.anonymous"
_ANONYMOUS_NAME_RE = re.compile(r"[0-9a-f]{64}\Z")

TRIGGERS = ("schedule", "command", "threshold")
RemovalKind = Literal["container", "image", "volume"]


def is_anonymous_volume(name: str, labels: Mapping[str, str]) -> bool:
    """Whether a volume is anonymous: the Engine's label says so, or (older Engines) its name is the random
    64-hex-digit name the Engine gives an anonymous mount. A person naming a volume that way is not protected:
    nothing tells the two apart on such an Engine."""
    return ANONYMOUS_VOLUME_LABEL in labels or _ANONYMOUS_NAME_RE.match(name) is not None


# --- the inventory ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One local image (GET /images/json). ``repo_tags`` may be ``()`` or ``("<none>:<none>",)`` for a
    dangling image; ``repo_digests`` look like ``reg:5000/a/b@sha256:...`` (an image a Swarm worker pulled by
    digest often has digests and no tag). ``shared_size`` is -1 when the Engine did not compute it."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: float
    size: int
    shared_size: int = -1

    @property
    def unique_bytes(self) -> int:
        """What removing the image alone frees: its size less the layers other images share (all of it when
        the shared size is unknown, an upper bound)."""
        freed = self.size - self.shared_size if self.shared_size >= 0 else self.size
        return max(0, freed)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container of any state (GET /containers/json?all=1 with its inspect times). ``state`` is the
    Engine's ("running", "exited", "created", "dead", "paused", "restarting", "removing"); ``finished_at`` is
    None when it never ran; ``volumes`` are the names of the volumes it mounts."""

    id: str
    name: str
    image_id: str
    image_ref: str
    state: str
    created: float
    finished_at: float | None
    labels: Mapping[str, str] = field(hash=False)
    volumes: tuple[str, ...]

    @property
    def task_id(self) -> str | None:
        """The Swarm task this container runs, or None for a plain container."""
        return self.labels.get(SWARM_TASK_ID_LABEL)


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """One local volume (GET /volumes). ``anonymous`` is decided by the adapter with ``is_anonymous_volume``;
    ``size`` is known only from GET /system/df (None otherwise)."""

    name: str
    created: float | None
    labels: Mapping[str, str] = field(hash=False)
    anonymous: bool
    size: int | None = None


@dataclass(frozen=True, slots=True)
class SwarmFacts:
    """What the Swarm still needs, from a manager: every image reference a service spec names (its
    PreviousSpec and services scaled to 0 included: a rollback or a scale-up pulls nothing if the image is
    still here), the IDs of the tasks it still tracks, and the volume names any service mounts."""

    image_refs: frozenset[str]
    task_ids: frozenset[str]
    volume_names: frozenset[str]


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The filesystem holding the Engine's data root (``DockerRootDir``)."""

    total_bytes: int
    used_bytes: int

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """One node's Engine at one moment, as the agent saw it. ``last_used`` maps an image ID to the last time
    the agent saw a container created or started from it (Engine events); ``swarm`` is None when the agent has
    no fresh facts from a manager; ``now`` is the time of the inventory (the planner reads no clock)."""

    images: tuple[ImageInfo, ...]
    containers: tuple[ContainerInfo, ...]
    volumes: tuple[VolumeInfo, ...]
    last_used: Mapping[str, float] = field(hash=False)
    disk: DiskUsage | None
    swarm: SwarmFacts | None
    now: float


# --- the policy -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GcPolicy:
    """What the operator allows the collector to remove.

    - images: ``keep_per_repository`` newest of each repository (by creation time, counted across tags) are
      kept; ``keep_patterns`` are fnmatch patterns on ``repository:tag`` or a bare repository, matched against
      the name as the Engine shows it (``nginx:1.27``) and in full (``docker.io/library/nginx:1.27``); ``*``
      crosses ``/``. With ``force_image_removal`` off an image with several tags, or with names in several
      repositories, is kept (removing it would untag several names); on, it goes with all its names.
    - containers: stopped ones older than ``grace_period_seconds``.
    - volumes: anonymous ones nothing mounts, and named ones matching ``volume_patterns`` nothing mounts.
    - thresholds, for a "threshold" run: the disk's used space over ``disk_threshold_percent`` of its size or
      over ``disk_threshold_bytes``; images then go least recently used first until the projected use is
      ``disk_target_percent_below`` points under the percent threshold, and that many percent under the bytes
      threshold (under both targets when both are set).

    Every problem is reported at once (ValueError), each naming its field.
    """

    remove_images: bool = True
    keep_per_repository: int = 3
    keep_patterns: tuple[str, ...] = ()
    min_image_age_seconds: float = 3600
    force_image_removal: bool = True
    remove_containers: bool = True
    grace_period_seconds: float = 10800
    remove_anonymous_volumes: bool = True
    volume_patterns: tuple[str, ...] = ()
    disk_threshold_bytes: int | None = None
    disk_threshold_percent: float | None = None
    disk_target_percent_below: float = 10.0

    def __post_init__(self) -> None:
        problems = policy_problems(self)
        if problems:
            raise ValueError("invalid garbage collection policy: " + "; ".join(problems))


def policy_problems(policy: GcPolicy) -> tuple[str, ...]:
    """Every field of ``policy`` outside its range, each named with what was expected."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(policy.keep_per_repository >= 0, f"keep_per_repository must be 0 or more, not {policy.keep_per_repository}")
    for name in ("min_image_age_seconds", "grace_period_seconds"):
        value = getattr(policy, name)
        check(value >= 0, f"{name} must be 0 or more, not {value}")  # NaN fails too
    for name in ("keep_patterns", "volume_patterns"):
        check(all(p for p in getattr(policy, name)), f"{name} must not hold an empty pattern")
    if policy.disk_threshold_bytes is not None:
        check(
            policy.disk_threshold_bytes > 0, f"disk_threshold_bytes must be over 0, not {policy.disk_threshold_bytes}"
        )
    if policy.disk_threshold_percent is not None:
        percent = policy.disk_threshold_percent
        check(0 < percent <= 100, f"disk_threshold_percent must be over 0 and at most 100, not {percent}")
    below = policy.disk_target_percent_below
    check(0 <= below < 100, f"disk_target_percent_below must be at least 0 and under 100, not {below}")
    return tuple(problems)


# --- the plan ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    """One thing to remove, in plan order. ``id`` is what the Engine call takes (a container or image ID, a
    volume's name: never shown raw); ``name`` and ``reason`` are printable.

    ``force`` is set only for an image with several tags or repositories: DELETE /images/{id} refuses it
    without ``force=1``, and force is best left off otherwise, since it would also delete an image that a
    stopped container made after the inventory uses. ``after`` lists the removals of this plan that must
    succeed first (the containers that used this image or volume): if one failed, skip this one."""

    kind: RemovalKind
    id: str
    name: str
    bytes: int
    reason: str
    force: bool = False
    after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Kept:
    """How many things of one kind were kept for one reason, with a few of their (printable) names."""

    kind: RemovalKind
    reason: str
    count: int
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GcPlan:
    """Removals in order (containers, then images least recently used first, then volumes), what was kept,
    notes for the operator (held back, threshold), and the bytes the removals free: an estimate, since an image
    whose shared size the Engine did not compute counts whole and a volume of unknown size counts 0."""

    removals: tuple[Removal, ...]
    kept: tuple[Kept, ...]
    notes: tuple[str, ...]
    freed_bytes: int

    def of_kind(self, kind: RemovalKind) -> tuple[Removal, ...]:
        return tuple(r for r in self.removals if r.kind == kind)
