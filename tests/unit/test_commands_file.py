"""The command file read defensively: entries YAML reads as something other than plain data (dates, binary, sets,
bad tags, huge numbers) are malformed entries that block nothing; anchors, aliases, deep nesting and files over
the size limit are refused as a whole, quickly; so is a file others could write (or that is not a regular file,
or not UTF-8). The results files are readable by their owner only. The helpers come from ``test_commands``."""

from __future__ import annotations

import json
import os
import random
import stat
import time
from pathlib import Path

import pytest
from test_commands import FakeContext, journal_lines, make_runner, usual_umask  # noqa: F401 (autouse)

from orcastra.commands.journal import Journal, results_path
from orcastra.commands.model import (
    MAX_COMMAND_FILE_BYTES,
    Command,
    CommandFileError,
    Malformed,
    parse_command_file,
    remove_entries,
)
from orcastra.commands.runner import CommandRunner, EntryNotRemoved
from orcastra.commands.yamltree import MAX_NESTING


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("2024-06-01", "2024-06-01 reads as a date or time (!!timestamp), which is not a command"),
        ("2024-13-45", "2024-13-45 reads as a date or time (!!timestamp)"),
        ("!!timestamp foo", "!!timestamp foo reads as a date or time (!!timestamp)"),
        ("!!binary aGk=", "!!binary aGk= reads as binary data (!!binary), which is not a command"),
        ("!!set {a}", "!!set {a} reads as a set (!!set), which is not a command"),
        ("!!omap [a: 1]", "reads as an ordered mapping (!!omap)"),
        ("!!int abc", "!!int abc is not a valid !!int"),
        ("!!float x", "is not a valid !!float"),
        ("!!bool maybe", "is not a valid !!bool"),
        ("1" + "0" * 5000, "is a number of more than 64 characters"),
        ("!foo x", "has the tag !foo, which a command file does not use"),
        ("!!python/object:os.system x", "has the tag !!python/object:os.system"),
        ("=", "reads as a value key (=)"),
        ("{<<: {command: sync}}", "reads as a merge key (<<)"),
        ("{command: restart, service: 2024-06-01}", "2024-06-01 reads as a date or time"),
        ("{? [a]: b}", "[a] is a list or mapping used as a key"),
        ("{command: sync, command: pause}", "command is a key given twice"),
    ],
    ids=[
        "date",
        "bad-date",
        "bad-timestamp-tag",
        "binary",
        "set",
        "omap",
        "bad-int-tag",
        "bad-float-tag",
        "bad-bool-tag",
        "huge-integer",
        "unknown-tag",
        "python-tag",
        "value-key",
        "merge-key",
        "date-inside-a-mapping",
        "complex-key",
        "duplicate-key",
    ],
)
def test_entries_that_are_not_plain_data_are_malformed(entry: str, problem: str) -> None:
    parsed = parse_command_file(f"- {entry}\n- sync\n")
    bad, good = (e.parse() for e in parsed.entries)
    assert isinstance(bad, Malformed)
    assert problem in bad.message
    assert good == Command("sync"), "the entry after it is read as usual"
    json.dumps([e.value for e in parsed.entries])  # what the journal writes


ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (ALIAS_BOMB, 1, "line 1: anchors and aliases (&name, *name) are not allowed in a command file"),
        ("- sync\n- &a pause\n- *a\n", 2, "line 2: anchors and aliases"),
        ("- sync\n- [[[*a]]]\n", 2, "line 2: anchors and aliases"),
        ("- sync\n---\n- pause\n", 2, "is not valid YAML: line 2, column 1: expected a single document"),
        ("!!set {a}\n", 1, "line 1: expected a list of commands ('- sync', one a line), got something else"),
        ("!!omap [a: 1]\n", 1, "line 1: expected a list of commands"),
        ("- sync\n- " + "[" * 8 + "]" * 8, 2, f"line 2: more than {MAX_NESTING} levels of nesting"),
        ("- sync\n- " + "[" * 200_000 + "]" * 200_000, 2, "line 2: more than 8 levels of nesting"),
        ("- sync\n- " + "{a: " * 100_000 + "}" * 100_000, 2, "line 2: more than 8 levels of nesting"),
        ("- sync\n" + "".join("  " * n + f"- k{n}:\n" for n in range(20)) + "x", 6, "line 6: more than 8 levels"),
    ],
    ids=[
        "alias-bomb",
        "alias",
        "alias-in-nesting",
        "two-documents",
        "set",
        "omap",
        "nesting-just-too-deep",
        "deep-flow-list",
        "deep-flow-mapping",
        "deep-block-list",
    ],
)
def test_whole_file_problems_are_one_error_with_its_line(text: str, line: int, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(CommandFileError) as caught:
        parse_command_file(text, "commands.yml")
    assert time.perf_counter() - started < 1.0
    assert message in str(caught.value)
    assert str(caught.value).startswith("commands.yml ")
    assert caught.value.line == line


def test_a_file_over_the_size_limit_is_refused() -> None:
    text = "# " + "x" * MAX_COMMAND_FILE_BYTES + "\n- sync\n"
    with pytest.raises(CommandFileError, match=r"commands.yml is 1048586 bytes, over the limit of 1048576 \(1 MiB\)"):
        parse_command_file(text, "commands.yml")
    assert parse_command_file("#" * (MAX_COMMAND_FILE_BYTES - 8) + "\n- sync\n").entries[0].parse() == Command("sync")


def test_entries_that_are_not_plain_data_are_reported_and_do_not_block(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- 2024-06-01\n- !!binary aGk=\n- !!set {a}\n- {command: drain, node: 2024-06-01}\n- sync\n")
    ctx = FakeContext()
    results = make_runner(path, ctx).process_file()
    assert ctx.calls == [("sync",)]
    assert [(r.command, r.result, r.message) for r in results] == [
        ("2024-06-01", "error", "malformed entry: 2024-06-01 reads as a date or time (!!timestamp),"
         " which is not a command"),
        ("!!binary aGk=", "error", "malformed entry: !!binary aGk= reads as binary data (!!binary),"
         " which is not a command"),
        ("!!set {a}", "error", "malformed entry: !!set {a} reads as a set (!!set), which is not a command"),
        ("{command: drain, node: 2024-06-01}", "error", "malformed entry: 2024-06-01 reads as a date or"
         " time (!!timestamp), which is not a command"),
        ("sync", "ok", "sync done"),
    ]  # fmt: skip
    assert path.read_text() == ""
    records = journal_lines(path)
    assert [r["type"] for r in records] == ["started", "result"] * 5, "one started and one result each"
    assert records[0]["entry"] == "2024-06-01", "an entry that is not plain data is journaled as written"


def test_an_alias_bomb_is_refused_at_once_and_nothing_runs(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- sync\n" + ALIAS_BOMB.replace("\n", "\n- ").replace("a: &a", "- a: &a", 1) + "\n")
    ctx = FakeContext()
    started = time.perf_counter()
    assert make_runner(path, ctx).process_file() == []
    assert time.perf_counter() - started < 1.0
    assert ctx.calls == []
    (record,) = journal_lines(path)
    assert record["line"] == 2
    assert record["message"] == (
        f"{path} line 2: anchors and aliases (&name, *name) are not allowed in a command file; nothing was run"
    )


def test_a_command_file_over_the_size_limit_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    text = "- sync\n# " + "x" * MAX_COMMAND_FILE_BYTES + "\n"
    path.write_text(text)
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    assert runner.process_file() == []
    assert runner.process_file() == []
    assert ctx.calls == []
    assert path.read_text() == text
    (record,) = journal_lines(path)
    assert record["result"] == "error"
    assert "over the limit of 1048576 (1 MiB)" in record["message"]
    assert record["message"].endswith("; nothing was run")


# --- who may write the command file, and who may read the results -------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (0o664, "is writable by its group (mode 0664)"),
        (0o646, "is writable by others (mode 0646)"),
        (0o666, "is writable by its group and others (mode 0666)"),
    ],
    ids=["group", "others", "both"],
)
def test_a_command_file_others_can_write_is_refused(tmp_path: Path, mode: int, message: str) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- reboot node1\n")
    path.chmod(mode)
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    assert runner.process_file() == []
    path.write_text("- reboot node1\n- sync\n")  # new content, same problem: not reported again
    assert runner.process_file() == []
    assert make_runner(path, ctx).process_file() == [], "nor after a restart"
    assert ctx.calls == []
    (record,) = journal_lines(path)
    assert record["result"] == "error"
    assert record["message"] == (
        f"{path} {message}: whoever can write it can run commands (reboot nodes); chmod go-w it; nothing was run"
    )
    path.chmod(0o640)
    runner.process_file()
    assert ctx.calls == [("reboot_node", "node1"), ("sync",)]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_command_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- reboot node1\n")
    os.chown(path, 4321, 4321)
    ctx = FakeContext()
    assert make_runner(path, ctx).process_file() == []
    assert ctx.calls == []
    (record,) = journal_lines(path)
    assert record["message"] == (
        f"{path} is owned by uid 4321, neither root nor the user Orcastra runs as (uid 0): that user can run"
        " commands (reboot nodes); chown it to root; nothing was run"
    )
    os.chown(path, 0, 0)
    make_runner(path, ctx).process_file()
    assert ctx.calls == [("reboot_node", "node1")]


def test_a_file_made_unsafe_between_reading_and_removal_does_not_run(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- reboot node1\n")
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    parsed = parse_command_file(path.read_text())
    records = runner.start_entries(parsed, 1)
    path.chmod(0o666)
    with pytest.raises(EntryNotRemoved, match="is writable by its group and others"):
        runner.remove_taken(records)


def test_a_fifo_in_place_of_the_command_file_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    os.mkfifo(path, 0o600)
    assert make_runner(path).process_file() == []
    (record,) = journal_lines(path)
    assert record["message"] == f"{path} is not a regular file; nothing was run"


def test_a_command_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_bytes(b"- sync\n- restart caf\xe9\n")
    runner = make_runner(path)
    assert runner.process_file() == []
    assert runner.process_file() == []
    (record,) = journal_lines(path)
    assert record["message"] == (f"{path} is not UTF-8 text (byte 20: invalid continuation byte); nothing was run")


def results_files(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(results_path(path).name))


def test_the_results_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    results = results_path(path)
    old = results.with_name(results.name + ".3")
    results.write_text("")
    old.write_text("")
    results.chmod(0o644)
    old.chmod(0o664)
    journal = Journal(results, max_bytes=1000, keep=3)
    runner = CommandRunner(path, FakeContext(), journal)
    while not journal.rotated(2).exists():
        runner.submit(Command("sync"))
    files = results_files(path)
    assert [p.name for p in files] == [results.name] + [f"{results.name}.{n}" for n in (1, 2, 3)]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_a_new_results_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    old_umask = os.umask(0)
    try:
        make_runner(path).submit(Command("sync"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(results_path(path).stat().st_mode) == 0o600


# --- removing entries, over many generated layouts -------------------------------------------------------------

# No literal block scalar ("- |"): blank and indented comment lines after one are its text, not separators
# (the table test above covers removing one; when a cut would change one, the result is checked and refused).
ENTRIES = [
    "- sync\n",
    "- restart app   # now\n",
    '- "restart  web"\n',
    "-\n  command: restart\n  service: app\n",
    "- {command: drain,\n   node: n2}\n",
    "- 2024-06-01\n",
    "- !!binary aGk=\n",
    "- command: sync\n",
    "- [a, b]\n",
    "- 'it''s'\n",
    "- café\n",
]
BETWEEN = ["", "", "# a comment\n", "\n", "  # indented comment\n"]


@pytest.mark.parametrize("seed", range(40))
def test_removing_any_entries_keeps_everything_else_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    pieces: list[tuple[bool, str]] = [(False, rng.choice(BETWEEN))]
    for _ in range(rng.randint(1, 12)):
        pieces += [(True, rng.choice(ENTRIES)), (False, rng.choice(BETWEEN))]
    parsed = parse_command_file("".join(text for _, text in pieces))
    count = len(parsed.entries)
    for indices in [range(rng.randint(1, count)), rng.sample(range(count), rng.randint(1, count))]:
        after = remove_entries(parsed, indices)
        n = -1
        expected = ""
        for is_entry, text in pieces:
            n += is_entry
            if not (is_entry and n in indices):
                expected += text
        assert after.text == expected
        assert [e.text for e in after.entries] == [e.text for e in parsed.entries if e.index not in indices]


def test_a_cut_that_would_change_another_entry_is_not_made() -> None:
    # Cutting "- sync" would make the indented comment part of the literal block above it.
    text = "- |\n  pause\n- sync\n  # not part of anything\n"
    after = remove_entries(parse_command_file(text), [1])
    assert "# not part" not in after.text, "dumped instead"
    assert [e.value for e in after.entries] == ["pause\n"], "the remaining value is kept"
    with pytest.raises(CommandFileError, match="cannot be kept as they are"):
        remove_entries(parse_command_file(text + "- 2024-06-01\n"), [1])  # a date cannot be dumped
