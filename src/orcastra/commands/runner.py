"""``CommandRunner``: takes commands out of the command file (and from the API), runs them one at a time through
a ``CommandContext``, and journals each in the results file, so each runs exactly once.

Taking entries is three durable steps, in this order:
1. append their ``started`` records (id, entry, its position, the file's SHA-256 before and after the removal,
   and, for several taken together, their ``batch``) with one fsync;
2. rewrite the command file without them (temp file + fsync + ``os.replace``); only then
3. run each in turn, appending its ``result`` record (fsynced) before the next one starts.
Never run what was not removed: when step 2 fails (the file became unreadable or not valid YAML, or is
read-only) the entries get a "not run" result, and the file is not taken from again until it changes.

A crash between 1 and 3 leaves ``started`` records without a result. On start-up ``recover()`` finishes the
removal (step 2, if the file still has the entries) and records the first of them as "interrupted: not run
again" (it may have been running: a second reboot or forced restart is worse than asking the operator to look
and give it again) and the others of its batch as "not run" (their turn had not come: each result is durable
before the next command starts). So a command is never run twice and never silently lost.

Cost: while few entries are queued they are taken one at a time (an operator can still delete a later one
while an earlier one runs); with more than ``BATCH_DIVISOR`` queued, a ``BATCH_DIVISOR``-th of them at a time.
Each step parses and rewrites the remaining file once, and the file shrinks geometrically, so N entries cost
O(N) file work in all (one entry per step cost O(N^2): 800 entries took minutes).

Locks: one pass over the file at a time (``_file_lock``), and one command at a time, in arrival order
(``_turns``): an API command that arrives while the file's commands run waits for the one running, then
runs before the file's next.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orcastra.commands.dispatch import CommandContext, CommandResult, run_command
from orcastra.commands.journal import Journal, atomic_write, results_path, utc_timestamp
from orcastra.commands.model import (
    MAX_COMMAND_FILE_BYTES,
    Command,
    CommandFile,
    CommandFileError,
    Malformed,
    parse_command_file,
    parse_entry,
    remove_entries,
    text_sha256,
)
from orcastra.config.model import CommandSettings

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "interrupted: not run again"
NOT_STARTED_MESSAGE = "not run: Orcastra stopped before its turn came; give it again if it is still wanted"
BATCH_DIVISOR = 16


def batch_size(queued: int) -> int:
    """How many of ``queued`` entries to take in one step: 1 up to ``2 * BATCH_DIVISOR - 1``, then a
    ``BATCH_DIVISOR``-th of them."""
    return max(1, queued // BATCH_DIVISOR)


def unsafe(st: os.stat_result) -> str | None:
    """Why a command file with this ``stat`` must not be obeyed, or None. Whoever can write the file can make
    Orcastra reboot nodes: so only its owner may write it, and its owner must be root or the user Orcastra
    runs as (a file replaced by someone who may write the directory is theirs, and refused too)."""
    mode = stat.S_IMODE(st.st_mode)
    writers = [who for who, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]
    if writers:
        return (
            f"is writable by {' and '.join(writers)} (mode {mode:04o}): whoever can write it can run commands"
            " (reboot nodes); chmod go-w it"
        )
    us = os.geteuid()
    if st.st_uid not in (0, us):
        return (
            f"is owned by uid {st.st_uid}, neither root nor the user Orcastra runs as (uid {us}): that user can"
            f" run commands (reboot nodes); chown it to {'root' if us == 0 else f'root or uid {us}'}"
        )
    return None


class EntryNotRemoved(Exception):
    """Taken entries could not be removed from the command file (unreadable, no longer valid YAML,
    read-only...). ``reason`` says why; ``file_sha256`` is the file's content as last read, when known."""

    def __init__(self, reason: str, file_sha256: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file_sha256 = file_sha256


class Turns:
    """A lock handed out in arrival order. ``threading.Lock`` is not fair: a thread that releases it and asks
    again at once (the file's next command) usually gets it back, and an API command could wait for a whole
    file of commands."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._done: set[int] = set()  # tickets released or given up, not yet passed

    @property
    def waiting(self) -> int:
        """How many threads hold or wait for a turn."""
        with self._cond:
            return self._next_ticket - self._serving - len(self._done)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while ticket != self._serving:
                    self._cond.wait()
            except BaseException:
                self._pass(ticket)  # interrupted while waiting: give the turn up
                raise
        try:
            yield
        finally:
            with self._cond:
                self._pass(ticket)

    def _pass(self, ticket: int) -> None:
        self._done.add(ticket)
        while self._serving in self._done:
            self._done.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


class CommandRunner:
    """Takes commands from the command file (``process_file``) or the API (``submit``), runs them through
    ``ctx`` one at a time, and journals each. Thread-safe: the watcher thread and API threads share it."""

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
        self._file_lock = threading.Lock()
        self._turns = Turns()
        self._recovered = False
        self._reported: str | None = None  # what identifies the whole-file problem last reported
        self._stuck: str | None = None  # the file's hash when taken entries could not be removed from it

    @classmethod
    def from_settings(cls, settings: CommandSettings, ctx: CommandContext) -> CommandRunner:
        """The runner for the config's ``commands`` section: its file, and its results file's rotation."""
        journal = Journal(results_path(settings.file), max_bytes=settings.results_max_bytes, keep=settings.results_keep)
        return cls(settings.file, ctx, journal)

    # --- start-up ---------------------------------------------------------------------------------------

    def recover(self) -> list[CommandResult]:
        """Close every ``started`` record left without a result by a crash: make sure its entry is out of the
        command file, then record why it did not finish. Idempotent."""
        with self._file_lock:
            return self._recover()

    def _recover(self) -> list[CommandResult]:
        out: list[CommandResult] = []
        with self._turns.hold():  # no command is running: every record without a result is a crash's
            for batch in _batches(self.journal.unfinished()):
                out += self._close_interrupted(batch)
        if not self._recovered:
            # Do not report a broken file again after a restart if it is still the one last reported.
            self._reported = self._last_report()
        self._recovered = True
        return out

    def _close_interrupted(self, batch: list[dict[str, Any]]) -> list[CommandResult]:
        unreadable: str | None = None
        if batch[0].get("source") == "file":
            try:
                self.remove_taken(batch)
            except EntryNotRemoved as e:
                unreadable = e.reason
        out = []
        for n, record in enumerate(batch):
            problem = record.get("problem")
            if problem:
                message = f"malformed entry: {problem}"
            elif unreadable is not None:
                # Still in the file means taken but never removed, so never run: it runs once it is taken.
                message = (
                    f"interrupted: {self.command_file} cannot be read now ({unreadable}); if the entry is still"
                    " in it, it had not run, and it runs once it is taken"
                )
            else:
                message = INTERRUPTED_MESSAGE if n == 0 else NOT_STARTED_MESSAGE
            command = str(record.get("command", ""))
            result = self._finish(str(record.get("id")), CommandResult(command, "error", message))
            out.append(result)
            log.warning("commands: %s (id %s) was interrupted by a restart: %s", result.command, result.id, message)
        return out

    def _last_report(self) -> str | None:
        """What identified the whole-file problem last reported, unless an entry was taken from the file since
        (then it was fixed, and the same problem again is news). API results do not count."""
        last: str | None = None
        for r in self.journal.records(rotated=True):
            if r.get("type") == "started" and r.get("source") == "file":
                last = None
            elif r.get("type") == "result" and (r.get("file_sha256") or r.get("file_problem")):
                last = str(r.get("file_sha256") or r.get("file_problem"))
        return last

    # --- the file ---------------------------------------------------------------------------------------

    def process_file(self) -> list[CommandResult]:
        """Take and run every entry in the command file, first to last, reading the file again after each
        step (the operator may have added entries meanwhile). The watcher's callback."""
        with self._file_lock:
            if not self._recovered:
                self._recover()
            out: list[CommandResult] = []
            known: CommandFile | None = None  # the file as we last wrote it, already parsed
            while True:
                parsed = self._read(known)
                if parsed is None or not parsed.entries or parsed.sha256 == self._stuck:
                    return out
                results, known = self._take(parsed)
                out += results

    def _read(self, known: CommandFile | None) -> CommandFile | None:
        """The command file, parsed; None when it is missing or has a whole-file problem (reported once)."""
        try:
            data = self._read_bytes()
        except CommandFileError as e:
            self._report(e, e.key or str(e))
            return None
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            error = CommandFileError(f"{self.command_file} is not UTF-8 text (byte {e.start}: {e.reason})")
            self._report(error, hashlib.sha256(data).hexdigest(), content=True)
            return None
        if known is not None and text == known.text:
            return known
        sha = text_sha256(text)
        if sha in (self._reported, self._stuck):
            return None  # the same content as reported or stuck: nothing new, no need to parse it again
        try:
            parsed = parse_command_file(text, str(self.command_file))
        except CommandFileError as e:
            self._report(e, sha, content=True)
            return None
        self._reported = None
        return parsed

    def _read_bytes(self) -> bytes | None:
        """The file's bytes; None when it does not exist. Raises ``CommandFileError`` (with a ``key`` for
        the report) when it cannot be used: unreadable, not a regular file, writable by others than its owner,
        owned by someone else than root or us (see ``unsafe``), over the size limit. What is checked is the
        file that was opened (``fstat``), so a file swapped in between cannot slip through."""
        path = self.command_file
        try:
            # Not blocking: a FIFO put in the file's place must not hang the watcher.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CommandFileError(f"{path} cannot be read: {e.strerror or e}", key=f"unreadable {e.errno}") from e
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise CommandFileError(f"{path} is not a regular file", key="not a regular file")
            problem = unsafe(st)
            if problem:
                key = f"unsafe mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid}"
                raise CommandFileError(f"{path} {problem}", key=key)
            data = f.read(MAX_COMMAND_FILE_BYTES + 1)
        if len(data) > MAX_COMMAND_FILE_BYTES:
            size = max(st.st_size, len(data))
            limit = f"over the limit of {MAX_COMMAND_FILE_BYTES} (1 MiB)"
            raise CommandFileError(f"{path} is {size} bytes, {limit}", key="too big")
        return data

    def _report(self, error: CommandFileError, key: str, *, content: bool = False) -> None:
        """Record a whole-file problem once (``key`` says when it is the same one again)."""
        if key == self._reported:
            return
        self._reported = key
        log.warning("commands: %s; nothing was run", error)
        extra: dict[str, Any] = {"file": str(self.command_file), ("file_sha256" if content else "file_problem"): key}
        if error.line is not None:
            extra["line"] = error.line
        self._finish(self._new_id(), CommandResult("", "error", f"{error}; nothing was run", extra=extra))

    def _take(self, parsed: CommandFile) -> tuple[list[CommandResult], CommandFile | None]:
        """One step: the first entries (``batch_size``) taken, removed, run. Returns their results and the
        file as rewritten (None when it was not)."""
        count = batch_size(len(parsed.entries))
        try:
            after = remove_entries(parsed, range(count))
        except CommandFileError:  # the layout does not let a part go: take them all
            count = len(parsed.entries)
            after = remove_entries(parsed, range(count))
        records = self.start_entries(parsed, count, after)
        try:
            self.remove_taken(records, after)
        except EntryNotRemoved as e:
            # Never run what was not removed: it would run again at the next look. Report, and do not take it
            # again until the file changes (a read-only file would otherwise add records at every look).
            self._stuck = e.file_sha256 or parsed.sha256
            message = f"cannot remove it from {self.command_file} ({e.reason}); not run"
            log.error("commands: %d command(s) not run: %s", len(records), message)
            return [self._finish(r["id"], CommandResult(r["command"], "error", message)) for r in records], None
        self._stuck = None
        return self._run_all(records), after

    def start_entries(self, parsed: CommandFile, count: int, after: CommandFile | None = None) -> list[dict[str, Any]]:
        """Step 1: journal that the first ``count`` entries are taken (``after``: the file without them, when
        already known). Returns the started records."""
        after = after or remove_entries(parsed, range(count))
        records: list[dict[str, Any]] = []
        for entry in parsed.entries[:count]:
            cmd = entry.parse()
            record: dict[str, Any] = {
                "type": "started",
                "id": self._new_id(),
                "time": utc_timestamp(self._clock()),
                "source": "file",
                "command": str(cmd) if isinstance(cmd, Command) else entry.text,
                "entry": entry.value if entry.problem is None else entry.text,
                "entry_text": entry.text,
                "index": entry.index,
                "file_sha256": parsed.sha256,
                "file_sha256_after": after.sha256,
            }
            if count > 1:
                record["batch"] = records[0]["id"] if records else record["id"]
            if isinstance(cmd, Malformed):
                record["problem"] = cmd.message
            records.append(record)
        self.journal.append_all(records)
        return records

    def remove_taken(self, records: Sequence[dict[str, Any]], after: CommandFile | None = None) -> None:
        """Step 2 (also run by recovery), for records taken together: make sure their entries are no longer
        in the command file.

        The file's hash says where we are: equal to the expected result -> already removed; unchanged since
        the started records -> remove the entries at their recorded positions (``after`` is that result, when
        known). Otherwise the operator edited the file in between: remove, for each record, the first entry
        with the same text, if any (never run twice wins). A missing file holds no entry. Raises
        ``EntryNotRemoved`` when the file cannot be read, parsed or rewritten: then the entries may still be
        there, and the caller must not run them."""
        try:
            data = self._read_bytes()
            text = data.decode("utf-8") if data is not None else None
        except (CommandFileError, UnicodeDecodeError) as e:
            raise EntryNotRemoved(str(e)) from e
        if text is None:
            return
        sha = text_sha256(text)
        first = records[0]
        if sha == first.get("file_sha256_after"):
            return
        if after is not None and sha == first.get("file_sha256") and after.sha256 == first.get("file_sha256_after"):
            new_text = after.text
        else:
            try:
                parsed = parse_command_file(text, str(self.command_file))
                indices = _taken_indices(parsed, records)
                if not indices:
                    return
                new_text = remove_entries(parsed, indices).text
            except CommandFileError as e:
                raise EntryNotRemoved(str(e), sha) from e
        try:
            atomic_write(self.command_file, new_text)
        except OSError as e:
            raise EntryNotRemoved(e.strerror or str(e), sha) from e

    def _run_all(self, records: Sequence[dict[str, Any]]) -> list[CommandResult]:
        results = []
        for n, record in enumerate(records):
            try:
                results.append(self.run_started(record))
            except BaseException:
                # The others never started: close them (best effort: the journal may be what failed).
                for rest in records[n + 1 :]:
                    with contextlib.suppress(OSError):
                        self._finish(rest["id"], CommandResult(rest["command"], "error", NOT_STARTED_MESSAGE))
                raise
        return results

    def run_started(self, record: dict[str, Any]) -> CommandResult:
        """Step 3: in its turn, run the taken entry (or report it malformed) and journal the result."""
        with self._turns.hold():
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

    def submit(self, cmd: Command, source: str = "api") -> CommandResult:
        """Run a command given by the API, the CLI or the Swarm's command requests (``source``), journaled like
        the file's (started, then result)."""
        with self._turns.hold():
            command_id = self._new_id()
            self.journal.append(
                {
                    "type": "started",
                    "id": command_id,
                    "time": utc_timestamp(self._clock()),
                    "source": source,
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


def _batches(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Unfinished records grouped by the batch they were taken in (in journal order; alone when none)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("batch") or r.get("id")), []).append(r)
    return list(groups.values())


def _taken_indices(parsed: CommandFile, records: Sequence[dict[str, Any]]) -> list[int]:
    """Where the records' entries are in ``parsed``: their recorded positions if the file is the one they were
    taken from, else, for each, the first entry with the same text not matched yet."""
    recorded = [i for r in records if isinstance(i := r.get("index"), int) and 0 <= i < len(parsed.entries)]
    if parsed.sha256 == records[0].get("file_sha256") and len(set(recorded)) == len(records):
        return recorded
    by_text: dict[str, list[int]] = {}
    for e in reversed(parsed.entries):
        by_text.setdefault(e.text, []).append(e.index)  # pop() gives the first
    found = (by_text.get(str(r.get("entry_text"))) for r in records)
    return [indices.pop() for indices in found if indices]
