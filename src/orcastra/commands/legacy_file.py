"""The earlier tool's default command file, watched beside ``commands.file``.

Its users (and its ``trigger-bootstrap.sh``, which appends ``- bootstrap_swarm``) write commands to
``/mnt/commands/swarm-orchestration.command.yml``. Whether or not legacy mode is on, that file is taken from
too whenever its directory exists (the earlier compose file mounts it; the script creates the file when it
appends), with its own results file beside it. It is the same file as ``commands.file`` in legacy mode, and
then watched once. ``ORCASTRA_LEGACY_COMMAND_FILE`` names another path (tests, or a different mount).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orcastra.commands.dispatch import CommandContext
from orcastra.commands.runner import CommandRunner
from orcastra.config.legacy_mode import LEGACY_COMMAND_FILE
from orcastra.config.model import CommandSettings

LEGACY_COMMAND_FILE_VAR = "ORCASTRA_LEGACY_COMMAND_FILE"


def legacy_command_file(env: Mapping[str, str]) -> Path:
    """The earlier tool's command file: ``$ORCASTRA_LEGACY_COMMAND_FILE``, else its default path."""
    value = env.get(LEGACY_COMMAND_FILE_VAR, "").strip()
    return Path(value) if value else LEGACY_COMMAND_FILE


def legacy_command_runner(
    settings: CommandSettings, ctx: CommandContext, env: Mapping[str, str]
) -> CommandRunner | None:
    """A runner for the earlier tool's command file (``legacy_command_file``; same rotation as
    ``commands.file``'s results), or None when its directory does not exist or it is ``commands.file``."""
    path = legacy_command_file(env)
    if not path.parent.is_dir() or path.absolute() == settings.file.absolute():
        return None
    return CommandRunner.from_settings(settings.model_copy(update={"file": path}), ctx)
