"""Watching the command file: a ``stat()`` poll every half second of (mtime, size, inode).

Why a poll and not inotify: the standard library has no inotify binding, and a dependency (watchdog) for one
small file is not worth it. Polling also sees what inotify on the file misses: editors and ``mv`` replace
the file (a new inode), ConfigMaps and bind mounts swap it underneath, and a file created after start-up
needs no directory watch. Half a second of latency is nothing next to a human typing a command, and one
``stat()`` per half second costs nothing. A full look every ``resync_seconds`` catches the one change a
stamp cannot see (same size, same inode, same mtime tick), and the callback is level-based (it reads the
whole file), so an extra call is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.5
RESYNC_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class FileStamp:
    """What changes when a file is written or replaced."""

    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        """The file's stamp, or None when it does not exist (or cannot be stat'ed)."""
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


class CommandWatcher:
    """Calls ``callback`` at start, whenever the command file's stamp changes, and every ``resync_seconds``.

    ``run()`` blocks until ``stop()``; the daemon runs it in a thread. ``check()`` is one poll step, for tests.
    An exception from the callback is logged and the watch goes on: with its traceback the first time, then in
    one line while it is the same error (a resync every minute must not fill the log with the same traceback).
    """

    def __init__(
        self,
        path: Path,
        callback: Callable[[], object],
        *,
        interval_seconds: float = POLL_INTERVAL_SECONDS,
        resync_seconds: float = RESYNC_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        self.path = path
        self._callback = callback
        self._interval = interval_seconds
        self._resync = resync_seconds
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._stamp: FileStamp | None = None
        self._last_call: float | None = None
        self._last_error: str | None = None

    def check(self) -> bool:
        """Look once; call the callback if the file changed (or on the first look, or when a resync is due).
        Returns whether it called."""
        stamp = FileStamp.of(self.path)
        now = self._monotonic()
        due = self._last_call is None or now - self._last_call >= self._resync
        if stamp == self._stamp and not due:
            return False
        self._stamp = stamp
        self._last_call = now
        try:
            self._callback()
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if error == self._last_error:
                log.error("commands: handling %s failed again: %s", self.path, error)
            else:
                log.exception("commands: handling %s failed", self.path)
            self._last_error = error
        else:
            self._last_error = None
        # The callback rewrites the file when it removes what it ran, so the next look sees a new stamp and
        # calls again, finding nothing to do. Taking the post-callback stamp as seen would save that look but
        # could swallow an operator's edit made in between; one spare read of a small file is cheaper.
        return True

    def run(self) -> None:
        log.info("commands: watching %s (every %.1f s)", self.path, self._interval)
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
