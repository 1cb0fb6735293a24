"""Host plumbing for the lab: running programs, tracking processes by pid, mounts and cgroups.

Processes are always identified by pid plus start time (field 22 of /proc/PID/stat), never by name:
other dockerd or containerd processes on the box are none of the lab's business, and a pid the kernel
reused for something else must never be signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from orcastra_lab.errors import LabError
from orcastra_lab.state import ProcessRecord

T = TypeVar("T")

INSTALL_HINT = "apt-get install docker.io docker-registry busybox-static iptables iproute2"
REQUIRED_PROGRAMS = (
    "dockerd",
    "containerd",
    "docker",
    "docker-registry",
    "busybox",
    "ip",
    "iptables",
    "nsenter",
    "unshare",
    "tar",
)
LOG_TAIL_LINES = 25
COMMAND_TIMEOUT_SECONDS = 120.0
CGROUP_FS = Path("/sys/fs/cgroup")


# --- checks ------------------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, a bridge, iptables, dockerd): run it as root")


def require_programs(programs: Iterable[str] = REQUIRED_PROGRAMS) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise LabError(f"missing program(s): {', '.join(missing)}; install them with: {INSTALL_HINT}")


# --- running programs --------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_SECONDS,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program to completion; with ``check``, a non-zero exit is a LabError carrying its stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input_bytes.decode() if input_bytes is not None else None,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: not found; install it with: {INSTALL_HINT}") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from e
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def spawn_detached(argv: Sequence[str], log_path: Path) -> ProcessRecord:
    """Start a long-running daemon in its own session, detached from us, output appended to ``log_path``.

    A small ``sh`` starts the program in the background and exits at once, so the daemon is re-parented
    to init: it outlives the CLI, and a long-lived caller (pytest) never holds a Popen object for it
    (which would warn when collected) nor gets a zombie when it dies. ``$!`` is the daemon's own pid
    because every wrapper in ``argv`` (nsenter, unshare, sh -c 'exec ...') execs rather than forks.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    script = 'log="$1"; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    proc = subprocess.run(
        ["sh", "-c", script, "sh", str(log_path), *argv],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise LabError(f"could not start {argv[0]}: {proc.stderr.strip() or proc.stdout.strip()}")
    pid = int(proc.stdout.strip())
    ticks = start_ticks(pid)
    if ticks is None:
        raise LabError(f"{argv[0]} exited at once; log {log_path}:\n{log_tail(log_path)}")
    return ProcessRecord(pid=pid, start_ticks=ticks)


# --- processes -------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot, or None when the pid is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(record: ProcessRecord | None) -> bool:
    """True when that very process (same pid AND same start time) still runs; a zombie counts as dead."""
    return record is not None and start_ticks(record.pid) == record.start_ticks


def record_of(pid: int) -> ProcessRecord | None:
    ticks = start_ticks(pid)
    return None if ticks is None else ProcessRecord(pid=pid, start_ticks=ticks)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def send_signal(record: ProcessRecord, sig: signal.Signals) -> bool:
    """Signal that very process; False when it was already gone."""
    if not is_alive(record):
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_and_wait(records: Iterable[ProcessRecord], timeout: float = 15.0) -> list[ProcessRecord]:
    """SIGKILL each process and wait until all are gone; returns those that survived ``timeout``."""
    targets = [r for r in records if is_alive(r)]
    for r in targets:
        send_signal(r, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = [r for r in targets if is_alive(r)]
        if not targets:
            return []
        time.sleep(0.05)
    return [r for r in targets if is_alive(r)]


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def pids_with_path_in_cmdline(root: Path, programs: Iterable[str]) -> list[ProcessRecord]:
    """Processes of the given programs whose command line mentions a path under ``root``.

    A safety net for ``down``: the lab's dir is unique to the lab, so a dockerd, containerd, shim or
    registry whose arguments point into it is the lab's own, even if its pid never reached the state file.
    """
    prefix = str(root).rstrip("/") + "/"
    wanted = set(programs)
    found: list[ProcessRecord] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        args = cmdline(pid)
        if not args or Path(args[0]).name not in wanted:
            continue
        if any(prefix in arg or arg == str(root) for arg in args[1:]):
            record = record_of(pid)
            if record is not None:
                found.append(record)
    return found


# --- waiting -----------------------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something other than None/False, or raise LabError."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout is not None else ""
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{detail}" if detail else ""))
        time.sleep(interval)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a daemon log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in tail) if tail else f"(log {path} is empty)"


# --- mounts ------------------------------------------------------------------------------------------------


def _unescape_mount_path(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[Path]:
    """Mount points strictly under ``root`` (dockerd's data-root bind mount, overlays, netns files...)."""
    prefix = str(root).rstrip("/") + "/"
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape_mount_path(fields[4])
            if point.startswith(prefix):
                found.append(Path(point))
    return found


def unmount_all_under(root: Path, rounds: int = 5) -> list[Path]:
    """Lazily unmount everything under ``root``, deepest first; returns what is still mounted."""
    for _ in range(rounds):
        points = mounts_under(root)
        if not points:
            return []
        for point in sorted(set(points), key=lambda p: len(p.parts), reverse=True):
            run(["umount", "-l", str(point)], check=False)
    return mounts_under(root)


# --- cgroups -----------------------------------------------------------------------------------------------


def cgroup_dirs(relative: str) -> list[Path]:
    """``relative`` (e.g. ``orcastra-lab-x``) in every mounted hierarchy: cgroup v1 per controller, or v2."""
    candidates = [CGROUP_FS / relative]
    if CGROUP_FS.is_dir():
        candidates += [h / relative for h in CGROUP_FS.iterdir() if h.is_dir() and not h.is_symlink()]
    return [c for c in candidates if c.is_dir()]


def cgroup_pids(relative: str) -> list[ProcessRecord]:
    """Every process in ``relative`` or below, in any hierarchy (containers of a node, say)."""
    pids: set[int] = set()
    for top in cgroup_dirs(relative):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    records = [record_of(pid) for pid in sorted(pids)]
    return [r for r in records if r is not None]


def remove_cgroups(relative: str) -> list[Path]:
    """rmdir ``relative`` and its children in every hierarchy, deepest first; returns what remains."""
    for top in cgroup_dirs(relative):
        dirs = [p for p in top.rglob("*") if p.is_dir()] + [top]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                continue
    return cgroup_dirs(relative)
