"""Node hygiene on the stack lab's worker (issue 14), as test steps the stack test calls in order: the GC
scene (every kind of object the rules name, on one node) and the unhealthy containers for autoheal.

The agent deployed by the stack does the work; the test drives it the way an operator does (``orcastra gc``
in a controller's container) and asserts on what the node's Engine holds afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

Docker = Callable[..., str]

# The stack test's config sets these (hygiene.gc): the scene is built around them.
GRACE_SECONDS = 20
KEEP_PER_REPOSITORY = 1


@dataclass
class GcScene:
    """What was made on the node, by role."""

    old_container: str = ""
    new_container: str = ""
    stopped_user: str = ""
    dangling_image: str = ""
    repo_ids: tuple[str, ...] = ()
    kept_images: tuple[str, ...] = ()
    anonymous_volume: str = ""
    named_volume: str = "gc-named"


def _commit(docker: Docker, base: str, ref: str, content: str) -> str:
    """A one-layer image ``ref`` on top of ``base`` whose file /f holds ``content``; its image ID."""
    cid = docker("create", base, "sh", "-c", f"echo {content} > /f").strip()
    docker("start", "-a", cid)
    image = docker("commit", cid, ref).strip()
    docker("rm", cid)
    return image


def image_ids(docker: Docker) -> set[str]:
    return set(docker("images", "-aq", "--no-trunc").split())


def container_ids(docker: Docker) -> set[str]:
    return set(docker("ps", "-aq", "--no-trunc").split())


def volume_names(docker: Docker) -> set[str]:
    return set(docker("volume", "ls", "-q").split())


def build_gc_scene(docker: Docker, manager: Docker, base: str) -> GcScene:
    """On the node ``docker`` reaches (``manager`` reaches a manager, for the service): see the module doc."""
    scene = GcScene()
    docker("pull", base)
    # An exited plain container older than the grace (made first; the rest is built while it ages).
    scene.old_container = docker("run", "-d", "--name", "gc-old-exited", base, "true").strip()
    # Three images of one repository (the newest is kept), an old image left dangling by a newer one of its
    # tag, an image only a service scaled to 0 names, and one a stopped container uses.
    scene.repo_ids = tuple(_commit(docker, base, f"gc/repo:{n}", f"r{n}") for n in (1, 2, 3))
    scene.dangling_image = _commit(docker, base, "gc/old:1", "old")
    newer_old = _commit(docker, base, "gc/old:1", "newer")
    only_service = _commit(docker, base, "gc/svc0:1", "svc0")
    used = _commit(docker, base, "gc/used:1", "used")
    manager("service", "create", "--detach", "--name", "gc-svc0", "--replicas", "0", "--no-resolve-image", "gc/svc0:1")
    # Volumes: a named one nothing mounts (kept), an anonymous one orphaned by its container's removal.
    docker("volume", "create", scene.named_volume)
    holder = docker("create", "-v", "/data", base, "true").strip()
    mounts = json.loads(docker("inspect", holder, "--format", "{{json .Mounts}}"))
    scene.anonymous_volume = mounts[0]["Name"]
    docker("rm", holder)
    scene.kept_images = (scene.repo_ids[2], newer_old, only_service, used)
    time.sleep(GRACE_SECONDS + 2)
    # Newer than the grace: an exited container, and a created one whose image is therefore in use.
    scene.new_container = docker("run", "-d", "--name", "gc-new-exited", base, "true").strip()
    scene.stopped_user = docker("create", "--name", "gc-stopped-user", used, "true").strip()
    return scene


def unhealthy_container(docker: Docker, base: str, name: str, labels: dict[str, str]) -> str:
    """A plain container whose health check fails from its first probe (1 s interval, 1 retry)."""
    argv = ["run", "-d", "--name", name, "--health-cmd", "test -f /nonexistent", "--health-interval", "1s"]
    argv += ["--health-retries", "1"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return docker(*argv, base, "sleep", "3600").strip()


def started_at(docker: Docker, container: str) -> str:
    return docker("inspect", container, "--format", "{{.State.StartedAt}}").strip()
