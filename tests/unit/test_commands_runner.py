"""The runner at scale: a long command file costs linear file work (entries taken in batches, each removed
durably before any of them runs), a crash in the middle of a batch runs nothing twice and says which commands
never started, and an API command waits for the one command running, not for the whole file. The helpers
come from ``test_commands``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_commands import FakeContext, Ids, journal_lines, make_runner, usual_umask  # noqa: F401 (autouse)

from orcastra.commands import model as model_module
from orcastra.commands import runner as runner_module
from orcastra.commands.model import Command, CommandFile, parse_command_file
from orcastra.commands.runner import INTERRUPTED_MESSAGE, NOT_STARTED_MESSAGE, CommandRunner, batch_size


def restarts(n: int) -> str:
    return "# queued by a script\n" + "".join(f"- restart app{i}\n" for i in range(n))


def test_500_entries_run_once_each_in_order_with_linear_file_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taking one entry per step parsed and rewrote the whole rest each time: 500 entries took 50 s.
    parsed_entries = 0
    writes = 0
    real_parse = model_module.parse_command_file
    real_write = runner_module.atomic_write

    def counting_parse(text: str, source: str = "command file") -> CommandFile:
        nonlocal parsed_entries
        parsed = real_parse(text, source)
        parsed_entries += len(parsed.entries)
        return parsed

    def counting_write(path: Path, text: str) -> None:
        nonlocal writes
        writes += 1
        real_write(path, text)

    monkeypatch.setattr(model_module, "parse_command_file", counting_parse)
    monkeypatch.setattr(runner_module, "parse_command_file", counting_parse)
    monkeypatch.setattr(runner_module, "atomic_write", counting_write)
    path = tmp_path / "commands.yml"
    path.write_text(restarts(500))
    ctx = FakeContext()
    started = time.perf_counter()
    results = make_runner(path, ctx).process_file()
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"500 entries took {elapsed:.1f} s"
    assert ctx.calls == [("restart_service", f"app{i}") for i in range(500)]
    assert [r.result for r in results] == ["ok"] * 500
    assert path.read_text() == "# queued by a script\n"
    assert parsed_entries <= 20 * 500, "about 16 N: the file shrinks geometrically"
    assert writes <= 80, "about 16 + 16 ln(N / 16) rewrites"
    records = journal_lines(path)
    started_ids = [r["id"] for r in records if r["type"] == "started"]
    assert sorted(started_ids) == sorted(r["id"] for r in records if r["type"] == "result")
    assert len(set(started_ids)) == 500


@pytest.mark.parametrize(("queued", "taken"), [(1, 1), (16, 1), (31, 1), (32, 2), (500, 31), (150_000, 9375)], ids=str)
def test_batch_size(queued: int, taken: int) -> None:
    assert batch_size(queued) == taken


def test_few_entries_are_taken_one_at_a_time(tmp_path: Path) -> None:
    # While an entry runs, the entries after it are still in the file: the operator can delete one.
    path = tmp_path / "commands.yml"
    path.write_text("- reboot n1\n- reboot n2\n- reboot n3\n")
    seen: list[str] = []

    class Watching(FakeContext):
        def reboot_node(self, node: str) -> str:
            seen.append(path.read_text())
            if node == "n1":
                path.write_text("- reboot n2\n")  # the operator changes their mind about n3
            return super().reboot_node(node)

    ctx = Watching()
    make_runner(path, ctx).process_file()
    assert seen == ["- reboot n2\n- reboot n3\n", ""]
    assert ctx.calls == [("reboot_node", "n1"), ("reboot_node", "n2")]


class Crash(BaseException):
    """The process dies here."""


def test_a_crash_in_the_middle_of_a_batch_runs_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(restarts(64) + "# end\n")
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    parsed = parse_command_file(path.read_text())
    records = runner.start_entries(parsed, batch_size(64))
    assert [r["batch"] for r in records] == ["c1"] * 4
    runner.remove_taken(records)
    runner.run_started(records[0])
    ctx.restart_service("app1")  # the second one reached the Swarm; the crash came before its result
    fresh = CommandRunner(path, ctx, clock=lambda: 0.0, new_id=Ids())
    assert [(r.command, r.message) for r in fresh.recover()] == [
        ("restart app1", INTERRUPTED_MESSAGE),
        ("restart app2", NOT_STARTED_MESSAGE),
        ("restart app3", NOT_STARTED_MESSAGE),
    ]
    fresh.process_file()
    assert ctx.calls == [("restart_service", f"app{i}") for i in [0, 1, *range(4, 64)]], "nothing twice"
    assert path.read_text() == "# queued by a script\n# end\n"


def test_a_crash_before_a_batch_is_removed_removes_it_at_recovery(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(restarts(40))
    ctx = FakeContext()
    records = make_runner(path, ctx).start_entries(parse_command_file(path.read_text()), 2)
    path.write_text(path.read_text() + "- sync\n")  # edited before the restart: found by text
    results = make_runner(path, ctx).recover()
    assert [(r.command, r.message) for r in results] == [
        ("restart app0", INTERRUPTED_MESSAGE),
        ("restart app1", NOT_STARTED_MESSAGE),
    ]
    assert [r["id"] for r in records] == [r.id for r in results]
    assert parse_command_file(path.read_text()).entries[0].value == "restart app2"


def test_the_rest_of_a_batch_is_closed_when_a_command_dies(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text(restarts(48))
    ctx = FakeContext(fail={"restart_service": Crash()})
    runner = make_runner(path, ctx)
    with pytest.raises(Crash):
        runner.process_file()
    records = journal_lines(path)
    assert [r["message"] for r in records if r["type"] == "result"] == [NOT_STARTED_MESSAGE] * 2
    (interrupted,) = make_runner(path, ctx).recover()
    assert (interrupted.command, interrupted.message) == ("restart app0", INTERRUPTED_MESSAGE)


def test_a_batch_that_cannot_be_removed_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(target: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runner_module, "atomic_write", refuse)
    path = tmp_path / "commands.yml"
    path.write_text(restarts(40))
    ctx = FakeContext()
    runner = make_runner(path, ctx)
    results = runner.process_file()
    assert [(r.result, r.message) for r in results] == [
        ("error", f"cannot remove it from {path} (Permission denied); not run")
    ] * 2
    assert ctx.calls == []
    assert runner.process_file() == [], "not taken again until the file changes"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_an_api_command_waits_for_one_file_command_not_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "commands.yml"
    path.write_text("- sync\n" * 5)
    release = threading.Event()

    class Slow(FakeContext):
        def sync(self) -> str:
            done = super().sync()
            if len(self.calls) == 1:
                release.wait(5.0)
            return done

    ctx = Slow()
    runner = make_runner(path, ctx)
    file_thread = threading.Thread(target=runner.process_file)
    file_thread.start()
    wait_for(lambda: ctx.calls == [("sync",)], "the first sync to run")
    api_thread = threading.Thread(target=runner.submit, args=(Command("pause"),))
    api_thread.start()
    wait_for(lambda: runner._turns.waiting == 2, "the API command to wait for its turn")
    release.set()
    file_thread.join(5.0)
    api_thread.join(5.0)
    assert ctx.calls == [("sync",), ("pause",), ("sync",), ("sync",), ("sync",), ("sync",)]
