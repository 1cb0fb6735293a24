"""Node hygiene on the stack lab's worker (issue 14), as test steps the stack test calls in order: the GC
scene (every kind of object the rules name, on one node), the unhealthy containers for autoheal, and the
host log directories and logrotate config for log rotation.

The agent deployed by the stack does the work; the test drives it the way an operator does (``orcastra gc``
in a controller's container) and asserts on what the node's Engine holds afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    # An image's Created is in whole seconds in the image list: one second apart, "newest" is unambiguous.
    repo_ids = []
    for n in (1, 2, 3):
        repo_ids.append(_commit(docker, base, f"gc/repo:{n}", f"r{n}"))
        time.sleep(1.1)
    scene.repo_ids = tuple(repo_ids)
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


# --- log rotation ----------------------------------------------------------------------------------------

# Where the agent sees the node's log directory and the logrotate configs (the stack test's config lists the
# latter in hygiene.logrotate.config_dirs); the agent's state volume (deploy/stack.yml) and file in it.
LOG_DIR_IN_AGENT = "/var/log/lr-test"
LOGROTATE_CONF_IN_AGENT = "/etc/orcastra/logrotate.d"
AGENT_STATE_VOLUME = "orcastra_agent-state"
STATE_FILE_NAME = "logrotate.status"
LOG_NAME = "app.log"
# Monthly: the test is due once (its state is seeded 40 days back) and nothing else can become due while it
# runs, except across midnight of a month's last day.
LOGROTATE_CONFIG = f"""\
{LOG_DIR_IN_AGENT}/{LOG_NAME} {{
  monthly
  rotate 3
  missingok
  compress
}}
"""


@dataclass
class LogrotateScene:
    """On the host: one log directory per node (mounted by a template on the node's hostname), a log in the
    chosen node's, and the logrotate config directory."""

    root: Path
    node: str

    @property
    def log_dir(self) -> Path:
        return self.root / "logs" / self.node

    def rotated(self) -> list[str]:
        """The node's log directory but the live log: the rotated files."""
        return sorted(p.name for p in self.log_dir.iterdir() if p.name != LOG_NAME)

    def write_log(self, lines: int = 1000) -> None:
        """What the application does: (re)create its log and write to it."""
        (self.log_dir / LOG_NAME).write_text("a line of the application's log\n" * lines)

    def mount_args(self) -> list[str]:
        """``docker service update`` arguments mounting the scene into every agent."""
        logs = f"type=bind,src={self.root}/logs/{{{{.Node.Hostname}}}},dst={LOG_DIR_IN_AGENT}"
        conf = f"type=bind,src={self.root}/logrotate.d,dst={LOGROTATE_CONF_IN_AGENT},readonly"
        return ["--mount-add", logs, "--mount-add", conf]

    def unmount_args(self) -> list[str]:
        return ["--mount-rm", LOG_DIR_IN_AGENT, "--mount-rm", LOGROTATE_CONF_IN_AGENT]


def build_logrotate_scene(root: Path, nodes: Sequence[str], node: str) -> LogrotateScene:
    """The scene on the host (root-owned, mode 0644: logrotate skips a config others may write)."""
    scene = LogrotateScene(root=root, node=node)
    for name in nodes:
        (root / "logs" / name).mkdir(parents=True)
    (root / "logrotate.d").mkdir()
    conf = root / "logrotate.d" / "app"
    conf.write_text(LOGROTATE_CONFIG)
    conf.chmod(0o644)
    scene.write_log()
    return scene


def seed_logrotate_state(docker: Docker, days_ago: float) -> Path:
    """Write into the node's agent state volume (``docker`` reaches the node) that the log was last rotated
    ``days_ago``, in logrotate's state format (the agent's clock is UTC), keeping any other entry."""
    mountpoint = Path(docker("volume", "inspect", AGENT_STATE_VOLUME, "--format", "{{.Mountpoint}}").strip())
    state = mountpoint / STATE_FILE_NAME
    log_path = f"{LOG_DIR_IN_AGENT}/{LOG_NAME}"
    kept = [
        line
        for line in (state.read_text().splitlines() if state.exists() else [])
        if line.strip() and not line.startswith(("logrotate state", f'"{log_path}"'))
    ]
    t = time.gmtime(time.time() - days_ago * 86400)
    seeded = f'"{log_path}" {t.tm_year}-{t.tm_mon}-{t.tm_mday}-{t.tm_hour}:{t.tm_min}:{t.tm_sec}'
    state.write_text("\n".join(["logrotate state -- version 2", *kept, seeded]) + "\n")
    state.chmod(0o600)
    return state
