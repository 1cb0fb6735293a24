"""Run-once bookkeeping: the results journal (JSON lines next to the command file) and the runner that takes
commands out of the file, runs them and records what happened.

Taking a command is three durable steps, in this order:
1. append a ``started`` record (id, entry, its position, and the file's SHA-256 before and after removal); fsync;
2. rewrite the command file without the entry (temp file + fsync + ``os.replace``);
3. run it, then append its ``result`` record; fsync.
A crash between 1 and 3 leaves a ``started`` record without a result. On start-up ``recover()`` finishes the
removal (step 2, if the file still has the entry) and records "interrupted: not run again": the command may
or may not have reached the Swarm, and running it twice (a second reboot, a second forced restart) is worse
than asking the operator to look and re-issue it. So a command is never run twice and never silently lost.

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
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from orcastra.commands.dispatch import CommandContext, CommandResult, run_command
from orcastra.commands.model import (
    Command,
    CommandFile,
    CommandFileError,
    Malformed,
    parse_command_file,
    parse_entry,
    remove_entries,
    text_sha256,
)
from orcastra.config.model import DEFAULT_RESULTS_KEEP, DEFAULT_RESULTS_MAX_BYTES, CommandSettings

log = logging.getLogger(__name__)

RESULTS_SUFFIX = ".results.jsonl"
INTERRUPTED_MESSAGE = "interrupted: not run again"


class EntryNotRemoved(Exception):
    """A taken entry could not be removed from the command file (unreadable, no longer valid YAML, read-only...).
    ``reason`` says why; ``file_sha256`` is the file's content as last read, when it could be read."""

    def __init__(self, reason: str, file_sha256: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file_sha256 = file_sha256


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

    def rotated(self, n: int) -> Path:
        """The ``n``-th old file: ``commands.yml.results.jsonl.1`` is the most recent."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            with self.path.open("a+b") as f:
                # A crash mid-append leaves a line without its newline; start ours on a fresh line so the
                # torn one stays a single unreadable line instead of swallowing this record.
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write(line.encode() + b"\n")
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


def _os_reason(e: OSError | UnicodeDecodeError) -> str:
    return (e.strerror or str(e)) if isinstance(e, OSError) else f"not UTF-8: {e}"


class CommandRunner:
    """Takes commands from the command file (``process_file``) or the API (``submit``), runs them through
    ``ctx`` one at a time, and journals each. Thread-safe: the watcher thread and API threads share it, and
    a lock makes commands run one after another (two commands racing on the Swarm help nobody)."""

    def __init__(
        self,
        command_file: Path,
        ctx: CommandContext,
        journal: Journal | None = None,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:16],
    ) -> None:
        self.command_file = command_file
        self.ctx = ctx
        self.journal = journal or Journal(results_path(command_file))
        self._clock = clock
        self._new_id = new_id
        self._lock = threading.RLock()
        self._recovered = False
        self._reported_invalid: str | None = None
        self._stuck: str | None = None  # the file's hash when its first entry could not be removed

    @classmethod
    def from_settings(cls, settings: CommandSettings, ctx: CommandContext) -> CommandRunner:
        """The runner for the config's ``commands`` section: its file, and its results file's rotation."""
        journal = Journal(results_path(settings.file), max_bytes=settings.results_max_bytes, keep=settings.results_keep)
        return cls(settings.file, ctx, journal)

    # --- start-up ---------------------------------------------------------------------------------------

    def recover(self) -> list[CommandResult]:
        """Close every ``started`` record left without a result by a crash: make sure its entry is out of the
        command file, then record it as interrupted (malformed entries get their real message). Idempotent."""
        with self._lock:
            out = []
            unfinished = self.journal.unfinished()
            for record in unfinished:
                problem = record.get("problem")
                message = f"malformed entry: {problem}" if problem else INTERRUPTED_MESSAGE
                if record.get("source") == "file":
                    try:
                        self._remove_taken_entry(record)
                    except EntryNotRemoved as e:
                        # Still in the file means taken but never removed, so never run: it runs once it is taken.
                        message = (
                            f"interrupted: {self.command_file} cannot be read now ({e.reason}); if the entry is"
                            " still in it, it had not run, and it runs once it is taken"
                        )
                result = CommandResult(str(record.get("command", "")), "error", message)
                out.append(self._finish(str(record.get("id")), result))
                log.warning("commands: %s (id %s) was interrupted by a restart: %s", result.command, result.id, message)
            if not self._recovered:
                # Do not report an invalid file again after a restart if it is still the one last reported.
                self._reported_invalid = self._last_invalid_report()
            self._recovered = True
            return out

    def _last_invalid_report(self) -> str | None:
        """The hash of the command file as last reported invalid, unless an entry was taken from the file since
        (then it was fixed, and the same broken content again is news). API results do not count."""
        last: str | None = None
        for r in self.journal.records(rotated=True):
            if r.get("type") == "started" and r.get("source") == "file":
                last = None
            elif r.get("type") == "result" and r.get("file_sha256"):
                last = str(r["file_sha256"])
        return last

    # --- the file ---------------------------------------------------------------------------------------

    def process_file(self) -> list[CommandResult]:
        """Take and run every entry in the command file, first to last, re-reading the file after each one
        (the operator may have edited it meanwhile). The watcher's callback."""
        with self._lock:
            if not self._recovered:
                self.recover()
            out: list[CommandResult] = []
            while True:
                parsed = self._read()
                if parsed is None or not parsed.entries or parsed.sha256 == self._stuck:
                    return out
                out.append(self.take(parsed, 0))

    def _read(self) -> CommandFile | None:
        try:
            text = self.command_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            log.warning("commands: cannot read %s: %s", self.command_file, e)
            return None
        try:
            parsed = parse_command_file(text, str(self.command_file))
        except CommandFileError as e:
            sha = text_sha256(text)
            if sha != self._reported_invalid:
                self._reported_invalid = sha
                log.warning("commands: %s; nothing was run", e)
                extra: dict[str, Any] = {"file": str(self.command_file), "file_sha256": sha}
                if e.line is not None:
                    extra["line"] = e.line
                result = CommandResult("", "error", f"{e}; nothing was run", extra=extra)
                self._finish(self._new_id(), result)
            return None
        self._reported_invalid = None
        return parsed

    def take(self, parsed: CommandFile, index: int) -> CommandResult:
        """The three steps for one entry: started record, removal from the file, run + result record."""
        record = self.start_entry(parsed, index)
        try:
            self._remove_taken_entry(record)
        except EntryNotRemoved as e:
            # Never run what was not removed: it would run again at the next look. Report, and do not take it
            # again until the file changes (a read-only file would otherwise add a record at every look).
            self._stuck = e.file_sha256 or parsed.sha256
            message = f"cannot remove it from {self.command_file} ({e.reason}); not run"
            log.error("commands: %s: %s", record["command"], message)
            return self._finish(str(record["id"]), CommandResult(str(record["command"]), "error", message))
        return self.run_started(record)

    def start_entry(self, parsed: CommandFile, index: int) -> dict[str, Any]:
        """Step 1: journal that entry ``index`` is taken. Returns the started record."""
        entry = parsed.entries[index]
        cmd = entry.parse()
        record: dict[str, Any] = {
            "type": "started",
            "id": self._new_id(),
            "time": utc_timestamp(self._clock()),
            "source": "file",
            "command": str(cmd) if isinstance(cmd, Command) else entry.text,
            "entry": entry.value if entry.problem is None else entry.text,
            "entry_text": entry.text,
            "index": index,
            "file_sha256": parsed.sha256,
            "file_sha256_after": remove_entries(parsed, [index]).sha256,
        }
        if isinstance(cmd, Malformed):
            record["problem"] = cmd.message
        self.journal.append(record)
        return record

    def _remove_taken_entry(self, record: dict[str, Any]) -> None:
        """Step 2 (also run by recovery): make sure the taken entry is no longer in the command file.

        The file's hash says where we are: unchanged since the started record -> remove the entry at its
        recorded position; equal to the expected result -> already removed. Otherwise the operator edited the
        file in between: remove the first entry with the same text, if any (never run twice wins). A missing file
        holds no entry. Raises ``EntryNotRemoved`` when the file cannot be read, parsed or rewritten: then the
        entry may still be there, and the caller must not run it."""
        text: str | None = None
        try:
            text = self.command_file.read_text(encoding="utf-8")
            parsed = parse_command_file(text, str(self.command_file))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, CommandFileError) as e:
            log.warning("commands: cannot remove entry %r from %s: %s", record.get("entry_text"), self.command_file, e)
            reason = str(e) if isinstance(e, CommandFileError) else _os_reason(e)
            raise EntryNotRemoved(reason, text_sha256(text) if text is not None else None) from e
        sha = parsed.sha256
        if sha == record.get("file_sha256_after"):
            return
        index: int | None = None
        recorded = record.get("index")
        if sha == record.get("file_sha256") and isinstance(recorded, int) and recorded < len(parsed.entries):
            index = recorded
        else:
            index = next((e.index for e in parsed.entries if e.text == record.get("entry_text")), None)
        if index is not None:
            try:
                atomic_write(self.command_file, remove_entries(parsed, [index]).text)
            except CommandFileError as e:
                raise EntryNotRemoved(str(e), sha) from e
            except OSError as e:
                raise EntryNotRemoved(_os_reason(e), sha) from e

    def run_started(self, record: dict[str, Any]) -> CommandResult:
        """Step 3: run the taken entry (or report it malformed) and journal the result."""
        problem = record.get("problem")
        if problem:
            log.warning("commands: malformed entry %r: %s", record.get("entry_text"), problem)
            result = CommandResult(str(record["command"]), "error", f"malformed entry: {problem}")
        else:
            cmd = parse_entry(record.get("entry"))
            if isinstance(cmd, Malformed):  # written from a parsed command, so only a hand-edited journal
                result = CommandResult(str(record["command"]), "error", f"malformed entry: {cmd.message}")
            else:
                result = run_command(cmd, self.ctx)
        return self._finish(str(record["id"]), result)

    # --- the API ----------------------------------------------------------------------------------------

    def submit(self, cmd: Command) -> CommandResult:
        """Run a command given by the API or the CLI, journaled like the file's (started, then result)."""
        with self._lock:
            command_id = self._new_id()
            self.journal.append(
                {
                    "type": "started",
                    "id": command_id,
                    "time": utc_timestamp(self._clock()),
                    "source": "api",
                    "command": str(cmd),
                    "entry": cmd.to_entry(),
                }
            )
            return self._finish(command_id, run_command(cmd, self.ctx))

    def results(self, limit: int) -> list[dict[str, Any]]:
        return self.journal.results(limit)

    def _finish(self, command_id: str, result: CommandResult) -> CommandResult:
        done = replace(result, id=command_id, time=utc_timestamp(self._clock()))
        self.journal.append({"type": "result", **done.to_json()})
        return done
