"""The earlier tool's default command file: watched beside commands.file when its directory exists, and the line
its trigger-bootstrap.sh appends (``- bootstrap_swarm``) runs as ``bootstrap``."""

from __future__ import annotations

import json
from pathlib import Path

from test_commands import FakeContext, FakeOps

from orcastra.commands.journal import results_path
from orcastra.commands.legacy_file import LEGACY_COMMAND_FILE, legacy_command_file, legacy_command_runner
from orcastra.config import Config
from orcastra.config.model import CommandSettings
from orcastra.runtime.daemon import Daemon
from orcastra.runtime.handlers import CommandHandlers


def legacy_env(path: Path) -> dict[str, str]:
    return {"ORCASTRA_LEGACY_COMMAND_FILE": str(path)}


def test_not_watched_when_its_directory_is_missing_or_it_is_the_command_file(tmp_path: Path) -> None:
    settings = CommandSettings(file=tmp_path / "commands.yml")
    assert legacy_command_runner(settings, FakeContext(), legacy_env(tmp_path / "missing" / "legacy.yml")) is None
    assert legacy_command_runner(settings, FakeContext(), legacy_env(tmp_path / "commands.yml")) is None
    runner = legacy_command_runner(settings, FakeContext(), legacy_env(tmp_path / "legacy.yml"))
    assert runner is not None
    assert runner.command_file == tmp_path / "legacy.yml"
    assert runner.journal.path == results_path(tmp_path / "legacy.yml")


def test_the_line_trigger_bootstrap_appends_runs_a_bootstrap(tmp_path: Path) -> None:
    path = tmp_path / "swarm-orchestration.command.yml"
    path.write_text("# commands\n")
    with path.open("a") as f:  # what trigger-bootstrap.sh does: echo "- bootstrap_swarm" >> the file
        f.write("- bootstrap_swarm\n")
    config = Config.model_validate({"nodes": {"n1": {"endpoint": "ssh://root@n1"}}})
    ops = FakeOps(config=config)
    runner = legacy_command_runner(config.commands, CommandHandlers(ops), legacy_env(path))
    assert runner is not None
    [result] = runner.process_file()
    assert (result.command, result.result, ops.bootstraps) == ("bootstrap", "ok", 1)
    assert path.read_text() == "# commands\n"
    [record] = [json.loads(line) for line in results_path(path).read_text().splitlines() if '"result"' in line]
    assert record["command"] == "bootstrap"


def test_the_daemon_takes_the_legacy_path_it_is_given(tmp_path: Path) -> None:
    config = Config.model_validate(
        {"commands": {"file": str(tmp_path / "commands.yml")}, "audit": {"path": str(tmp_path / "audit.jsonl")},
         "leader_election": {"enabled": False}}
    )  # fmt: skip
    env = {"ORCASTRA_LEGACY_COMMAND_FILE": str(tmp_path / "legacy.yml")}
    daemon = Daemon(config, None, env, dry_run=True)
    assert daemon.legacy_command_runner is not None
    assert daemon.legacy_command_runner.command_file == tmp_path / "legacy.yml"
    env = {"ORCASTRA_LEGACY_COMMAND_FILE": str(tmp_path / "no" / "legacy.yml")}
    absent = Daemon(config, None, env, dry_run=True)
    assert absent.legacy_command_runner is None


def test_the_default_path_is_the_earlier_tools() -> None:
    assert legacy_command_file({}) == LEGACY_COMMAND_FILE == Path("/mnt/commands/swarm-orchestration.command.yml")
    assert legacy_command_file({"ORCASTRA_LEGACY_COMMAND_FILE": "/x/c.yml"}) == Path("/x/c.yml")
