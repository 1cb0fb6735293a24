"""The agent's log rotation: Debian's ``logrotate`` over the operator's configuration directories and
Orcastra's own log and audit files, on a schedule, and the report of running containers whose json-file
logs have no ``max-size``.

- ``LogrotateRunner`` (a thread) runs once when the agent starts (``run_at_start``) and at each
  ``hygiene.logrotate.schedule`` time (cron, in its time zone); ``run_now`` serialises runs, never raises, and
  an unexpected error costs one run, never the thread. It owns the runs and ``last``.
- A run writes a main configuration into a private temporary directory
  (``orcastra.features.hygiene.logrotate.main_config``: an ``include`` per config dir that exists, the
  own-files stanza), runs ``logrotate --state STATE --verbose MAIN`` (a list argv, no shell, a timeout),
  reads its account (the logs rotated, the ``error:`` lines), and writes one audit line per rotated log. A
  broken operator file is logrotate's error in the result and a warning line; the next run tries again.
- The state file is logrotate's record of when each log was last rotated. On a volume (deploy/stack.yml), it
  makes a run idempotent within a period: an agent restarted right after a rotation rotates nothing again.
- ``UnboundedLogs`` lists the running containers, inspects each new one once (a container's log settings are
  fixed when it is created) and names those logging to json-file without ``max-size`` (by their service,
  for Swarm tasks).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from orcastra.adapters.node_engine import NodeEngine
from orcastra.errors import EngineNotFoundError, OrcastraError, cut
from orcastra.features.hygiene.autoheal import SWARM_SERVICE_NAME_LABEL
from orcastra.features.hygiene.logrotate import is_unbounded_json_log, main_config, parse_verbose, unsafe_path_reason
from orcastra.runtime.node_gc import next_scheduled

log = logging.getLogger("orcastra.agent.logrotate")
audit = logging.getLogger("orcastra.agent.audit")

MAX_RESULT_ITEMS = 50
MAX_REPORTED_NAMES = 10
MAX_LOGGED_NAMES = 20
ERROR_CHARS = 300
# Where Debian puts logrotate, for a PATH without the sbin directories (an image whose base sets no PATH).
FALLBACK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class LogrotateResult(msgspec.Struct, frozen=True, kw_only=True):
    """One run: the logs rotated, the config dirs included, logrotate's exit status (None: it did not run)
    and its errors, and the running containers whose json-file logs have no max-size."""

    trigger: str
    started_at: float
    finished_at: float
    rotated: tuple[str, ...] = ()
    rotated_count: int = 0
    included: tuple[str, ...] = ()
    exit_code: int | None = None
    error: str = ""
    unbounded_count: int = 0
    unbounded: tuple[str, ...] = ()
    unbounded_error: str = ""


def find_binary(name: str) -> str | None:
    """``name`` looked up in PATH, then in Debian's sbin directories; an absolute path as it is."""
    if name.startswith("/"):
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name) or shutil.which(name, path=FALLBACK_PATH)


def prepare_state_file(path: str) -> None:
    """Its directory made; its mode 0600 when others may read it (logrotate then skips its lock, with a
    warning)."""
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass  # missing (logrotate creates it) or not ours (logrotate says what it cannot do)


class UnboundedLogs:
    """The node's running containers whose json-file log has no ``max-size``. Each container is inspected once
    (its log settings cannot change after create) and forgotten when it no longer runs. A Swarm task's
    container is named by its service (the fix goes in the service's ``logging`` options, and a task's
    container name changes with every task)."""

    def __init__(self, node: NodeEngine) -> None:
        self.node = node
        self._known: dict[str, tuple[str, bool]] = {}  # container ID -> (name, unbounded)

    def check(self) -> tuple[int, list[str]]:
        """How many running containers log without a bound, and their names (services for tasks), sorted
        and each once. Raises ``OrcastraError`` when the Engine cannot list its containers."""
        known: dict[str, tuple[str, bool]] = {}
        for row in self.node.running_containers():
            seen = self._known.get(row.Id)
            if seen is None:
                try:
                    detail = self.node.inspect(row.Id)
                except EngineNotFoundError:
                    continue  # gone since the list
                name = (row.Labels or {}).get(SWARM_SERVICE_NAME_LABEL) or row.name
                seen = (name, is_unbounded_json_log(detail.log_driver, detail.log_options))
            known[row.Id] = seen
        self._known = known
        unbounded = [name for name, flagged in known.values() if flagged]
        return len(unbounded), sorted(set(unbounded))


class LogrotateRunner(threading.Thread):
    """Runs logrotate at start and on its schedule (module docstring)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        own_files: Sequence[str],
        stop: threading.Event,
        *,
        node: NodeEngine | None = None,
        on_result: Callable[[LogrotateResult], None] = lambda result: None,
    ) -> None:
        super().__init__(name="orcastra-agent-logrotate", daemon=True)
        self.settings, self.stop, self.on_result = settings, stop, on_result
        self.own_files = tuple(dict.fromkeys(own_files))  # the log and the audit file may be one file
        self.unbounded = UnboundedLogs(node) if node is not None else None
        self._run_lock = threading.Lock()
        self._said: set[str] = set()  # paths already reported missing or unusable (said once, not hourly)
        self._unbounded_said: tuple[str, ...] = ()
        self.last: LogrotateResult | None = None

    # --- one run ---

    def run_now(self, trigger: str) -> LogrotateResult:
        """One run, serialised with any other; never raises for what logrotate, the files or the Engine do."""
        with self._run_lock:
            result = self._check_unbounded(self._rotate(trigger, time.time()))
            self.last = result
        for path in result.rotated:
            audit.info("logrotate: rotated %s", path)
        hidden = result.rotated_count - len(result.rotated)
        more = f" (and {hidden} more)" if hidden else ""
        if result.error:
            log.warning("logrotate (%s): %d rotated%s; %s", trigger, result.rotated_count, more, result.error)
        else:
            log.info("logrotate (%s): %d rotated%s", trigger, result.rotated_count, more)
        self.on_result(result)
        return result

    def _includes(self) -> list[str]:
        found = []
        for path in self.settings["config_dirs"]:
            if os.path.exists(path):
                found.append(path)
                self._said.discard(path)
            elif path not in self._said:
                self._said.add(path)
                log.info("logrotate: %s does not exist: skipped until it does (mount it there to use it)", path)
        return found

    def _own(self) -> list[str]:
        if not self.settings["own_logs"]:
            return []
        usable = []
        for path in self.own_files:
            reason = unsafe_path_reason(path)
            if reason is None:
                usable.append(path)
            elif path not in self._said:
                self._said.add(path)
                log.warning("logrotate: Orcastra's own file is not rotated: %s", reason)
        return usable

    def _rotate(self, trigger: str, started: float) -> LogrotateResult:
        includes, own = self._includes(), self._own()
        done = LogrotateResult(trigger=trigger, started_at=started, finished_at=started, included=tuple(includes))
        if not includes and not own:
            return msgspec.structs.replace(done, finished_at=time.time())
        name = self.settings["logrotate_binary"]
        binary = find_binary(name)
        if binary is None:
            error = f"{name} not found (in PATH or {FALLBACK_PATH}): install Debian's logrotate"
            return msgspec.structs.replace(done, finished_at=time.time(), error=error)
        text = main_config(includes, own, self.settings["own_max_size"], self.settings["own_keep"])
        timeout = float(self.settings["timeout_seconds"])
        try:
            prepare_state_file(self.settings["state_file"])
            with tempfile.TemporaryDirectory(prefix="orcastra-logrotate-") as tmp:
                main = os.path.join(tmp, "logrotate.conf")
                with open(main, "x", encoding="utf-8") as f:
                    f.write(text)
                argv = [binary, "--state", self.settings["state_file"], "--verbose", main]
                proc = subprocess.run(  # a list argv from validated settings: no shell
                    argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                    timeout=timeout, check=False,
                )  # fmt: skip
        except subprocess.TimeoutExpired:
            error = f"logrotate did not finish within {timeout:.0f} s and was stopped; the next run goes on"
            return msgspec.structs.replace(done, finished_at=time.time(), error=error)
        except OSError as e:
            return msgspec.structs.replace(done, finished_at=time.time(), error=cut(f"logrotate: {e}", ERROR_CHARS))
        return self._read(done, proc)

    def _read(self, done: LogrotateResult, proc: subprocess.CompletedProcess[str]) -> LogrotateResult:
        output = parse_verbose(proc.stderr)
        if output.errors:
            error = cut(f"exit {proc.returncode}: " + "; ".join(output.errors), ERROR_CHARS)
        elif proc.returncode != 0:
            error = cut(f"exit {proc.returncode}: {proc.stderr[-ERROR_CHARS:]}", ERROR_CHARS)
        else:
            error = ""
        for warning in output.warnings:
            log.debug("logrotate: warning: %s", warning)
        if proc.stdout.strip():
            log.info("logrotate: its scripts said: %s", cut(proc.stdout, ERROR_CHARS))
        return msgspec.structs.replace(
            done,
            finished_at=time.time(),
            rotated=output.rotated[:MAX_RESULT_ITEMS],
            rotated_count=len(output.rotated),
            exit_code=proc.returncode,
            error=error,
        )

    def _check_unbounded(self, result: LogrotateResult) -> LogrotateResult:
        if self.unbounded is None:
            return result
        try:
            count, found = self.unbounded.check()
        except OrcastraError as e:
            return msgspec.structs.replace(result, unbounded_error=cut(str(e), ERROR_CHARS))
        names = tuple(found)
        if names != self._unbounded_said:
            if names:
                listed = ", ".join(names[:MAX_LOGGED_NAMES])
                more = f" and {len(names) - MAX_LOGGED_NAMES} more" if len(names) > MAX_LOGGED_NAMES else ""
                log.warning(
                    "%d running container(s) log to json-file without max-size, so their logs grow until the disk"
                    " is full (set log-opts max-size in daemon.json, or logging options in the stack): %s%s",
                    count,
                    listed,
                    more,
                )
            else:
                log.info("every running container's json-file log has a max-size now")
            self._unbounded_said = names
        shown = tuple(n[:128] for n in names[:MAX_REPORTED_NAMES])
        return msgspec.structs.replace(result, unbounded_count=count, unbounded=shown)

    # --- the thread ---

    def _guarded(self, trigger: str) -> None:
        try:
            self.run_now(trigger)
        except Exception:  # a bug must not kill the thread: logged, and the next run comes
            log.exception("logrotate: unexpected error")

    def run(self) -> None:
        schedule, zone = self.settings["schedule"], self.settings.get("timezone")
        if self.settings["run_at_start"]:
            self._guarded("start")
        next_run = next_scheduled(schedule, zone, time.time())
        while not self.stop.is_set():
            now = time.time()
            if next_run is not None and now >= next_run:
                next_run = next_scheduled(schedule, zone, now)
                self._guarded("schedule")
                continue
            wake = min(next_run if next_run is not None else now + 3600, now + 3600)
            self.stop.wait(max(0.5, wake - now))
