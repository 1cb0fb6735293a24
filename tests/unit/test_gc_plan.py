"""The node agent's garbage collection planner (orcastra.features.hygiene.gc), over inventories built in code:
one test per rule (what is never removed, what goes, in what order, the threshold run, the held-back run
without Swarm facts, printable reasons), the image reference rules, the policy's validation, and a property
test over seeded random inventories that nothing in use is ever planned for removal."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import pytest

from orcastra.features.hygiene import gc_wording
from orcastra.features.hygiene.gc import HELD_BACK_NOTE, plan_gc
from orcastra.features.hygiene.gc_types import (
    ANONYMOUS_VOLUME_LABEL,
    SWARM_TASK_ID_LABEL,
    ContainerInfo,
    DiskUsage,
    GcPlan,
    GcPolicy,
    ImageInfo,
    NodeInventory,
    SwarmFacts,
    VolumeInfo,
    is_anonymous_volume,
)
from orcastra.features.hygiene.image_refs import ImageIndex, normalise_repository, parse_reference

NOW = 1_800_000_000.0
DAY = 86400.0
HOUR = 3600.0
GB = 1_000_000_000
# Only the rule under test decides: no image is kept for being one of the newest of its repository.
BARE = GcPolicy(keep_per_repository=0)


def image(
    n: int,
    *tags: str,
    digests: tuple[str, ...] = (),
    age: float = 30 * DAY,
    size: int = 100,
    shared: int = -1,
) -> ImageInfo:
    return ImageInfo(f"sha256:{n:064x}", tags, digests, NOW - age, size, shared)


def iid(n: int) -> str:
    return f"sha256:{n:064x}"


def container(
    cid: str,
    image_n: int,
    *,
    ref: str = "",
    state: str = "exited",
    stopped: float | None = 1 * DAY,
    age: float = 2 * DAY,
    task: str | None = None,
    volumes: tuple[str, ...] = (),
    name: str | None = None,
) -> ContainerInfo:
    labels = {SWARM_TASK_ID_LABEL: task} if task else {}
    finished = None if stopped is None else NOW - stopped
    return ContainerInfo(
        cid, f"/{name or cid}", iid(image_n), ref or iid(image_n), state, NOW - age, finished, labels, volumes
    )


def volume(name: str, *, anonymous: bool = False, age: float | None = 30 * DAY, size: int | None = None) -> VolumeInfo:
    labels = {ANONYMOUS_VOLUME_LABEL: ""} if anonymous else {}
    return VolumeInfo(name, None if age is None else NOW - age, labels, anonymous, size)


def facts(refs: Iterable[str] = (), tasks: Iterable[str] = (), volumes: Iterable[str] = ()) -> SwarmFacts:
    return SwarmFacts(frozenset(refs), frozenset(tasks), frozenset(volumes))


EMPTY_FACTS = facts()


def node(
    images: Iterable[ImageInfo] = (),
    containers: Iterable[ContainerInfo] = (),
    volumes: Iterable[VolumeInfo] = (),
    *,
    swarm: SwarmFacts | None = EMPTY_FACTS,
    last_used: Mapping[str, float] | None = None,
    disk: DiskUsage | None = None,
) -> NodeInventory:
    return NodeInventory(tuple(images), tuple(containers), tuple(volumes), dict(last_used or {}), disk, swarm, NOW)


def gone(plan: GcPlan, kind: str) -> list[str]:
    return [r.id for r in plan.removals if r.kind == kind]


def kept_reasons(plan: GcPlan, kind: str) -> dict[str, int]:
    return {k.reason: k.count for k in plan.kept if k.kind == kind}


# --- images: never removed ----------------------------------------------------------------------------------


def test_an_old_unused_image_is_removed_with_its_bytes_and_a_reason() -> None:
    plan = plan_gc(node([image(1, "app:1", size=500, shared=200)]), BARE, "schedule")
    assert gone(plan, "image") == [iid(1)]
    (r,) = plan.removals
    assert (r.name, r.bytes, r.force, r.after) == ("app:1", 300, False, ())
    assert r.reason == "no container or service uses it; created 30 days ago"
    assert plan.freed_bytes == 300


@pytest.mark.parametrize("state", ["running", "exited", "created", "dead", "paused", "restarting"])
def test_an_image_a_container_of_any_state_uses_is_kept(state: str) -> None:
    # The container is within its grace period, so it stays, and so does its image.
    c = container("c1", 1, state=state, stopped=HOUR)
    plan = plan_gc(node([image(1, "app:1"), image(2, "app:2")], [c]), BARE, "schedule")
    assert gone(plan, "image") == [iid(2)]
    assert kept_reasons(plan, "image") == {"used by a container on this node (of any state)": 1}


def test_an_image_a_stopped_container_uses_by_reference_only_is_kept() -> None:
    # The container was made from an older nginx:latest (image 1, gone from the list); the tag now names image 2.
    c = container("c1", 1, ref="nginx", stopped=HOUR)
    plan = plan_gc(node([image(2, "nginx:latest"), image(3, "nginx:1.0")], [c]), BARE, "schedule")
    assert gone(plan, "image") == [iid(3)]


@pytest.mark.parametrize(
    ("service_ref", "local"),
    [
        ("reg:5000/app/web:1.2@sha256:abc", image(1, digests=("reg:5000/app/web@sha256:abc",))),
        ("reg:5000/app/web:1.2@sha256:abc", image(1, "reg:5000/app/web:1.2")),
        ("reg:5000/app/web:1.2", image(1, "reg:5000/app/web:1.2", "reg:5000/app/web:latest")),
        ("nginx", image(1, "nginx:latest")),
        ("docker.io/library/nginx:latest", image(1, "nginx:latest")),
        ("library/nginx", image(1, "nginx:latest")),
        ("index.docker.io/library/nginx:latest", image(1, "nginx:latest")),
        ("nginx:1.27@sha256:def", image(1, digests=("nginx@sha256:def",))),
        ("user/app:2", image(1, "docker.io/user/app:2")),
        (iid(1), image(1)),
    ],
    ids=[
        "digest",
        "repo-tag-of-a-pinned-ref",
        "repo-tag",
        "hub-short",
        "hub-full",
        "hub-library",
        "hub-index-alias",
        "hub-digest",
        "hub-user",
        "image-id",
    ],
)
def test_an_image_a_service_names_is_kept(service_ref: str, local: ImageInfo) -> None:
    plan = plan_gc(node([local], swarm=facts([service_ref])), BARE, "schedule")
    assert plan.removals == ()
    assert kept_reasons(plan, "image") == {"named by a Swarm service (spec or previous spec)": 1}


@pytest.mark.parametrize(
    ("service_ref", "local"),
    [
        ("nginx:1.26", image(1, "nginx:1.27")),
        ("reg:5000/app/web@sha256:other", image(1, digests=("reg:5000/app/web@sha256:abc",))),
        ("reg:5000/other/web@sha256:abc", image(1, digests=("reg:5000/app/web@sha256:abc",))),
        ("reg:5000/nginx", image(1, "nginx:latest")),
    ],
    ids=["other-tag", "other-digest", "same-digest-other-repository", "other-registry"],
)
def test_an_image_no_service_names_is_not_kept_for_a_near_miss(service_ref: str, local: ImageInfo) -> None:
    plan = plan_gc(node([local], swarm=facts([service_ref])), BARE, "schedule")
    assert gone(plan, "image") == [local.id]


def test_an_image_only_a_service_scaled_to_0_names_is_kept() -> None:
    # A service with 0 replicas runs no container anywhere; its image is only in the facts' spec refs.
    scaled_to_0 = "reg:5000/batch/job:7@sha256:feed"
    images = [image(1, digests=("reg:5000/batch/job@sha256:feed",)), image(2, "reg:5000/batch/job:6")]
    plan = plan_gc(node(images, swarm=facts([scaled_to_0])), BARE, "schedule")
    assert gone(plan, "image") == [iid(2)]


@pytest.mark.parametrize(
    ("age", "last_used_ago", "removed"),
    [(10 * 60, None, False), (2 * HOUR, None, True), (30 * DAY, 10 * 60, False), (30 * DAY, 2 * HOUR, True)],
    ids=["created-10-minutes-ago", "created-2-hours-ago", "used-10-minutes-ago", "used-2-hours-ago"],
)
def test_an_image_younger_than_the_minimum_age_is_kept(age: float, last_used_ago: float | None, removed: bool) -> None:
    last = {} if last_used_ago is None else {iid(1): NOW - last_used_ago}
    plan = plan_gc(node([image(1, "app:1", age=age)], last_used=last), BARE, "schedule")
    assert gone(plan, "image") == ([iid(1)] if removed else [])
    if not removed:
        assert kept_reasons(plan, "image") == {"created or used less than 1 hour ago (min_image_age_seconds)": 1}


@pytest.mark.parametrize(
    ("pattern", "tags", "kept"),
    [
        ("registry:5000/base/*", ("registry:5000/base/alpine:3",), True),
        ("registry:5000/base/*", ("registry:5000/other/alpine:3",), False),
        ("*:stable", ("app:stable",), True),
        ("*:stable", ("app:unstable",), False),
        ("nginx", ("nginx:1.0",), True),
        ("docker.io/library/nginx:*", ("nginx:1.0",), True),
        ("reg:5000/app/web", ("<none>:<none>",), True),  # a digest-only image: its digest's repository
    ],
    ids=["registry-glob", "registry-glob-miss", "tag-glob", "tag-glob-miss", "bare-repo", "full-name", "digest-repo"],
)
def test_an_image_matching_a_keep_pattern_is_kept(pattern: str, tags: tuple[str, ...], kept: bool) -> None:
    local = image(1, *tags, digests=("reg:5000/app/web@sha256:abc",) if "<none>" in tags[0] else ())
    plan = plan_gc(node([local]), GcPolicy(keep_per_repository=0, keep_patterns=(pattern,)), "schedule")
    assert gone(plan, "image") == ([] if kept else [iid(1)])


def test_the_newest_images_of_each_repository_are_kept_counted_across_tags() -> None:
    images = [
        image(1, "reg:5000/app:1", age=30 * DAY),
        image(2, "reg:5000/app:2", "reg:5000/app:latest", age=20 * DAY),
        image(3, digests=("reg:5000/app@sha256:c",), age=10 * DAY),  # pulled by digest: same repository
        image(4, "other:1", age=40 * DAY),
    ]
    plan = plan_gc(node(images), GcPolicy(keep_per_repository=2), "schedule")
    assert sorted(gone(plan, "image")) == [iid(1)]
    assert kept_reasons(plan, "image") == {"one of the 2 newest images of its repository (keep_per_repository)": 3}


def test_three_tags_of_one_repository_with_keep_2_lose_the_oldest() -> None:
    images = [image(1, "app:a", age=9 * DAY), image(2, "app:b", age=5 * DAY), image(3, "app:c", age=2 * DAY)]
    plan = plan_gc(node(images), GcPolicy(keep_per_repository=2), "schedule")
    assert gone(plan, "image") == [iid(1)]


@pytest.mark.parametrize("tags", [(), ("<none>:<none>",)], ids=["no-tags", "none-none"])
def test_a_dangling_image_is_a_candidate(tags: tuple[str, ...]) -> None:
    plan = plan_gc(node([image(1, *tags)]), GcPolicy(), "schedule")
    assert gone(plan, "image") == [iid(1)]
    assert plan.removals[0].name == "0" * 12  # the short ID, as docker images shows it
    assert "dangling (no tag)" in plan.removals[0].reason


@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize(
    ("tags", "digests"),
    [(("a:1", "a:2", "a:3"), ()), (("a:1",), ("b@sha256:x",))],
    ids=["three-tags", "two-repositories"],
)
def test_an_image_with_several_names_goes_only_when_forced(
    force: bool, tags: tuple[str, ...], digests: tuple[str, ...]
) -> None:
    policy = GcPolicy(keep_per_repository=0, force_image_removal=force)
    plan = plan_gc(node([image(1, *tags, digests=digests)]), policy, "schedule")
    if force:
        (r,) = plan.removals
        assert r.force
        assert ("its 3 tags go with it" in r.reason) is (len(tags) == 3)
    else:
        assert plan.removals == ()
        assert kept_reasons(plan, "image") == {"has several tags or repositories, and force_image_removal is off": 1}


def test_an_image_with_one_name_is_removed_without_force() -> None:
    plan = plan_gc(node([image(1, "a:1", digests=("a@sha256:x",))]), BARE, "schedule")
    assert [r.force for r in plan.removals] == [False]


def test_remove_images_off_keeps_every_image() -> None:
    plan = plan_gc(node([image(1, "a:1"), image(2)]), GcPolicy(remove_images=False), "schedule")
    assert plan.removals == ()
    assert kept_reasons(plan, "image") == {"image removal is off (remove_images)": 2}


# --- containers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "stopped", "age", "removed"),
    [
        ("exited", 4 * HOUR, DAY, True),
        ("exited", 2 * HOUR, DAY, False),
        ("dead", 4 * HOUR, DAY, True),
        ("created", None, 4 * HOUR, True),  # never started: its creation counts
        ("created", None, 2 * HOUR, False),
        ("running", None, 90 * DAY, False),
        ("paused", None, 90 * DAY, False),
        ("restarting", 90 * DAY, 90 * DAY, False),
        ("removing", 90 * DAY, 90 * DAY, False),
    ],
    ids=["exited-old", "exited-new", "dead", "created-old", "created-new", "running", "paused", "restarting", "rm"],
)
def test_a_plain_container_goes_once_stopped_longer_than_the_grace_period(
    state: str, stopped: float | None, age: float, removed: bool
) -> None:
    c = container("c1", 1, state=state, stopped=stopped, age=age)
    plan = plan_gc(node([image(1, age=age)], [c]), BARE, "schedule")
    assert gone(plan, "container") == (["c1"] if removed else [])


def test_container_reasons_say_state_and_idle_time() -> None:
    cs = [container("c1", 1, stopped=4 * HOUR, name="web"), container("c2", 1, state="created", stopped=None)]
    plan = plan_gc(node([image(1, "a:1")], cs), BARE, "schedule")
    by_id = {r.id: r for r in plan.removals}
    assert by_id["c1"].name == "web"
    assert by_id["c1"].reason == "exited container, stopped 4 hours ago (grace 3 hours)"
    assert by_id["c2"].reason == "created container, never started, created 2 days ago (grace 3 hours)"


@pytest.mark.parametrize(
    ("tracked", "state", "stopped", "removed"),
    [
        (False, "exited", DAY, True),
        (True, "exited", DAY, False),
        (False, "running", None, False),
        (False, "created", None, True),
        (False, "exited", HOUR, False),  # the facts may predate a task made a moment ago
    ],
    ids=["untracked", "tracked", "untracked-running", "untracked-created", "untracked-within-grace"],
)
def test_a_task_container_goes_only_when_the_swarm_no_longer_tracks_its_task(
    tracked: bool, state: str, stopped: float | None, removed: bool
) -> None:
    c = container("c1", 1, task="t1", state=state, stopped=stopped)
    plan = plan_gc(node([image(1, "a:1")], [c], swarm=facts(tasks=["t1"] if tracked else [])), BARE, "schedule")
    assert gone(plan, "container") == (["c1"] if removed else [])
    if removed:
        assert "the Swarm no longer tracks its task t1" in plan.removals[0].reason


def test_remove_containers_off_keeps_every_container() -> None:
    plan = plan_gc(node([image(1)], [container("c1", 1)]), GcPolicy(remove_containers=False), "schedule")
    assert gone(plan, "container") == []
    assert kept_reasons(plan, "container") == {"container removal is off (remove_containers)": 1}


# --- volumes ------------------------------------------------------------------------------------------------


def test_a_named_volume_is_kept_and_an_anonymous_orphan_removed() -> None:
    anonymous = "f" * 64
    plan = plan_gc(node(volumes=[volume("data"), volume(anonymous, anonymous=True, size=7)]), BARE, "schedule")
    assert gone(plan, "volume") == [anonymous]
    assert plan.freed_bytes == 7
    assert plan.removals[0].reason == "anonymous volume that no container or service mounts"
    assert kept_reasons(plan, "volume") == {"a named volume not matching volume_patterns": 1}


def test_a_named_volume_matching_a_pattern_goes_only_when_nothing_mounts_it() -> None:
    policy = GcPolicy(keep_per_repository=0, volume_patterns=("cache-*",))
    vols = [volume("cache-a"), volume("cache-b"), volume("cache-c"), volume("data")]
    cs = [
        container("c1", 1, state="running", volumes=("cache-a",)),
        container("c2", 1, stopped=HOUR, volumes=("cache-b",)),
    ]
    plan = plan_gc(node([image(1)], cs, vols, swarm=facts(volumes=["cache-c"])), policy, "schedule")
    assert gone(plan, "volume") == []
    plan = plan_gc(node([image(1)], cs, vols, swarm=facts()), policy, "schedule")
    assert gone(plan, "volume") == ["cache-c"]
    assert kept_reasons(plan, "volume") == {
        "mounted by a container on this node (of any state)": 2,
        "a named volume not matching volume_patterns": 1,
    }


def test_an_anonymous_volume_a_service_or_stopped_container_mounts_is_kept() -> None:
    a, b = "a" * 64, "b" * 64
    vols = [volume(a, anonymous=True), volume(b, anonymous=True)]
    plan = plan_gc(
        node([image(1)], [container("c1", 1, stopped=HOUR, volumes=(a,))], vols, swarm=facts(volumes=[b])),
        BARE,
        "schedule",
    )
    assert gone(plan, "volume") == []
    assert kept_reasons(plan, "volume") == {
        "mounted by a container on this node (of any state)": 1,
        "mounted by a Swarm service": 1,
    }


def test_a_young_volume_and_anonymous_removal_off_keep_volumes() -> None:
    vols = [volume("a" * 64, anonymous=True, age=HOUR), volume("b" * 64, anonymous=True, age=None)]
    plan = plan_gc(node(volumes=vols), BARE, "schedule")
    assert gone(plan, "volume") == ["b" * 64]  # no creation time: only mounts decide
    plan = plan_gc(node(volumes=vols), GcPolicy(remove_anonymous_volumes=False), "schedule")
    assert gone(plan, "volume") == []


@pytest.mark.parametrize(
    ("name", "labels", "anonymous"),
    [
        ("f" * 64, {}, True),
        ("data", {ANONYMOUS_VOLUME_LABEL: ""}, True),
        ("data", {}, False),
        ("F" * 64, {}, False),
        ("f" * 63, {}, False),
    ],
    ids=["64-hex", "label", "named", "upper-hex", "63-hex"],
)
def test_is_anonymous_volume(name: str, labels: dict[str, str], anonymous: bool) -> None:
    assert is_anonymous_volume(name, labels) is anonymous


# --- one plan: containers first, then what they freed --------------------------------------------------------


def test_a_removed_containers_image_and_volumes_go_in_the_same_plan_after_it() -> None:
    anonymous = "a" * 64
    cs = [container("c1", 1, ref="app:1", volumes=(anonymous, "cache-x"))]
    vols = [volume(anonymous, anonymous=True), volume("cache-x")]
    policy = GcPolicy(keep_per_repository=0, volume_patterns=("cache-*",))
    plan = plan_gc(node([image(1, "app:1")], cs, vols), policy, "schedule")
    assert [(r.kind, r.id) for r in plan.removals] == [
        ("container", "c1"),
        ("image", iid(1)),
        ("volume", anonymous),
        ("volume", "cache-x"),
    ]
    assert all(r.after == ("c1",) for r in plan.removals[1:])
    assert "the stopped container that used it goes first in this plan" in plan.removals[1].reason


def test_images_go_least_recently_used_first() -> None:
    images = [image(1, "a:1", age=50 * DAY), image(2, "b:1", age=40 * DAY), image(3, "c:1", age=30 * DAY)]
    # image 1: used 1 day ago (agent's record); image 2: its last container was made 60 days ago; image 3: its
    # own creation (30 days).
    cs = [container("c2", 2, age=60 * DAY, stopped=59 * DAY)]
    plan = plan_gc(node(images, cs, last_used={iid(1): NOW - DAY}), BARE, "schedule")
    assert gone(plan, "image") == [iid(2), iid(3), iid(1)]


# --- without Swarm facts ------------------------------------------------------------------------------------


def test_without_fresh_facts_only_plain_containers_go_and_a_note_says_so() -> None:
    cs = [container("plain", 1), container("task", 2, task="t1")]
    vols = [volume("a" * 64, anonymous=True)]
    plan = plan_gc(node([image(1, "a:1"), image(2, "b:1"), image(3)], cs, vols, swarm=None), BARE, "schedule")
    assert [(r.kind, r.id) for r in plan.removals] == [("container", "plain")]
    assert HELD_BACK_NOTE in plan.notes
    assert kept_reasons(plan, "image")["no fresh Swarm facts: a service could still name it"] == 2
    assert kept_reasons(plan, "container") == {"a Swarm task's container, and no fresh Swarm facts": 1}
    assert kept_reasons(plan, "volume") == {"no fresh Swarm facts: a service could still mount it": 1}


# --- the threshold run --------------------------------------------------------------------------------------


LRU_IMAGES = [image(n, f"app{n}:1", size=10 * GB) for n in range(1, 6)]
LRU_USED = {iid(n): NOW - (10 - n) * DAY for n in range(1, 6)}  # image 1 least recently used


@pytest.mark.parametrize(
    ("disk", "policy", "note"),
    [
        (DiskUsage(100 * GB, 79 * GB), GcPolicy(disk_threshold_percent=80), "not over the threshold"),
        (DiskUsage(100 * GB, 80 * GB), GcPolicy(disk_threshold_percent=80), "not over the threshold"),
        (DiskUsage(100 * GB, 90 * GB), GcPolicy(disk_threshold_bytes=95 * GB), "not over the threshold"),
        (None, GcPolicy(disk_threshold_percent=80), "the disk use is unknown"),
        (DiskUsage(0, 0), GcPolicy(disk_threshold_percent=80), "the disk use is unknown"),
        (DiskUsage(100 * GB, 99 * GB), GcPolicy(), "no disk threshold is set"),
    ],
    ids=["under", "at", "under-bytes", "unknown", "zero-size", "no-threshold"],
)
def test_a_threshold_run_below_the_threshold_plans_nothing(disk: DiskUsage | None, policy: GcPolicy, note: str) -> None:
    cs = [container("c1", 1)]
    plan = plan_gc(node(LRU_IMAGES, cs, disk=disk, last_used=LRU_USED), policy, "threshold")
    assert (plan.removals, plan.kept, plan.freed_bytes) == ((), (), 0)
    assert len(plan.notes) == 1
    assert note in plan.notes[0]


def test_a_threshold_run_over_the_percent_threshold_removes_lru_first_until_under_target() -> None:
    # 100 GB disk, 85 GB used, threshold 80%, target 70%: 15 GB to free, 10 GB per image -> two images.
    policy = GcPolicy(keep_per_repository=0, disk_threshold_percent=80, disk_target_percent_below=10)
    cs = [container("c9", 9, age=30 * DAY)]  # a plain old container goes too (0 bytes known)
    disk = DiskUsage(100 * GB, 85 * GB)
    plan = plan_gc(node([*LRU_IMAGES, image(9)], cs, disk=disk, last_used=LRU_USED), policy, "threshold")
    assert gone(plan, "container") == ["c9"]
    # Image 9 was last used by c9, made 30 days ago: least recently used of all, and freed by c9's removal.
    assert gone(plan, "image") == [iid(9), iid(1), iid(2)]
    assert kept_reasons(plan, "image") == {"not needed: the disk is projected under the target without it": 3}
    assert plan.notes[0].startswith(
        "threshold run: 85.0 GB of 100.0 GB used (85.0%), over 80% (disk_threshold_percent)"
    )
    assert plan.notes[1] == "projected use after this plan: 65.0 GB (65.0%)"


def test_a_threshold_run_over_the_bytes_threshold_counts_volumes_first() -> None:
    # Threshold 50 GB, target 45 GB; 59 GB used. An orphan anonymous volume of 5 GB goes anyway (54 GB), then
    # one image (44 GB).
    policy = GcPolicy(keep_per_repository=0, disk_threshold_bytes=50 * GB, disk_target_percent_below=10)
    vols = [volume("a" * 64, anonymous=True, size=5 * GB)]
    disk = DiskUsage(1000 * GB, 59 * GB)
    plan = plan_gc(node(LRU_IMAGES, volumes=vols, disk=disk, last_used=LRU_USED), policy, "threshold")
    assert [(r.kind, r.id) for r in plan.removals] == [("image", iid(1)), ("volume", "a" * 64)]
    assert plan.freed_bytes == 15 * GB


def test_a_threshold_run_that_cannot_reach_the_target_says_so() -> None:
    policy = GcPolicy(keep_per_repository=0, disk_threshold_percent=50)
    plan = plan_gc(node(LRU_IMAGES[:1], disk=DiskUsage(100 * GB, 90 * GB)), policy, "threshold")
    assert gone(plan, "image") == [iid(1)]
    assert "still over the target" in plan.notes[-1]


def test_an_unknown_trigger_is_refused_printably() -> None:
    with pytest.raises(ValueError, match="garbage collection trigger") as caught:
        plan_gc(node(), BARE, "cron\n")
    assert str(caught.value) == (
        "unknown garbage collection trigger cron\\n: expected one of schedule, command, threshold"
    )


# --- hostile names ------------------------------------------------------------------------------------------


def test_hostile_names_are_printable_in_names_reasons_and_examples() -> None:
    evil = "evil\n[INFO] all good \x1b[31mred\x1b[0m" + "x" * 500
    images = [image(1, f"reg:5000/{evil}:1"), image(2, f"{evil}:2"), image(3, f"{evil}:3")]
    cs = [container("c1", 1, name=evil, task=evil), container("c3", 3, state="running", name=evil)]
    vols = [volume(evil), volume("b" * 64, anonymous=True)]
    plan = plan_gc(node(images, cs, vols), GcPolicy(keep_per_repository=0), "schedule")
    assert gone(plan, "container") == ["c1"]
    assert gone(plan, "image")
    texts = [t for r in plan.removals for t in (r.name, r.reason)]
    texts += [t for k in plan.kept for t in (k.reason, *k.examples)]
    assert texts
    assert all(t.isprintable() and "\x1b" not in t for t in texts)
    assert all(len(r.name) <= 203 for r in plan.removals)
    assert any("\\x1b[31m" in t for t in texts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("\x1b[2J", "\\x1b[2J"),
        ("x" * 250, "x" * 200 + "..."),
        ("\n" * 150, "\\n" * 100 + "..."),
    ],
    ids=["plain", "newline", "escape", "long", "long-after-escaping"],
)
def test_shown(text: str, expected: str) -> None:
    assert gc_wording.shown(text) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "1 second"), (45, "45 seconds"), (5400, "1.5 hours"), (3 * DAY, "3 days")]
)
def test_duration(seconds: float, text: str) -> None:
    assert gc_wording.duration(seconds) == text


@pytest.mark.parametrize(("n", "text"), [(512, "512 B"), (1_500_000, "1.5 MB"), (12_300_000_000, "12.3 GB")])
def test_size(n: int, text: str) -> None:
    assert gc_wording.size(n) == text


# --- references ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("library/nginx", "docker.io/library/nginx"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx"),
        ("user/app", "docker.io/user/app"),
        ("reg:5000/app", "reg:5000/app"),
        ("reg.example/app", "reg.example/app"),
        ("localhost/app", "localhost/app"),
        ("Reg/app", "Reg/app"),  # an upper-case first component is a registry
        ("a/b/c", "docker.io/a/b/c"),
    ],
)
def test_normalise_repository(name: str, full: str) -> None:
    assert normalise_repository(name) == full


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("nginx", ("docker.io/library/nginx", "latest", None)),
        ("reg:5000/app/web:1.2@sha256:abc", ("reg:5000/app/web", "1.2", "sha256:abc")),
        ("reg:5000/app/web@sha256:abc", ("reg:5000/app/web", None, "sha256:abc")),
        ("reg:5000/app/web", ("reg:5000/app/web", "latest", None)),
        ("<none>:<none>", None),
        ("<none>@<none>", None),
        ("", None),
        (iid(7), None),
    ],
)
def test_parse_reference(text: str, parsed: tuple[str, str | None, str | None] | None) -> None:
    ref = parse_reference(text)
    assert (None if ref is None else tuple(ref)) == parsed


def test_image_index_resolves_ids_tags_and_digests() -> None:
    index = ImageIndex([image(1, "nginx:latest", digests=("nginx@sha256:n",)), image(2, "reg:5000/a:1")])
    assert index.resolve("docker.io/library/nginx") == (iid(1),)
    assert index.resolve("nginx:2@sha256:n") == (iid(1),)
    assert index.resolve(f"{1:064x}") == (iid(1),)
    assert index.resolve(iid(3)) == ()
    assert index.resolve("reg:5000/a:1") == (iid(2),)
    assert index.resolve("reg:5000/a") == ()
    assert index.repositories[iid(1)] == ("docker.io/library/nginx",)


# --- the policy ---------------------------------------------------------------------------------------------


def test_an_invalid_policy_names_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="invalid garbage collection policy") as caught:
        GcPolicy(
            keep_per_repository=-1,
            min_image_age_seconds=float("nan"),
            grace_period_seconds=-1,
            keep_patterns=("",),
            disk_threshold_bytes=0,
            disk_threshold_percent=120,
            disk_target_percent_below=100,
        )
    message = str(caught.value)
    for field in (
        "keep_per_repository",
        "min_image_age_seconds",
        "grace_period_seconds",
        "keep_patterns",
        "disk_threshold_bytes",
        "disk_threshold_percent",
        "disk_target_percent_below",
    ):
        assert field in message


# --- property: nothing in use is ever planned -----------------------------------------------------------------

STATES = ("running", "exited", "created", "dead", "paused", "restarting", "removing")
REPOS = ("nginx", "library/redis", "docker.io/user/app", "reg:5000/team/web", "localhost/tool")


def _random_ref(rng: random.Random, repo: str, digest: str) -> str:
    """One of the many ways to name ``repo``: as written, in full, with a tag, with a digest, both."""
    written = rng.choice((repo, normalise_repository(repo), repo.removeprefix("docker.io/")))
    return rng.choice((written, f"{written}:{rng.randrange(3)}", f"{written}@{digest}", f"{written}:1@{digest}"))


def random_inventory(rng: random.Random) -> NodeInventory:
    images = []
    for n in range(rng.randint(0, 25)):
        repo = rng.choice(REPOS)
        tags = tuple({f"{repo}:{rng.randrange(3)}" for _ in range(rng.randint(0, 3))}) or rng.choice(
            ((), ("<none>:<none>",))
        )
        digests = (f"{repo}@sha256:{rng.randrange(4)}",) if rng.random() < 0.5 else ()
        images.append(image(n, *tags, digests=digests, age=rng.uniform(0, 60) * DAY, size=rng.randrange(1000)))
    vols = [volume(f"v{v}", anonymous=rng.random() < 0.5, age=rng.choice((None, HOUR, 9 * DAY))) for v in range(8)]
    containers = []
    for c in range(rng.randint(0, 15)):
        target = rng.randrange(30)  # sometimes an image no longer listed
        ref = _random_ref(rng, rng.choice(REPOS), f"sha256:{rng.randrange(4)}") if rng.random() < 0.5 else ""
        stopped = rng.choice((None, HOUR, 5 * DAY))
        containers.append(
            container(
                f"c{c}", target, ref=ref, state=rng.choice(STATES), stopped=stopped, age=6 * DAY,
                task=f"t{c}" if rng.random() < 0.4 else None,
                volumes=tuple(rng.sample([v.name for v in vols], rng.randint(0, 2))),
            )
        )  # fmt: skip
    swarm: SwarmFacts | None = None
    if rng.random() < 0.8:
        refs = [_random_ref(rng, rng.choice(REPOS), f"sha256:{rng.randrange(4)}") for _ in range(rng.randint(0, 4))]
        tasks = [f"t{c}" for c in range(15) if rng.random() < 0.5]
        swarm = facts(refs, tasks, [f"v{v}" for v in range(8) if rng.random() < 0.2])
    last = {i.id: NOW - rng.uniform(0, 9) * DAY for i in images if rng.random() < 0.3}
    disk = DiskUsage(10_000, rng.randrange(10_000)) if rng.random() < 0.7 else None
    return node(images, containers, vols, swarm=swarm, last_used=last, disk=disk)


def random_policy(rng: random.Random) -> GcPolicy:
    return GcPolicy(
        keep_per_repository=rng.randrange(3),
        keep_patterns=rng.choice(((), ("nginx*",), ("*:1",))),
        min_image_age_seconds=rng.choice((0, HOUR, 10 * DAY)),
        force_image_removal=rng.random() < 0.5,
        grace_period_seconds=rng.choice((0, 3 * HOUR)),
        volume_patterns=rng.choice(((), ("v*",))),
        disk_threshold_percent=rng.choice((None, 30.0, 90.0)),
        disk_threshold_bytes=rng.choice((None, 4000)),
    )


def test_property_nothing_in_use_is_ever_planned_for_removal() -> None:
    rng = random.Random(14)
    removed_images = 0
    for case in range(400):
        inventory, policy = random_inventory(rng), random_policy(rng)
        trigger = rng.choice(("schedule", "command", "threshold"))
        plan = plan_gc(inventory, policy, trigger)
        index = ImageIndex(inventory.images)
        where = f"case {case}: {trigger}"
        ids = {r.id for r in plan.removals}
        survivors = [c for c in inventory.containers if c.id not in ids]
        in_use = {c.image_id for c in survivors} | {i for c in survivors for i in index.resolve(c.image_ref)}
        assert not in_use & set(gone(plan, "image")), where
        assert not {v for c in survivors for v in c.volumes} & set(gone(plan, "volume")), where
        for c in inventory.containers:
            if c.id in ids:
                assert c.state in ("exited", "dead", "created"), where
        if inventory.swarm is None:
            assert not gone(plan, "image"), where
            assert not gone(plan, "volume"), where
            assert all(not c.task_id for c in inventory.containers if c.id in ids), where
        else:
            named = {i for ref in inventory.swarm.image_refs for i in index.resolve(ref)}
            assert not named & set(gone(plan, "image")), where
            assert not inventory.swarm.volume_names & set(gone(plan, "volume")), where
        kinds = [r.kind for r in plan.removals]
        assert kinds == sorted(kinds, key=("container", "image", "volume").index), where
        assert all(a in gone(plan, "container") for r in plan.removals for a in r.after), where
        assert plan.freed_bytes == sum(r.bytes for r in plan.removals), where
        removed_images += len(gone(plan, "image"))
    assert removed_images > 100  # the generator does reach removals
