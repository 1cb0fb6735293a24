"""The results file: JSON lines next to the command file, appended and fsynced, never edited in place; it is
also the journal from which ``CommandRunner`` recovers after a crash (``runner``).

The results files hold what operators asked for and what happened (node names, messages): they are created
with mode 0600 and tightened to it when found looser (the rotated ones too).

The results file is rotated (``.1``, ``.2``...) once it outgrows ``max_bytes``. It is also the journal that
recovery reads, so the new file starts with every ``started`` record that has no result yet, and the current
name always holds them: the new file is written aside and swapped in with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orcastra.config.model import DEFAULT_RESULTS_KEEP, DEFAULT_RESULTS_MAX_BYTES

log = logging.getLogger(__name__)

RESULTS_SUFFIX = ".results.jsonl"
RESULTS_MODE = 0o600


def results_path(command_file: Path) -> Path:
    """``/etc/orcastra/commands.yml`` -> ``/etc/orcastra/commands.yml.results.jsonl``."""
    return command_file.with_name(command_file.name + RESULTS_SUFFIX)


def utc_timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _fsync_dir(path: Path) -> None:
    # A new or replaced directory entry is durable only once the directory itself is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text`` so a reader (or a crash) sees the old or the new file, never
    half of one. Keeps the file's mode, and its owner when we may (running as root)."""
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class Journal:
    """The results file: one JSON object per line, appended and fsynced, never edited in place.

    Records: ``{"type": "started", ...}`` when a command is taken, ``{"type": "result", ...}`` when it is
    done (or reported malformed, or the file reported invalid). Once the file is larger than ``max_bytes``
    it is rotated: ``.1`` becomes ``.2`` (up to ``keep`` old files; the oldest is dropped), the file becomes
    ``.1``, and a new file takes its name holding the ``started`` records still without a result, so
    recovery after a crash finds them where it looks.
    """

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_RESULTS_MAX_BYTES, keep: int = DEFAULT_RESULTS_KEEP
    ) -> None:
        if max_bytes <= 0 or keep < 1:
            raise ValueError(f"max_bytes must be > 0 and keep >= 1, got {max_bytes} and {keep}")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._tightened = False  # the existing files' modes were checked

    def rotated(self, n: int) -> Path:
        """The ``n``-th old file: ``commands.yml.results.jsonl.1`` is the most recent."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def append(self, record: dict[str, Any]) -> None:
        self.append_all([record])

    def append_all(self, records: Sequence[dict[str, Any]]) -> None:
        """Append the records, in order, with one write and one fsync (a batch's ``started`` records)."""
        data = b"".join(json.dumps(r, sort_keys=False).encode() + b"\n" for r in records)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._tightened:
                self._tighten()
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, RESULTS_MODE)
            with os.fdopen(fd, "a+b") as f:
                # A crash mid-append leaves a line without its newline; start ours on a fresh line so the
                # torn one stays a single unreadable line instead of swallowing this record.
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            if created:
                _fsync_dir(self.path.parent)
            if size > self.max_bytes:
                try:
                    self._rotate()
                except OSError as e:
                    # The record is written; rotation is housekeeping and must never stop a command.
                    log.warning("commands: cannot rotate %s (%s); it keeps growing", self.path, e.strerror or e)

    def _tighten(self) -> None:
        """Mode 0600 for the results file and its rotations, where they are looser (left by an older version,
        or created by hand). A file that cannot be changed is logged and left: the records matter more."""
        for path in [self.path, *(self.rotated(n) for n in range(1, self.keep + 1))]:
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
                if mode & ~RESULTS_MODE:
                    path.chmod(RESULTS_MODE)
                    log.info("commands: %s was mode %04o; now %04o", path, mode, RESULTS_MODE)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.warning("commands: cannot make %s readable by its owner only: %s", path, e.strerror or e)
        self._tightened = True

    def _rotate(self) -> None:
        """Move the current file to ``.1`` (shifting the older ones) and start a new one that holds the
        unfinished ``started`` records. Whatever the crash point, the current name holds every unfinished
        record: the new file is complete (fsynced) before ``os.replace`` puts it under that name, and until
        then the name still holds the old file."""
        carried = _unfinished(_read_records(self.path))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(json.dumps(r, sort_keys=False).encode() + b"\n" for r in carried))
                f.flush()
                os.fsync(f.fileno())
            first = self.rotated(1)
            # A crash after the link below and before the replace leaves the file also named ``.1``: it is
            # already rotated then, and shifting again would keep the same records twice.
            if not (first.exists() and os.path.samefile(self.path, first)):
                for n in range(self.keep, 1, -1):
                    if self.rotated(n - 1).exists():
                        os.replace(self.rotated(n - 1), self.rotated(n))
                first.unlink(missing_ok=True)  # only left when keep == 1: the oldest goes
                _link_or_copy(self.path, first)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)
        log.info(
            "commands: rotated %s (over %d bytes) to %s; %d unfinished record(s) kept",
            self.path,
            self.max_bytes,
            self.rotated(1).name,
            len(carried),
        )

    def records(self, *, rotated: bool = False) -> Iterator[dict[str, Any]]:
        """Every readable record, oldest first; torn or foreign lines are skipped (and logged). With
        ``rotated``, the old files' records come first (oldest file first)."""
        if rotated:
            for n in range(self.keep, 0, -1):
                yield from _read_records(self.rotated(n))
        yield from _read_records(self.path)

    def results(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent result records, newest first (the old files included, when needed)."""
        found = [r for r in _read_records(self.path) if r.get("type") == "result"]
        if len(found) < limit:
            found = [r for r in self.records(rotated=True) if r.get("type") == "result"]
        seen: set[str] = set()
        newest_first: list[dict[str, Any]] = []
        for r in reversed(found):
            # The same record can be in two files only after a crash in the middle of a rotation.
            key = json.dumps(r, sort_keys=True)
            if key not in seen:
                seen.add(key)
                newest_first.append(r)
        return newest_first[:limit]

    def unfinished(self) -> list[dict[str, Any]]:
        """``started`` records that have no result: the commands a crash interrupted. Only the current file
        is read: rotation carries the unfinished records into it."""
        return _unfinished(_read_records(self.path))


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("commands: %s line %d is not JSON (torn write?); skipped", path, n)
            continue
        if isinstance(record, dict):
            yield record


def _unfinished(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    started: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "started":
            started[str(r.get("id"))] = r
        elif r.get("type") == "result":
            started.pop(str(r.get("id")), None)
    return list(started.values())


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes a second name of ``source`` (a hard link: no copy, and atomic); on a filesystem
    without hard links, a copy written aside and renamed into place."""
    try:
        os.link(source, target)
        return
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
