"""Tests of operator commands: parsing, removing entries, dispatch, the journal (with its rotation) and crash
recovery, the daemon's command context, the watcher, and the HTTP routes and CLI client. A plain in-memory
``FakeContext`` stands in for the daemon; the only network is a local ``ApiServer`` on an OS-picked port."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from pydantic import ValidationError

from orcastra.adapters.http import ApiServer, Request
from orcastra.commands import journal as journal_module
from orcastra.commands import runner as runner_module
from orcastra.commands.api import command_routes, do_command, load_token
from orcastra.commands.dispatch import CommandResult, run_command
from orcastra.commands.journal import Journal, results_path
from orcastra.commands.model import (
    Command,
    CommandFileError,
    CommandName,
    Malformed,
    parse_command_file,
    parse_entry,
    parse_words,
    remove_entries,
)
from orcastra.commands.runner import INTERRUPTED_MESSAGE, CommandRunner
from orcastra.commands.watch import CommandWatcher
from orcastra.config.model import ApiSettings, CommandSettings, Config
from orcastra.domain.actions import Action, UpdateNodeLabels, UpdateService
from orcastra.domain.plan import Plan
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.errors import ConfigError, EngineNotFoundError
from orcastra.runtime.executor import Outcome
from orcastra.runtime.handlers import MAX_LISTED_ACTIONS, CommandHandlers
from orcastra.runtime.observe import HealthState, Metrics, status_routes
from orcastra.runtime.reconcile import CycleResult

T = TypeVar("T")

TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """Files written by these tests are 0644 whatever the caller's umask (a group-writable one is refused)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- a fake context ----------------------------------------------------------------------------------------


class FakeContext:
    """Records every call; ``fail`` maps a method name to the exception it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail or {}

    def _do(self, *call: str) -> str:
        self.calls.append(call)
        if call[0] in self.fail:
            raise self.fail[call[0]]
        return " ".join(call) + " done"

    def sync(self) -> str:
        return self._do("sync")

    def restart_service(self, name: str) -> str:
        return self._do("restart_service", name)

    def rebalance(self) -> str:
        return self._do("rebalance")

    def set_availability(self, node: str, availability: Literal["active", "drain"]) -> str:
        return self._do("set_availability", node, availability)

    def reboot_node(self, node: str) -> str:
        return self._do("reboot_node", node)

    def pause(self) -> str:
        return self._do("pause")

    def resume(self) -> str:
        return self._do("resume")

    def relabel(self) -> str:
        return self._do("relabel")

    def bootstrap(self) -> str:
        return self._do("bootstrap")

    def update_dependents(self) -> str:
        return self._do("update_dependents")

    def remove_all_labels(self, force: bool) -> str:
        return self._do("remove_all_labels", *(["--force"] if force else []))

    def refresh_mods(self) -> str:
        return self._do("refresh_mods")


class Ids:
    """Predictable command ids: c1, c2, ..."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"c{self.n}"


def make_runner(path: Path, ctx: FakeContext | None = None) -> CommandRunner:
    return CommandRunner(path, ctx or FakeContext(), clock=lambda: 1_700_000_000.25, new_id=Ids())


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in results_path(path).read_text().splitlines()]


# --- parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("sync", Command("sync")),
        ("  restart   app ", Command("restart", "app")),
        ("drain node2", Command("drain", "node2")),
        ("activate node2", Command("activate", "node2")),
        ("reboot node-3.lab", Command("reboot", "node-3.lab")),
        ("bootstrap", Command("bootstrap")),
        ({"command": "restart", "service": "app"}, Command("restart", "app")),
        ({"command": "restart app"}, Command("restart", "app")),
        ({"command": "drain", "node": "node2"}, Command("drain", "node2")),
        ({"command": "pause"}, Command("pause")),
        ("", "empty command"),
        ("frobnicate", "unknown command 'frobnicate'"),
        ("Sync", "unknown command 'Sync'"),
        ("restart", "restart: the service is missing (usage: restart SERVICE)"),
        ("restart a b", "restart: the service must be one word, got 'a b'"),
        ("sync now", "sync takes no argument, got 'now'"),
        ("drain 'node2'", "drain: \"'node2'\" is not a valid node name"),
        ({"command": "restart"}, "restart: the service is missing"),
        ({"command": "restart", "node": "n1"}, "restart: unexpected key node"),
        ({"command": "sync", "service": "app"}, "sync: unexpected key service"),
        ({"command": "restart app", "service": "app"}, "give the service either in 'command' or as 'service'"),
        ({"command": "restart", "service": 12}, "restart: service must be a name (a string), got int"),
        ({"service": "app"}, "mapping without a 'command' key"),
        ({"command": ["sync"]}, "'command' must be a string"),
        (42, "expected a command (a string or a mapping), got 42"),
        (None, "got nothing (null)"),
        (["sync"], "expected a command"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, Command | str) or v else "empty",
)
def test_parse_entry(entry: object, expected: Command | str) -> None:
    got = parse_entry(entry)
    if isinstance(expected, Command):
        assert got == expected
    else:
        assert isinstance(got, Malformed)
        assert expected in got.message


def test_command_renders_as_text_and_entry() -> None:
    assert str(Command("restart", "app")) == "restart app"
    assert Command("restart", "app").to_entry() == {"command": "restart", "service": "app"}
    assert Command("sync").to_entry() == {"command": "sync"}
    assert parse_words(["drain", "n1"]) == Command("drain", "n1")
    with pytest.raises(ValueError, match="does not fit"):
        Command("sync", "app")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- sync\n- [unclosed\n", "is not valid YAML"),
        ("command: sync\n", "line 1: expected a list of commands .* got a mapping"),
        ("sync\n", "line 1: expected a list of commands .* got a string 'sync'"),
        ("- sync\n---\n- pause\n", "is not valid YAML"),
        ("- {command: restart\n", "is not valid YAML"),
    ],
    ids=["unclosed-flow", "mapping", "scalar", "two-documents", "unclosed-mapping"],
)
def test_parse_command_file_rejects(text: str, message: str) -> None:
    with pytest.raises(CommandFileError, match=message):
        parse_command_file(text)


@pytest.mark.parametrize(
    "text", ["", "# nothing yet\n", "---\n", "[]\n", "~\n"], ids=["empty", "comment", "doc", "flow", "null"]
)
def test_parse_command_file_without_entries(text: str) -> None:
    assert parse_command_file(text).entries == ()


def test_parse_command_file_keeps_entry_text_and_line() -> None:
    parsed = parse_command_file("# ops\n- sync  # now\n- {command: drain, node: n2}\n")
    assert [(e.index, e.text, e.line) for e in parsed.entries] == [
        (0, "sync", 2),
        (1, "{command: drain, node: n2}", 3),
    ]


BLOCK = """\
# Orcastra commands; one a line.
- sync   # reconcile now
-
  command: restart
  service: app
- {command: drain, node: node2}

# later
- "restart  web"
- |
  pause
- last
"""


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        (BLOCK, 0, BLOCK.replace("- sync   # reconcile now\n", "")),
        (BLOCK, 1, BLOCK.replace("-\n  command: restart\n  service: app\n", "")),
        (BLOCK, 2, BLOCK.replace("- {command: drain, node: node2}\n", "")),
        (BLOCK, 3, BLOCK.replace('- "restart  web"\n', "")),
        (BLOCK, 4, BLOCK.replace("- |\n  pause\n", "")),
        (BLOCK, 5, BLOCK.replace("- last\n", "")),
        ("- sync\n- pause", 1, "- sync\n"),
        ("- only\n", 0, ""),
        ("  - a\n  - b\n", 0, "  - b\n"),
        ("[sync, pause]\n", 0, "[pause]\n"),
        (
            "# c\n[sync, {command: drain, node: n2},\n 2024-06-01]  # end\n",
            0,
            "# c\n[{command: drain, node: n2}, 2024-06-01]  # end\n",
        ),
        ("[sync]\n", 0, "[]\n"),
        ("- {command: restart, service: app}\n- sync\n", 0, "- sync\n"),
        ("- command: sync\n  # keep me\n- pause\n", 0, "  # keep me\n- pause\n"),
    ],
    ids=[
        "first-with-comment",
        "mapping-dash-alone",
        "flow-mapping",
        "quoted",
        "block-scalar",
        "last",
        "no-final-newline",
        "only-entry",
        "indented",
        "flow-list-rewritten",
        "flow-list-keeps-comments-and-a-date",
        "flow-list-emptied",
        "flow-item",
        "comment-inside-mapping-stays",
    ],
)
def test_remove_entry_keeps_the_rest_as_written(text: str, index: int, expected: str) -> None:
    parsed = parse_command_file(text)
    assert remove_entries(parsed, [index]).text == expected
    remaining = [e.value for e in parsed.entries if e.index != index]
    assert [e.value for e in parse_command_file(expected).entries] == remaining


# --- dispatch --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "call"),
    [
        (Command("sync"), ("sync",)),
        (Command("restart", "app"), ("restart_service", "app")),
        (Command("rebalance"), ("rebalance",)),
        (Command("drain", "n2"), ("set_availability", "n2", "drain")),
        (Command("activate", "n2"), ("set_availability", "n2", "active")),
        (Command("reboot", "n3"), ("reboot_node", "n3")),
        (Command("pause"), ("pause",)),
        (Command("resume"), ("resume",)),
        (Command("relabel"), ("relabel",)),
        (Command("bootstrap"), ("bootstrap",)),
    ],
    ids=str,
)
def test_run_command_calls_the_context(cmd: Command, call: tuple[str, ...]) -> None:
    ctx = FakeContext()
    result = run_command(cmd, ctx)
    assert ctx.calls == [call]
    assert (result.result, result.command, result.actions) == ("ok", str(cmd), (" ".join(call) + " done",))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (EngineNotFoundError("no such service: app", status=404), "no such service: app"),
        (RuntimeError("boom"), "internal error: RuntimeError: boom"),
        (KeyError("x"), "internal error: KeyError: 'x'"),
    ],
    ids=["orcastra-error", "bug", "key-error"],
)
def test_run_command_turns_failures_into_error_results(
    error: Exception, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    result = run_command(Command("restart", "app"), FakeContext(fail={"restart_service": error}))
    assert (result.result, result.message, result.actions) == ("error", message, ())
    if not isinstance(error, EngineNotFoundError):
        assert any(r.exc_info for r in caplog.records), "a bug must be logged with its traceback"


# --- the runner and its journal ----------------------------------------------------------------------------


def test_process_file_runs_each_entry_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("# keep\n- sync\n- {command: restart, service: app}\n- drain n2\n")
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    results = runner.process_file()
    assert ctx.calls == [("sync",), ("restart_service", "app"), ("set_availability", "n2", "drain")]
    assert [r.result for r in results] == ["ok", "ok", "ok"]
    assert path.read_text() == "# keep\n"
    records = journal_lines(path)
    assert [(r["type"], r["id"]) for r in records] == [
        ("started", "c1"),
        ("result", "c1"),
        ("started", "c2"),
        ("result", "c2"),
        ("started", "c3"),
        ("result", "c3"),
    ]
    assert records[1] == {
        "type": "result",
        "id": "c1",
        "command": "sync",
        "result": "ok",
        "message": "sync done",
        "time": "2023-11-14T22:13:20.250Z",
        "actions": ["sync done"],
    }
    assert runner.process_file() == []
    assert len(ctx.calls) == 3


def test_malformed_entries_are_reported_and_do_not_block(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- frobnicate\n- restart\n- sync\n")
    ctx = FakeContext()
    results = make_runner(path, ctx).process_file()
    assert ctx.calls == [("sync",)]
    assert [(r.command, r.result) for r in results] == [
        ("frobnicate", "error"),
        ("restart", "error"),
        ("sync", "ok"),
    ]
    assert results[0].message.startswith("malformed entry: unknown command 'frobnicate'")
    assert path.read_text() == ""


def test_invalid_file_is_reported_once_and_nothing_runs(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    text = "- sync\n- [restart app\n"
    path.write_text(text)
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    runner.process_file()
    runner.process_file()
    make_runner(path, ctx).process_file()  # a restart does not report it again either
    assert ctx.calls == []
    assert path.read_text() == text
    (record,) = journal_lines(path)
    assert record["result"] == "error"
    assert record["message"] == (
        f"{path} is not valid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>'"
        " (while parsing a flow sequence from line 2, column 3); nothing was run"
    )
    assert (record["file"], record["line"]) == (str(path), 3)
    path.write_text(text + "- pause\n")  # still broken, but a different file: report it
    runner.process_file()
    assert len(journal_lines(path)) == 2
    path.write_text("- sync\n")
    runner.process_file()
    assert ctx.calls == [("sync",)]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# ops\nrestart: app\n", 2, "line 2: expected a list of commands ('- sync', one a line), got a mapping"),
        ("sync\n", 1, "line 1: expected a list of commands ('- sync', one a line), got a string 'sync'"),
        ("- sync\n  bad: : x\n", 2, "is not valid YAML: line 2, column 6: mapping values are not allowed here"),
        ("- sync\n\t- pause\n", 2, "is not valid YAML: line 2, column 1: found character '\\t' that cannot"),
    ],
    ids=["mapping", "scalar", "bad-mapping", "tab"],
)
def test_file_that_is_not_a_list_of_commands_is_reported_with_its_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(text)
    ctx = FakeContext()
    assert make_runner(path, ctx).process_file() == []
    assert ctx.calls == []
    (record,) = journal_lines(path)
    assert (record["result"], record["file"], record["line"]) == ("error", str(path), line)
    assert record["message"].startswith(f"{path}")
    assert message in record["message"]
    assert "\n" not in record["message"], "one line, without PyYAML's source excerpt"


def test_submit_is_journaled_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    runner = make_runner(path)
    result = runner.submit(Command("reboot", "n3"))
    assert (result.id, result.result, result.message) == ("c1", "ok", "reboot_node n3 done")
    records = journal_lines(path)
    assert [(r["type"], r.get("source")) for r in records] == [("started", "api"), ("result", None)]
    assert runner.results(10) == [records[1]]
    assert not path.exists(), "an API command does not create the command file"


def test_results_are_newest_first_and_limited(tmp_path: Path) -> None:
    runner = make_runner(tmp_path / "commands.yml")
    for name in ("sync", "pause", "resume"):
        runner.submit(Command(name))
    assert [r["command"] for r in runner.results(2)] == ["resume", "pause"]


# Crash points: each test performs the steps of ``take`` up to the crash, then starts a new runner.

FILE = "- reboot n1\n- sync\n"


def crash_after(step: str, path: Path, ctx: FakeContext) -> None:
    runner = make_runner(path, ctx)
    parsed = parse_command_file(path.read_text())
    (record,) = runner.start_entries(parsed, 1)
    if step == "started":
        return
    runner.remove_taken([record])
    if step == "removed":
        return
    runner.run_started(record)


@pytest.mark.parametrize(
    ("step", "runs_before_crash"),
    [("started", 0), ("removed", 0)],
    ids=["after-started-record", "after-removal"],
)
def test_recovery_never_runs_a_command_twice(tmp_path: Path, step: str, runs_before_crash: int) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(FILE)
    ctx = FakeContext()
    crash_after(step, path, ctx)
    assert len(ctx.calls) == runs_before_crash
    runner = CommandRunner(path, ctx, clock=lambda: 0.0, new_id=lambda: "fresh")
    (interrupted,) = runner.recover()
    assert (interrupted.id, interrupted.command, interrupted.result) == ("c1", "reboot n1", "error")
    assert interrupted.message == INTERRUPTED_MESSAGE
    assert path.read_text() == "- sync\n", "the interrupted entry must be gone, the rest kept"
    runner.process_file()
    assert ctx.calls == [("sync",)], "reboot n1 is not run again; sync runs"
    assert runner.recover() == [], "recovery is idempotent"


def test_recovery_after_the_run_but_before_the_result(tmp_path: Path) -> None:
    # The command ran but its result was not written: recovery cannot know, so it says "interrupted".
    path = tmp_path / "commands.yml"
    path.write_text(FILE)
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    (record,) = runner.start_entries(parse_command_file(path.read_text()), 1)
    runner.remove_taken([record])
    ctx.reboot_node("n1")  # the effect happened; the crash came before _finish
    (interrupted,) = make_runner(path, ctx).recover()
    assert interrupted.message == INTERRUPTED_MESSAGE
    assert ctx.calls == [("reboot_node", "n1")]


def test_recovery_after_the_result_does_nothing(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(FILE)
    ctx = FakeContext()
    crash_after("result", path, ctx)
    assert make_runner(path, ctx).recover() == []
    assert path.read_text() == "- sync\n"


def test_recovery_finds_the_entry_by_text_when_the_file_was_edited(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(FILE)
    ctx = FakeContext()
    crash_after("started", path, ctx)
    path.write_text("- pause\n" + FILE)  # the operator added a line before the restart
    make_runner(path, ctx).recover()
    assert path.read_text() == "- pause\n- sync\n"


def test_recovery_reports_a_malformed_entry_with_its_message(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- restart\n")
    crash_after("started", path, FakeContext())
    (result,) = make_runner(path).recover()
    assert result.message.startswith("malformed entry: restart: the service is missing")
    assert path.read_text() == ""


def test_recovery_closes_an_interrupted_api_command(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    Journal(results_path(path)).append({"type": "started", "id": "a1", "source": "api", "command": "pause"})
    (result,) = make_runner(path).recover()
    assert (result.id, result.command, result.message) == ("a1", "pause", INTERRUPTED_MESSAGE)


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    results = results_path(path)
    results.write_text('{"type": "result", "id": "old", "command": "sync"}\n{"type": "sta')
    runner = make_runner(path)
    runner.submit(Command("sync"))
    lines = results.read_text().splitlines()
    assert lines[1] == '{"type": "sta'
    assert [r["id"] for r in runner.results(5)] == ["c1", "old"]


def test_entry_that_cannot_be_removed_is_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- sync\n")

    def refuse(target: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runner_module, "atomic_write", refuse)
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    (result,) = runner.process_file()
    assert ctx.calls == []
    assert result.result == "error"
    assert "Permission denied" in result.message
    assert runner.process_file() == [], "not retried until the file changes"


def test_entry_is_not_run_when_the_file_cannot_be_parsed_at_removal(tmp_path: Path) -> None:
    # The operator saves a typo right after the started record: the entry cannot be removed, so it must not run
    # (it would run again once the typo is fixed). It is reported not run, and taken once the file is fixed.
    path = tmp_path / "commands.yml"
    path.write_text("- reboot node1\n- sync\n")
    typo = "- reboot node1\n- sync\n- [drain node2\n"

    class TypoJournal(Journal):
        typed = False

        def append_all(self, records: Sequence[dict[str, Any]]) -> None:
            super().append_all(records)
            if records[0]["type"] == "started" and not self.typed:
                self.typed = True
                path.write_text(typo)

    ctx = FakeContext()
    runner = CommandRunner(path, ctx, TypoJournal(results_path(path)), clock=lambda: 0.0, new_id=Ids())
    (result,) = runner.process_file()
    assert ctx.calls == [], "not removed, so not run"
    assert (result.command, result.result) == ("reboot node1", "error")
    assert result.message.startswith(f"cannot remove it from {path} ({path} is not valid YAML: line 4")
    assert result.message.endswith("; not run")
    assert runner.process_file() == [], "the broken file is reported once; nothing runs"
    assert path.read_text() == typo
    path.write_text("- reboot node1\n- sync\n- drain node2\n")  # fixed
    runner.process_file()
    assert ctx.calls == [("reboot_node", "node1"), ("sync",), ("set_availability", "node2", "drain")]
    assert path.read_text() == ""


def test_recovery_says_so_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(FILE)
    ctx = FakeContext()
    crash_after("started", path, ctx)
    path.write_text(FILE + "- [typo\n")
    (interrupted,) = make_runner(path, ctx).recover()
    assert interrupted.message.startswith(f"interrupted: {path} cannot be read now ({path} is not valid YAML")
    assert interrupted.message.endswith("if the entry is still in it, it had not run, and it runs once it is taken")
    path.write_text(FILE)
    make_runner(path, ctx).process_file()
    assert ctx.calls == [("reboot_node", "n1"), ("sync",)], "it had not run: it runs once"


def test_rewrite_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- sync\n- pause\n")
    path.chmod(0o640)
    make_runner(path).process_file()
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- rotation of the results file -------------------------------------------------------------------------


def small_runner(path: Path, ctx: FakeContext | None = None, *, max_bytes: int = 1000, keep: int = 2) -> CommandRunner:
    journal = Journal(results_path(path), max_bytes=max_bytes, keep=keep)
    return CommandRunner(path, ctx or FakeContext(), journal, clock=lambda: 1_700_000_000.25, new_id=Ids())


class Crash(BaseException):
    """The process dies here (nothing after this point runs, no handler catches it)."""


def submit_until(runner: CommandRunner, done: Callable[[], bool], name: CommandName = "sync") -> None:
    for _ in range(100):
        runner.submit(Command(name))
        if done():
            return
    raise AssertionError("not done after 100 commands")


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_results_file_rotates_past_its_size_keeping_a_few_old_files(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    runner = small_runner(path, keep=2)
    journal = runner.journal
    for _ in range(40):  # ~2 records of ~150 bytes each per command: several rotations
        runner.submit(Command("sync"))
        assert journal.path.stat().st_size <= 1000 + 200, "never much past max_bytes"
    assert journal.rotated(1).exists()
    assert journal.rotated(2).exists()
    assert not journal.rotated(3).exists(), "only `keep` old files"
    # Nothing lost between the files that are kept: every command's pair is whole, in order.
    records = list(journal.records(rotated=True))
    ids = [int(r["id"][1:]) for r in records if r["type"] == "result"]
    assert ids == list(range(ids[0], 41))
    assert len(ids) < 40, "the oldest file was dropped"
    assert journal.unfinished() == []
    assert [r["id"] for r in runner.results(1000)] == [f"c{n}" for n in reversed(ids)]
    assert [r["id"] for r in runner.results(2)] == ["c40", "c39"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rotation_keeps_an_unfinished_command_in_the_new_file(tmp_path: Path) -> None:
    # A command is taken (its "started" record written) and the file rotates before its result: the new
    # file must hold the started record, or recovery after a crash would not see it and could run it again.
    path = tmp_path / "commands.yml"
    path.write_text("- restart app\n- sync\n")
    ctx = FakeContext()
    runner = small_runner(path, ctx)
    (record,) = runner.start_entries(parse_command_file(path.read_text()), 1)
    for n in range(10):
        runner.journal.append({"type": "result", "id": f"filler{n}", "command": "sync", "result": "ok"})
    assert runner.journal.rotated(1).exists()
    current = lines_of(runner.journal.path)
    assert current[0] == record, "carried over, first in the new file"
    assert runner.journal.unfinished() == [record]
    # The crash: no removal, no result. A new runner reports it interrupted and never runs it.
    fresh = small_runner(path, ctx)
    (interrupted,) = fresh.recover()
    assert (interrupted.command, interrupted.message) == ("restart app", INTERRUPTED_MESSAGE)
    fresh.process_file()
    assert ctx.calls == [("sync",)]
    assert path.read_text() == ""


def test_rotation_drops_finished_commands_from_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- restart app\n")
    runner = small_runner(path)
    runner.process_file()
    while not runner.journal.rotated(1).exists():
        runner.submit(Command("sync"))
    assert all(r["type"] != "started" or r["id"] != "c1" for r in lines_of(runner.journal.path))
    assert small_runner(path).recover() == []


def test_rotation_with_keep_1_and_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(journal_module.os, "link", no_links)
    runner = small_runner(tmp_path / "commands.yml", keep=1)
    for _ in range(20):
        runner.submit(Command("sync"))
    journal = runner.journal
    assert journal.rotated(1).exists()
    assert not journal.rotated(2).exists()
    assert journal.rotated(1).stat().st_ino != journal.path.stat().st_ino
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_crash_in_the_middle_of_a_rotation_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "commands.yml"
    runner = small_runner(path)
    journal = runner.journal
    real_replace = os.replace

    def crash_on_the_new_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == journal.path:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(journal_module.os, "replace", crash_on_the_new_file)
    with pytest.raises(Crash):
        submit_until(runner, lambda: False)
    monkeypatch.undo()
    # The old file now also has the name ``.1``; the current name still holds everything.
    assert os.path.samefile(journal.path, journal.rotated(1))
    fresh = small_runner(path)
    assert fresh.recover() == [], "the command whose result was written is complete"
    submit_until(fresh, lambda: not os.path.samefile(journal.path, journal.rotated(1)), "pause")
    assert not journal.rotated(2).exists(), "the interrupted rotation was not shifted a second time"
    results = fresh.results(1000)
    assert len(results) == len({json.dumps(r, sort_keys=True) for r in results}), "no result listed twice"
    assert [r["command"] for r in results].count("sync") == runner._new_id.n  # type: ignore[attr-defined]


def test_a_failing_rotation_never_stops_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "link", full)
    path = tmp_path / "commands.yml"
    path.write_text("- restart app\n" * 2 + "- sync\n")
    ctx = FakeContext()
    runner = small_runner(path, ctx, max_bytes=200)
    with caplog.at_level(logging.WARNING):
        results = runner.process_file()
    assert [r.result for r in results] == ["ok", "ok", "ok"]
    assert len(ctx.calls) == 3
    assert "cannot rotate" in caplog.text
    assert not runner.journal.rotated(1).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_invalid_file_is_not_reported_again_after_a_rotation_and_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- [sync\n")
    runner = small_runner(path)
    runner.process_file()
    submit_until(runner, runner.journal.rotated(1).exists)  # API commands after the report, then a rotation
    assert not any(r.get("file") for r in runner.journal.records()), "the report is in the old file now"
    small_runner(path).process_file()
    reports = [r for r in runner.journal.records(rotated=True) if r.get("file")]
    assert len(reports) == 1
    path.write_text("- sync\n")  # fixed: it runs, and the same broken content later is news again
    small_runner(path).process_file()
    path.write_text("- [sync\n")
    small_runner(path).process_file()
    assert len([r for r in runner.journal.records(rotated=True) if r.get("file")]) == 2


def test_runner_from_settings_rotates_as_configured(tmp_path: Path) -> None:
    settings = CommandSettings(file=tmp_path / "c.yml", results_max_bytes=4096, results_keep=3)
    runner = CommandRunner.from_settings(settings, FakeContext())
    assert runner.command_file == tmp_path / "c.yml"
    assert (runner.journal.path, runner.journal.max_bytes, runner.journal.keep) == (
        tmp_path / "c.yml.results.jsonl",
        4096,
        3,
    )
    defaults = CommandSettings()
    assert (defaults.results_max_bytes, defaults.results_keep) == (1024 * 1024, 2)


@pytest.mark.parametrize(
    ("fields", "where"),
    [({"results_max_bytes": 100}, "results_max_bytes"), ({"results_keep": 0}, "results_keep")],
    ids=["tiny-max", "keep-none"],
)
def test_rotation_settings_are_validated(fields: dict[str, int], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        CommandSettings.model_validate(fields)


# --- the runtime's side: CommandHandlers ---------------------------------------------------------------------


@dataclass
class FakeOps:
    """An ``Operations`` for the commands that need no Engine: ``call`` runs at once, and counts."""

    config: Config = field(default_factory=Config)
    is_leader: bool = True
    paused: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    bootstrap_summary: str = "bootstrap: nothing to do"
    cycles: int = 0
    bootstraps: int = 0
    calls: list[str] = field(default_factory=list)
    swarm: Snapshot = field(default_factory=lambda: Snapshot((), (), ()))
    applied: list[Action] = field(default_factory=list)

    def call(self, fn: Callable[[], T], what: str) -> T:
        self.calls.append(what)
        return fn()

    def read_swarm(self) -> Snapshot:
        return self.swarm

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        self.applied.extend(actions)
        return [Outcome(a, "ok") for a in actions]

    def run_cycle(self) -> CycleResult:
        self.cycles += 1
        return CycleResult(plan=Plan(), snapshot=Snapshot((), (), ()), outcomes=list(self.outcomes))

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def rebalance_now(self) -> tuple[str, list[Outcome]]:
        return "no move: no node is above high", []

    def bootstrap(self) -> str:
        self.bootstraps += 1
        return self.bootstrap_summary

    def reboot(self, node: str) -> str:
        return f"rebooted {node}"


def label_outcome(result: Literal["ok", "error", "conflict"], host: str = "node3") -> Outcome:
    action = UpdateNodeLabels(node_id="id-" + host, hostname=host, node_version=1, set_labels={"zone": "a"})
    return Outcome(action, result, "" if result == "ok" else "it went wrong")


def commands_of(ops: FakeOps) -> CommandHandlers:
    return CommandHandlers(ops)


@pytest.mark.parametrize(
    ("outcomes", "result", "message"),
    [
        ([], "ok", "reconciled: 0 action(s)"),
        ([label_outcome("ok")], "ok", "reconciled: 1 action(s): node/node3 labels zone=a (ok)"),
        ([label_outcome("conflict")], "ok", "reconciled: 1 action(s): node/node3 labels zone=a (conflict)"),
        (
            [label_outcome("ok", "node1"), label_outcome("error")],
            "error",
            "reconciled: 2 action(s): node/node1 labels zone=a (ok); node/node3 labels zone=a (error);"
            " some failed (see the audit log)",
        ),
        (
            [label_outcome("ok", f"n{i}") for i in range(12)],
            "ok",
            "reconciled: 12 action(s): "
            + "; ".join(f"node/n{i} labels zone=a (ok)" for i in range(MAX_LISTED_ACTIONS))
            + "; ...",
        ),
    ],
    ids=["nothing", "one", "conflict-is-routine", "error", "long"],
)
def test_sync_and_relabel_say_what_they_did(outcomes: list[Outcome], result: str, message: str) -> None:
    daemon = FakeOps(outcomes=outcomes)
    for command in (Command("sync"), Command("relabel")):
        done = run_command(command, commands_of(daemon))
        assert (done.result, done.message) == (result, message)
    assert daemon.cycles == 2


@pytest.mark.parametrize("name", ["sync", "relabel", "rebalance"])
def test_paused_refuses_the_automatic_machinery(name: str) -> None:
    daemon = FakeOps(paused=True)
    done = run_command(Command(name), commands_of(daemon))  # type: ignore[arg-type]
    assert (done.result, done.message) == ("error", "Orcastra is paused: resume first")
    assert daemon.cycles == 0


@pytest.mark.parametrize(
    ("daemon", "result", "message", "bootstraps"),
    [
        (FakeOps(), "error", "no inventory: no node in the configuration has an endpoint", 0),
        (
            FakeOps(config=Config.model_validate({"nodes": {"node1": {"endpoint": "tcp://10.0.0.1:2375"}}})),
            "ok",
            "nothing to do",
            1,
        ),
        (
            FakeOps(
                config=Config.model_validate({"nodes": {"node1": {"endpoint": "tcp://10.0.0.1:2375"}}}),
                is_leader=False,
            ),
            "error",
            "this instance is a follower",
            0,
        ),
    ],
    ids=["no-inventory", "inventory", "follower"],
)
def test_bootstrap_command(daemon: FakeOps, result: str, message: str, bootstraps: int) -> None:
    done = run_command(Command("bootstrap"), commands_of(daemon))
    assert done.result == result
    assert done.message.startswith(message)
    assert daemon.bootstraps == bootstraps


# --- the watcher -----------------------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_watcher_calls_on_start_on_change_and_on_resync(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    calls: list[int] = []
    clock = Clock()
    watcher = CommandWatcher(path, lambda: calls.append(1), resync_seconds=60.0, monotonic=clock)
    assert watcher.check(), "first look"
    assert not watcher.check(), "missing file, unchanged"
    path.write_text("- sync\n")
    assert watcher.check(), "created"
    assert not watcher.check()
    path.write_text("- sync\n- pause\n")
    assert watcher.check(), "size changed"
    replacement = tmp_path / "new.yml"
    replacement.write_text("- sync\n- pauze\n")  # same size
    os.utime(replacement, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    os.replace(replacement, path)
    assert watcher.check(), "replaced: new inode"
    clock.now = 61.0
    assert watcher.check(), "resync"
    assert len(calls) == 5


def test_watcher_survives_a_failing_callback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    clock = Clock()
    watcher = CommandWatcher(tmp_path / "commands.yml", fail, resync_seconds=60.0, monotonic=clock)
    with caplog.at_level(logging.ERROR):
        assert watcher.check()
        clock.now = 61.0
        assert watcher.check()
    first, again = caplog.records
    assert first.exc_info, "the first time with its traceback"
    assert (again.exc_info, again.getMessage()) == (
        None,
        f"commands: handling {watcher.path} failed again: RuntimeError: boom",
    )


# --- the API ---------------------------------------------------------------------------------------------


def post(
    body: object, authorization: str | None = f"Bearer {TOKEN}", content_type: str | None = "application/json"
) -> Request:
    headers = {"authorization": authorization} if authorization else {}
    if content_type is not None:
        headers["content-type"] = content_type
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request("POST", "/v1/commands", headers, raw)


def submit_nothing(submitted: list[Command]) -> Callable[[Command], CommandResult]:
    def submit(cmd: Command) -> CommandResult:
        submitted.append(cmd)
        return CommandResult(str(cmd), "ok", "done")

    return submit


# Bodies a client can send that are not a command: each is a 400 that says why, never a 500.
HOSTILE_BODIES = {
    "empty": (b"", "the body is empty"),
    "not-json": (b"{not json", "not valid JSON: Expecting property name"),
    "trailing-garbage": (b'{"command": "sync"} x', "not valid JSON: Extra data"),
    "5000-digit-integer": (b'{"command": ' + b"1" * 5000 + b"}", "a number of 5000 digits"),
    "5000-digit-integer-elsewhere": (b'{"command": "sync", "n": -' + b"9" * 5000 + b"}", "a number of 5000 digits"),
    "60000-deep-nesting": (b"[" * 60_000, "nested too deeply"),
    "deep-object": (b'{"command": ' + b'{"a": ' * 900 + b"1" + b"}" * 901, "nested too deeply"),
    "deep-list-in-command": (b'{"command": ' + b"[" * 900 + b"]" * 900 + b"}", "nested too deeply"),
    "nan": (b'{"command": NaN}', "NaN is not JSON"),
    "infinity": (b'{"command": "sync", "x": -Infinity}', "-Infinity is not JSON"),
    "huge-float": (b'{"command": "sync", "x": 1e999}', "a number too large"),
    "not-utf-8": (b'{"command": "sync \xff"}', "not UTF-8"),
    "utf-16": ('{"command": "sync"}'.encode("utf-16"), "not UTF-8"),
    "utf-8-bom": (b'\xef\xbb\xbf{"command": "sync"}', "byte order mark"),
    "duplicate-key": (b'{"command": "sync", "command": "pause"}', "duplicate key 'command'"),
    "nested-duplicate-key": (b'{"command": "sync", "x": {"a": 1, "a": 2}}', "duplicate key 'a'"),
    "list": (b'["sync"]', "JSON object"),
    "string": (b'"sync"', "JSON object"),
    "null": (b"null", "JSON object"),
    "number": (b"42", "JSON object"),
}


@pytest.mark.parametrize(
    ("token", "request_", "status", "error"),
    [
        (None, post({"command": "sync"}), 403, "set api.token or api.token_file"),
        (TOKEN, post({"command": "sync"}, None), 401, "missing or wrong bearer token"),
        (TOKEN, post({"command": "sync"}, "Bearer nope"), 401, "missing or wrong bearer token"),
        (TOKEN, post({"command": "sync"}, f"Basic {TOKEN}"), 401, "missing or wrong bearer token"),
        (TOKEN, post(b"{not json"), 400, "the body is not valid JSON"),
        (TOKEN, post(["sync"]), 400, "JSON object"),
        (TOKEN, post({"command": "restart"}), 400, "the service is missing"),
    ],
    ids=["no-token-configured", "no-header", "wrong-token", "wrong-scheme", "bad-json", "not-object", "malformed"],
)
def test_post_command_refusals(token: str | None, request_: Request, status: int, error: str) -> None:
    submitted: list[Command] = []

    def submit(cmd: Command) -> CommandResult:
        submitted.append(cmd)
        return CommandResult(str(cmd), "ok", "done")

    response = command_routes(submit, token)[("POST", "/v1/commands")](request_)
    assert response.status == status
    assert error in json.loads(response.body)["error"]
    assert submitted == []
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("body", "error"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_post_command_refuses_a_hostile_body_with_400(body: bytes, error: str) -> None:
    submitted: list[Command] = []
    response = command_routes(submit_nothing(submitted), TOKEN)[("POST", "/v1/commands")](post(body))
    assert (response.status, submitted) == (400, [])
    assert error in json.loads(response.body)["error"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("Application/JSON; charset=UTF-8", 200),
        ('application/json; charset="utf-8"', 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 200),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=latin-1", 415),
        ("application/jsonx", 415),
    ],
    ids=["none", "json", "json-utf-8", "json-quoted-charset", "text", "form", "multipart", "latin-1", "jsonx"],
)
def test_post_command_content_type(content_type: str | None, status: int) -> None:
    submitted: list[Command] = []
    request = post({"command": "sync"}, content_type=content_type)
    response = command_routes(submit_nothing(submitted), TOKEN)[("POST", "/v1/commands")](request)
    assert response.status == status
    if status == 415:
        assert "Content-Type: application/json" in json.loads(response.body)["error"]
        assert submitted == []
    else:
        assert submitted == [Command("sync")]


def test_hostile_bodies_through_the_listener_are_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(tmp_path / "commands.yml")
    routes = command_routes(runner.submit, TOKEN, results=runner.results)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with caplog.at_level(logging.DEBUG), ApiServer("127.0.0.1:0", routes) as api:
        for body, error in HOSTILE_BODIES.values():
            conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
            try:
                conn.request("POST", "/v1/commands", body=body, headers=headers)
                response = conn.getresponse()
                assert (response.status, error in json.loads(response.read())["error"]) == (400, True), body[:40]
            finally:
                conn.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "body",
    [{"command": "restart", "service": "app"}, {"command": "restart app"}],
    ids=["mapping", "words"],
)
def test_post_command_runs_it(tmp_path: Path, body: dict[str, str]) -> None:
    ctx = FakeContext()
    runner = make_runner(tmp_path / "commands.yml", ctx)
    routes = command_routes(runner.submit, TOKEN, results=runner.results)
    response = routes[("POST", "/v1/commands")](post(body))
    assert response.status == 200
    assert json.loads(response.body) == {
        "id": "c1",
        "command": "restart app",
        "result": "ok",
        "message": "restart_service app done",
        "time": "2023-11-14T22:13:20.250Z",
        "actions": ["restart_service app done"],
    }
    assert ctx.calls == [("restart_service", "app")]


def get_results_request(query: str = "", authorization: str | None = f"Bearer {TOKEN}") -> Request:
    headers = {"authorization": authorization} if authorization else {}
    return Request("GET", "/v1/commands/results", headers, b"", query)


@pytest.mark.parametrize(
    ("query", "status", "count"),
    [("", 200, 3), ("limit=2", 200, 2), ("limit=0", 400, None), ("limit=x", 400, None)],
    ids=["default", "limit", "zero", "not-a-number"],
)
def test_get_results(tmp_path: Path, query: str, status: int, count: int | None) -> None:
    runner = make_runner(tmp_path / "commands.yml")
    for _ in range(3):
        runner.submit(Command("sync"))
    route = command_routes(runner.submit, TOKEN, results=runner.results)[("GET", "/v1/commands/results")]
    response = route(get_results_request(query))
    assert response.status == status
    if count is not None:
        assert len(json.loads(response.body)["results"]) == count


@pytest.mark.parametrize(
    ("token", "authorization", "status", "error"),
    [
        (None, f"Bearer {TOKEN}", 403, "set api.token or api.token_file"),
        (TOKEN, None, 401, "missing or wrong bearer token"),
        (TOKEN, "Bearer nope", 401, "missing or wrong bearer token"),
        (TOKEN, f"Basic {TOKEN}", 401, "missing or wrong bearer token"),
    ],
    ids=["no-token-configured", "no-header", "wrong-token", "wrong-scheme"],
)
def test_get_results_needs_the_token(
    tmp_path: Path, token: str | None, authorization: str | None, status: int, error: str
) -> None:
    """Results can hold sensitive text (a message naming what was done, an error from the Engine)."""
    runner = make_runner(tmp_path / "commands.yml")
    runner.submit(Command("sync"))
    route = command_routes(runner.submit, token, results=runner.results)[("GET", "/v1/commands/results")]
    response = route(get_results_request(authorization=authorization))
    assert response.status == status
    payload = json.loads(response.body)
    assert error in payload["error"]
    assert "results" not in payload
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_answer_log_line_or_cli_message_echoes_a_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wr0ng-guess-" + "x" * 20
    ctx = FakeContext(fail={"restart_service": EngineNotFoundError("no such service: app")})
    runner = make_runner(tmp_path / "commands.yml", ctx)
    routes = command_routes(runner.submit, TOKEN, results=runner.results)
    seen: list[bytes] = []
    with caplog.at_level(logging.DEBUG), ApiServer("127.0.0.1:0", routes) as api:
        listen = f"127.0.0.1:{api.port}"
        for authorization in (f"Bearer {TOKEN}", f"Bearer {wrong}", f"Basic {wrong}", wrong, f"Bearer {TOKEN} {wrong}"):
            for method, path, body in (
                ("POST", "/v1/commands", b'{"command": "restart app"}'),
                ("POST", "/v1/commands", b'{"command": "restart"}'),
                ("POST", "/v1/commands", b"{bad"),
                ("GET", "/v1/commands/results?limit=5", None),
                ("GET", "/v1/commands/results?limit=x", None),
            ):
                conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
                try:
                    conn.request(method, path, body=body, headers={"Authorization": authorization})
                    response = conn.getresponse()
                    seen.append(str(response.headers).encode() + response.read())
                finally:
                    conn.close()
        for token in (TOKEN, wrong):
            _code, text = do_command(listen, token, ["restart", "app"])
            seen.append(text.encode())
    assert b"missing or wrong bearer token" in b"".join(seen)
    for secret in (TOKEN, wrong):
        assert [answer for answer in seen if secret.encode() in answer] == []
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("settings", "file_text", "expected"),
    [
        ({}, None, None),
        ({"token": " abc "}, None, "abc"),
        ({"token_file": "TOKEN_FILE"}, "abc\n", "abc"),
        ({"token_file": "TOKEN_FILE"}, "\n \n", ConfigError),
        ({"token_file": "TOKEN_FILE"}, None, ConfigError),
    ],
    ids=["none", "token", "token-file", "empty-file", "missing-file"],
)
def test_load_token(tmp_path: Path, settings: dict[str, str], file_text: str | None, expected: object) -> None:
    token_file = tmp_path / "token"
    if file_text is not None:
        token_file.write_text(file_text)
    values = {k: str(token_file) if v == "TOKEN_FILE" else v for k, v in settings.items()}
    api = ApiSettings.model_validate(values)
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=r"api\.token_file"):
            load_token(api)
    else:
        assert load_token(api) == expected


def test_do_command_through_a_real_listener(tmp_path: Path) -> None:
    ctx = FakeContext(fail={"reboot_node": EngineNotFoundError("no such node: n9")})
    runner = make_runner(tmp_path / "commands.yml", ctx)
    routes = command_routes(runner.submit, TOKEN, results=runner.results)
    with ApiServer("127.0.0.1:0", routes, builtin=status_routes(Metrics(), HealthState(60.0))) as api:
        listen = f"127.0.0.1:{api.port}"
        assert do_command(listen, TOKEN, ["restart", "app"]) == (0, "restart app: restart_service app done")
        assert do_command(listen, TOKEN, ["reboot", "n9"]) == (1, "reboot n9: no such node: n9 (failed)")
        code, text = do_command(listen, "wrong", ["sync"])
        assert code == 1
        assert "refused the token" in text
        code, text = do_command(listen, None, ["sync"])
        assert code == 1
        assert "refused the token" in text
    assert ctx.calls == [("restart_service", "app"), ("reboot_node", "n9")]


def test_do_command_rejects_a_bad_command_without_sending_it() -> None:
    assert do_command("127.0.0.1:1", TOKEN, ["restart"]) == (
        2,
        "restart: the service is missing (usage: restart SERVICE)",
    )


def test_do_command_when_nothing_listens() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, text = do_command(f"127.0.0.1:{port}", TOKEN, ["sync"], connect_retry_seconds=0.0)
    assert code == 1
    assert "nothing listens there" in text


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("relabel_all", Command("relabel")),
        ("bootstrap_swarm", Command("bootstrap")),
        ({"command": "bootstrap_swarm"}, Command("bootstrap")),
        ("relabel_all now", Malformed("relabel takes no argument, got 'now'")),
    ],
    ids=["relabel_all", "bootstrap_swarm", "mapping-form", "alias-with-an-argument"],
)
def test_the_earlier_tools_command_names_mean_todays(entry: object, expected: Command | Malformed) -> None:
    assert parse_entry(entry) == expected


def group_snapshot(app_node: str) -> Snapshot:
    nodes = tuple(
        Node(id=n, version=1, hostname=n, role="worker", availability="active", state="ready",
             labels=frozen_labels({"orcastra.anchor.app_db": "true"} if n == "n1" else {}))
        for n in ("n1", "n2")
    )  # fmt: skip
    constraint = ("node.labels.orcastra.anchor.app_db==true",)
    services = (
        Service(id="db", version=3, name="app_db", replicas=1, constraints=(), labels=frozen_labels({}), stack="app"),
        Service(id="web", version=4, name="app_web", replicas=1, constraints=constraint, labels=frozen_labels({}),
                stack="app"),
    )  # fmt: skip
    tasks = tuple(
        Task(id=f"t-{s}", service_id=s, node_id=n, slot=1, desired_state="running", state="running",
             updated_at=1.0, created_at=1.0)
        for s, n in (("db", "n1"), ("web", app_node))
    )  # fmt: skip
    return Snapshot(nodes, services, tasks, taken_at=100.0)


@pytest.mark.parametrize(
    ("app_node", "message", "forced"),
    [("n2", "service/app_web force restart", ["app_web"]), ("n1", "every anchor group is colocated", [])],
    ids=["not-colocated", "colocated"],
)
def test_update_dependents_restarts_the_dependents_of_groups_not_colocated(
    app_node: str, message: str, forced: list[str]
) -> None:
    config = Config.model_validate({"stack": "app", "anchors": {"db": {"dependents": ["web"]}}})
    ops = FakeOps(config=config, swarm=group_snapshot(app_node))
    done = run_command(Command("update_dependents"), commands_of(ops))
    assert (done.result, done.message.startswith(message)) == ("ok", True), done.message
    assert [a.service_name for a in ops.applied if isinstance(a, UpdateService) and a.force] == forced
