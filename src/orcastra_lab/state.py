"""The lab's state file: a JSON record of everything one lab created, so ``down`` removes exactly that.

Each resource is recorded BEFORE (or, for a pid, right as) it is created: a crash between the two then
leaves a record of something that may not exist, which ``down`` tolerates, rather than something that
exists with no record, which ``down`` would leak.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from orcastra_lab.errors import LabError

STATE_VERSION = 1
LOCK_TIMEOUT_SECONDS = 600.0
LOCK_POLL_SECONDS = 0.2


class ProcessRecord(BaseModel):
    """A process the lab started: its pid plus its start time, so a reused pid is never signalled."""

    pid: int
    start_ticks: int


class NodeRecord(BaseModel):
    """One node as created: its network plumbing, its daemon process, its Swarm identity once joined."""

    name: str
    index: int
    address: str
    netns: str | None = None
    veth_host: str | None = None
    dockerd: ProcessRecord | None = None
    role: str = "worker"
    swarm_node_id: str | None = None
    # memory.limit_in_bytes of the node's cgroup parent; None = unlimited (the node has the host's memory).
    memory_limit_bytes: int | None = None
    node_exporter: ProcessRecord | None = None


class LabState(BaseModel):
    """Everything one lab created; ``down`` walks this and removes each thing that still exists."""

    version: int = STATE_VERSION
    name: str
    state_dir: str
    bridge: str | None = None
    bridge_address: str | None = None
    iptables_rule: list[str] | None = None
    registry: ProcessRecord | None = None
    # The process that rewrites each node's proc/meminfo from its cgroup every second (lab/memory.py).
    meminfo_writer: ProcessRecord | None = None
    cgroup_root: str | None = None
    image: str | None = None
    # Orcastra's own image once ``orcastra lab image`` built and pushed it (lab/orcastra_image.py).
    orcastra_image: str | None = None
    # The node_exporter image of deploy/node-exporter.yml once built (lab/node_exporter_image.py).
    node_exporter_image: str | None = None
    swarm: bool = False
    nodes: dict[str, NodeRecord] = {}

    def node_names(self) -> list[str]:
        return [n.name for n in sorted(self.nodes.values(), key=lambda n: n.index)]


def load_state(path: Path) -> LabState | None:
    """The recorded state, or None when there is no state file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LabError(f"cannot read lab state {path}: {e}") from e
    try:
        return LabState.model_validate(json.loads(text))
    except (ValueError, ValidationError) as e:
        raise LabError(f"lab state {path} is unreadable ({e}); remove the lab's resources by hand") from e


def save_state(path: Path, state: LabState) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(state.model_dump_json(indent=2))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@contextlib.contextmanager
def locked(state_dir: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold an exclusive flock on the state dir so two ``orcastra lab`` commands never interleave.

    The lock is taken on the directory itself (not a file in it) so ``down`` can delete the whole
    directory while holding it; a waiter that then gets the lock on a deleted directory retries on the
    new one.
    """
    deadline = time.monotonic() + timeout
    while True:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(
                            f"another orcastra lab command holds the lock on {state_dir}; gave up after {timeout:.0f} s"
                        ) from None
                    time.sleep(LOCK_POLL_SECONDS)
            if _still_current(fd, state_dir):
                yield
                return
        finally:
            os.close(fd)


def _still_current(fd: int, state_dir: Path) -> bool:
    """False when the dir we locked was removed (by a ``down``) while we waited for the lock."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(state_dir)) and os.fstat(fd).st_nlink > 0
    except FileNotFoundError:
        return False
