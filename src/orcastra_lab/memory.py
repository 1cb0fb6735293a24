"""Real, per-node memory pressure in the lab: a memory limit per node, and a node_exporter that sees it.

Every node's containers live under its cgroup parent (``/orcastra-lab-<name>/<node>``, see daemons.py).
Setting that cgroup's ``memory.limit_in_bytes`` (cgroup v1) makes the node a machine with that much
memory: what its containers hold (anonymous memory, tmpfs pages, page cache) is charged there, and the
kernel reclaims or OOM-kills inside it.

For a monitoring tool to see such a node, the lab keeps a per-node procfs view ``<labdir>/<node>/proc/
meminfo`` derived from the cgroup, as LXCFS does for containers: MemTotal is the limit (the host's MemTotal
when unlimited), MemAvailable = MemFree = MemTotal - (usage - inactive_file), i.e. what ``docker stats``
counts as used. A small process (``main`` below, started detached by ``up``) rewrites every node's file
once a second, and one real ``prometheus-node-exporter`` per node, inside the node's network namespace,
serves it on ``<node address>:9100`` with ``--path.procfs`` pointing at the view.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import sys
import time
from pathlib import Path

from orcastra_lab.errors import LabError
from orcastra_lab.host import CGROUP_FS, cmdline, is_alive, spawn_detached
from orcastra_lab.layout import NODE_EXPORTER_PORT, LabLayout, NodeLayout
from orcastra_lab.state import LabState, ProcessRecord, load_state

NODE_EXPORTER = "prometheus-node-exporter"
MEMINFO_REFRESH_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 2.0
# The memory controller caps the limit at PAGE_COUNTER_MAX pages; anything at or above the host's memory
# means "unlimited" for our purpose (the node can use the whole machine).
CGROUP_UNLIMITED = "-1"
# Programs the lab starts for memory, for the ``down`` safety net (only together with the lab's own paths).
MEMORY_PROGRAMS = (NODE_EXPORTER, Path(sys.executable).name)
WRITER_MODULE = "orcastra_lab.memory"

_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
NO_LIMIT_WORDS = ("none", "unlimited", "max", "-1")


def parse_size(text: str) -> int | None:
    """``512m``, ``2g``, ``1048576`` (binary units, as ``docker run --memory``); none/unlimited -> None."""
    if text.strip().lower() in NO_LIMIT_WORDS:
        return None
    match = _SIZE_RE.match(text)
    if match is None:
        raise LabError(f"invalid memory size {text!r}: use e.g. 512m, 2g, 1073741824, or none")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size < 4 << 20:
        # dockerd itself refuses container limits under 6 MiB; a node under a few MiB cannot start anything.
        raise LabError(f"memory size {text!r} is too small for a node (at least 4m)")
    return size


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, factor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --- the node's cgroup -----------------------------------------------------------------------------------


def cgroup_dir(node: NodeLayout) -> Path:
    """The node's cgroup parent in the (cgroup v1) memory hierarchy."""
    return CGROUP_FS / "memory" / node.cgroup_parent.lstrip("/")


def ensure_cgroup(node: NodeLayout) -> Path:
    """Create the node's memory cgroup now (dockerd/runc create it only with the first container), so a
    limit can be set and usage read on a node that runs nothing yet. The lab's cgroup root is already
    recorded in the state, so ``down`` removes it."""
    path = cgroup_dir(node)
    if not (CGROUP_FS / "memory").is_dir():
        raise LabError(f"no cgroup v1 memory hierarchy at {CGROUP_FS / 'memory'}: node memory limits need it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_limit(node: NodeLayout, limit_bytes: int | None) -> None:
    """Write memory.limit_in_bytes of the node's cgroup parent (None: unlimited)."""
    path = ensure_cgroup(node) / "memory.limit_in_bytes"
    value = CGROUP_UNLIMITED if limit_bytes is None else str(limit_bytes)
    try:
        path.write_text(value)
    except OSError as e:
        # EBUSY: the kernel could not reclaim enough to get under the new limit (tmpfs without swap).
        raise LabError(
            f"{node.name}: cannot set its memory limit to {format_size(limit_bytes)} ({e.strerror}); "
            f"it uses {format_size(read_int(cgroup_dir(node) / 'memory.usage_in_bytes'))} now"
        ) from e


def read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def read_stat(path: Path) -> dict[str, int]:
    stats: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return stats
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def host_mem_total() -> int:
    """The host's MemTotal in bytes (/proc/meminfo is in kB)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise LabError("no MemTotal in /proc/meminfo")


def node_memory(node: NodeLayout, host_total: int) -> tuple[int, int]:
    """(total, used) bytes of the node as its cgroup says: used = usage - inactive_file, like ``docker stats``."""
    path = cgroup_dir(node)
    limit = read_int(path / "memory.limit_in_bytes")
    total = host_total if limit <= 0 or limit >= host_total else limit
    usage = read_int(path / "memory.usage_in_bytes")
    # total_inactive_file is hierarchical (the node's containers included); the plain one is this cgroup only.
    inactive_file = read_stat(path / "memory.stat").get("total_inactive_file", 0)
    used = max(0, usage - inactive_file)
    return total, min(used, total)


def render_meminfo(total: int, used: int) -> str:
    """A /proc/meminfo in the kernel's format (kB), enough for node_exporter's meminfo collector."""
    total_kb = total // 1024
    available_kb = max(0, total - used) // 1024
    lines = [
        ("MemTotal", total_kb),
        ("MemFree", available_kb),
        ("MemAvailable", available_kb),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
    ]
    return "".join(f"{key + ':':<16}{value:>8} kB\n" for key, value in lines)


def write_meminfo(node: NodeLayout, host_total: int) -> None:
    """Write the node's meminfo atomically (temp + rename) so node_exporter never reads half a file."""
    node.proc_dir.mkdir(parents=True, exist_ok=True)
    total, used = node_memory(node, host_total)
    target = node.proc_dir / "meminfo"
    tmp = target.with_name("meminfo.tmp")
    tmp.write_text(render_meminfo(total, used))
    tmp.replace(target)


def refresh_all(layout: LabLayout, state: LabState) -> None:
    host_total = host_mem_total()
    for record in state.nodes.values():
        node = layout.node(record.index)
        if node.dir.is_dir():
            write_meminfo(node, host_total)


# --- the meminfo writer process --------------------------------------------------------------------------


def writer_argv(layout: LabLayout) -> list[str]:
    # ``-c`` rather than ``-m``: orcastra_lab imports this module already, and runpy warns when the
    # module it runs as __main__ was imported by its own package first.
    code = f"import sys; from {WRITER_MODULE} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, str(layout.state_dir)]


def is_writer_of(layout: LabLayout, record: ProcessRecord | None) -> bool:
    if record is None or not is_alive(record):
        return False
    args = cmdline(record.pid)
    return any(WRITER_MODULE in arg for arg in args) and str(layout.state_dir) in args


def start_writer(layout: LabLayout) -> ProcessRecord:
    return spawn_detached(writer_argv(layout), layout.memory_log)


# --- one node_exporter per node ----------------------------------------------------------------------------


def exporter_argv(node: NodeLayout) -> list[str]:
    """node_exporter in the node's network namespace, on the node's address, reading the node's procfs view.

    Only the meminfo collector: the others would read the host's /proc and /sys and mislead. nsenter execs
    the exporter, so the recorded pid is the exporter's own.
    """
    return [
        "nsenter",
        f"--net={node.netns_path}",
        NODE_EXPORTER,
        f"--web.listen-address={node.address}:{NODE_EXPORTER_PORT}",
        f"--path.procfs={node.proc_dir}",
        "--collector.disable-defaults",
        "--collector.meminfo",
    ]


def is_exporter_of(node: NodeLayout, record: ProcessRecord | None) -> bool:
    return record is not None and is_alive(record) and f"--path.procfs={node.proc_dir}" in cmdline(record.pid)


def start_exporter(node: NodeLayout) -> ProcessRecord:
    with node.exporter_log.open("a") as log:
        log.write(f"--- orcastra lab: starting {NODE_EXPORTER} for {node.name} at {time.strftime('%F %T')}\n")
    return spawn_detached(exporter_argv(node), node.exporter_log)


def exporter_answers(node: NodeLayout) -> bool:
    """GET /metrics answers 200 with a MemTotal line (the view was readable)."""
    conn = http.client.HTTPConnection(node.address, NODE_EXPORTER_PORT, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        return response.status == 200 and b"node_memory_MemTotal_bytes" in body
    except OSError:
        return False
    finally:
        conn.close()


# --- the writer's loop ------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Rewrite every node's meminfo each second until the lab's state file is gone (``down``)."""
    if len(argv) != 1:
        print(f"usage: python -c 'from {WRITER_MODULE} import main; main(...)' STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(argv[0])
    while True:
        try:
            state = load_state(state_dir / "state.json")
        except LabError as e:
            print(f"{WRITER_MODULE}: {e}", file=sys.stderr)
            state = None
        if state is None:
            # No state file: the lab is being torn down (or never was); nothing to keep current.
            return 0
        layout = LabLayout.for_name(state.name, state_dir)
        # A node dir vanishing mid-write (down) must not end the loop before the state file is gone.
        with contextlib.suppress(OSError):
            refresh_all(layout, state)
        time.sleep(MEMINFO_REFRESH_SECONDS)
