"""One dockerd per lab node: how it is started, stopped, killed, and what it leaves behind.

Each dockerd runs in its node's network namespace and its own UTS namespace (for the hostname, which
becomes the Swarm node's hostname), entered with ``nsenter --net`` + ``unshare --uts``. Not with
``ip netns exec``: that remounts /sys, after which dockerd fails with "Devices cgroup isn't mounted".

dockerd starts its own containerd, which dies with it (dockerd sets a parent-death signal), but the
containerd shims and the containers survive a SIGKILL of dockerd. They are found by what belongs to the
node alone: its cgroup parent (the containers), its exec-root (the shims' ``-address`` argument and
containerd's pidfile), never by process name.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from orcastra_lab.errors import LabError
from orcastra_lab.host import (
    cgroup_pids,
    cmdline,
    is_alive,
    kill_and_wait,
    log_tail,
    pids_with_path_in_cmdline,
    read_pidfile,
    record_of,
    send_signal,
    spawn_detached,
    wait_for,
)
from orcastra_lab.layout import NodeLayout
from orcastra_lab.state import ProcessRecord

# Programs a node's dockerd may leave running; used only together with the node's own paths.
NODE_PROGRAMS = (
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "runc",
    "docker-proxy",
)
SHIM_SOCKET_DIR = Path("/run/containerd/s")


def dockerd_argv(node: NodeLayout, registry: str) -> list[str]:
    """The full command: namespaces, hostname, then dockerd with every path inside the node's dir."""
    dockerd = [
        "dockerd",
        "--data-root",
        str(node.data_root),
        "--exec-root",
        str(node.exec_root),
        "-H",
        node.docker_host,
        "--pidfile",
        str(node.pidfile),
        # The node's own (empty) config file, so a host /etc/docker/daemon.json never leaks into the lab.
        "--config-file",
        str(node.config_file),
        "--insecure-registry",
        registry,
        # Containers of this node live under this cgroup, so a node can be given a memory limit later.
        "--cgroup-parent",
        node.cgroup_parent,
        "--exec-opt",
        "native.cgroupdriver=cgroupfs",
        # docker-proxy processes would survive a SIGKILL of dockerd with nothing tying them to the node.
        "--userland-proxy=false",
    ]
    # A mount namespace of its own (slave: the host's mounts still reach it, its own never leak out), where
    # the lab-wide container socket directory is this node's socket directory: a service that mounts
    # that one path gets its own node's Engine, as /var/run/docker.sock does on a real Swarm. Its / is made
    # shared, as systemd makes a real host's (this namespace's copy only; the host's / is left as it is), so a
    # service may mount / with rslave propagation as node_exporter does (deploy/node-exporter.yml): Docker
    # refuses that on a private / ("path / is mounted on / but it is not a shared or slave mount").
    return [
        "nsenter",
        f"--net={node.netns_path}",
        "unshare",
        "--uts",
        "--mount",
        "--propagation",
        "slave",
        "sh",
        "-c",
        'hostname "$1" && mkdir -p "$2" && mount --bind "$3" "$2" && mount --make-shared / && shift 3 && exec "$@"',
        "sh",
        node.name,
        str(node.container_socket.parent),
        str(node.socket_dir),
        *dockerd,
    ]


def is_dockerd_of(node: NodeLayout, record: ProcessRecord | None) -> bool:
    """That process is alive AND is this node's dockerd (its arguments name the node's socket)."""
    return record is not None and is_alive(record) and node.docker_host in cmdline(record.pid)


def start_dockerd(node: NodeLayout, registry: str) -> ProcessRecord:
    """Start the node's dockerd detached; the caller records the pid and waits for /_ping."""
    for path in (node.data_root, node.exec_root, node.socket_dir, node.container_socket.parent):
        path.mkdir(parents=True, exist_ok=True)
    if not node.config_file.exists():
        node.config_file.write_text(json.dumps({}) + "\n")
    with node.log.open("a") as log:
        log.write(f"--- orcastra lab: starting dockerd for {node.name} at {time.strftime('%F %T')}\n")
    return spawn_detached(dockerd_argv(node, registry), node.log)


def clear_pidfile(node: NodeLayout, timeout: float) -> None:
    """Wait until no live dockerd owns the node's pidfile, then remove a stale one.

    A dockerd that finds a pidfile naming a live process refuses to start ("pid file found"); after a
    SIGKILL the file stays behind with a dead pid, which we remove ourselves.
    """

    def owner_gone() -> bool:
        pid = read_pidfile(node.pidfile)
        if pid is None:
            return True
        return not is_dockerd_of(node, record_of(pid))

    wait_for(
        owner_gone,
        timeout=timeout,
        what=f"{node.name}'s previous dockerd to exit ({node.pidfile})",
        on_timeout=lambda: log_tail(node.log),
    )
    node.pidfile.unlink(missing_ok=True)


def stop_dockerd(node: NodeLayout, record: ProcessRecord | None, timeout: float) -> bool:
    """SIGTERM and wait for a clean exit (dockerd removes its pidfile); True if it exited in time."""
    if not is_dockerd_of(node, record) or record is None:
        return True
    send_signal(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(record) and not node.pidfile.exists():
            return True
        if not is_alive(record):
            # Exited without removing the pidfile (crashed while stopping): nothing owns it any more.
            node.pidfile.unlink(missing_ok=True)
            return True
        time.sleep(0.1)
    return False


def leftover_processes(node: NodeLayout) -> list[ProcessRecord]:
    """Everything of this node still running besides what a live dockerd would manage itself.

    Containers (every process in the node's cgroup parent), containerd (its pidfile under the
    exec-root), and shims/containerd/dockerd whose arguments point into the node's dir.
    """
    found: dict[int, ProcessRecord] = {}
    for container in cgroup_pids(node.cgroup_parent.lstrip("/")):
        found[container.pid] = container
    containerd_pid = read_pidfile(node.exec_root / "containerd" / "containerd.pid")
    if containerd_pid is not None:
        containerd = record_of(containerd_pid)
        if containerd is not None and any(str(node.exec_root) in arg for arg in cmdline(containerd_pid)):
            found[containerd.pid] = containerd
    for process in pids_with_path_in_cmdline(node.dir, NODE_PROGRAMS):
        found[process.pid] = process
    return list(found.values())


def end_leftovers(node: NodeLayout, timeout: float = 15.0) -> int:
    """SIGKILL the node's leftover containers, shims and containerd; returns how many were ended.

    Repeated a few times: a shim may still be starting a container's process when the first round runs.
    """
    ended = 0
    # Read before the kill: the next dockerd deletes the task bundles that name the shims' sockets.
    sockets = shim_sockets(node)
    for _ in range(5):
        targets = leftover_processes(node)
        if not targets:
            break
        survivors = kill_and_wait(targets, timeout=timeout)
        if survivors:
            pids = ", ".join(str(r.pid) for r in survivors)
            raise LabError(f"{node.name}: leftover processes would not die after SIGKILL: {pids}")
        ended += len(targets)
    if ended:
        for sock in sockets:
            sock.unlink(missing_ok=True)
    # With every containerd of the node dead, its pidfile is stale. dockerd trusts it when kill(pid, 0)
    # succeeds, which it does for a zombie (init here does not always reap): it then waits for a
    # containerd that will never answer and fails with "timeout waiting for containerd to start".
    (node.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)
    return ended


def shim_sockets(node: NodeLayout) -> list[Path]:
    """The shims' socket files in /run/containerd/s that this node's containers created.

    Each task bundle records its shim's address (``unix:///run/containerd/s/<hash>``) in a file
    named ``address``; a SIGKILLed shim leaves that socket behind.
    """
    tasks = node.exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
    found: list[Path] = []
    for address_file in tasks.glob("*/*/address"):
        try:
            address = address_file.read_text().strip()
        except OSError:
            continue
        path = Path(address.removeprefix("unix://"))
        if path.parent == SHIM_SOCKET_DIR:
            found.append(path)
    return found
