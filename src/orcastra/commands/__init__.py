"""Operator commands: from the command file, the HTTP API and ``orcastra do``, each run exactly once.

- ``model``: commands as data; parsing entries and the command file; removing entries keeping the rest;
- ``yamltree``: the restricted YAML reader under it (no anchors or aliases, bounded nesting, plain values only);
- ``dispatch``: a command -> one call on a ``CommandContext`` (implemented by the daemon) -> ``CommandResult``;
- ``journal``: the results file (rotated past a size, keeping unfinished records);
- ``runner``: the ``CommandRunner`` that takes, runs and journals commands, one at a time in arrival order
  (and recovers after a crash without running anything twice);
- ``watch``: ``CommandWatcher``, which notices changes of the command file;
- ``api``: the HTTP routes, the bearer token, and the CLI's client (``do_command``);
- ``swarm_queue``: command requests kept in the Swarm as configs (the data, the leader's pure plan, the
  sender ``send_command``); served by ``orcastra.runtime.command_queue``.

Wiring (in the daemon)::

    runner = CommandRunner.from_settings(config.commands, ctx)   # the file, and the results file's rotation
    runner.recover()
    watcher = CommandWatcher(config.commands.file, runner.process_file)   # run() in a thread, stop() to end
    routes = command_routes(runner.submit, load_token(config.api), results=runner.results)
"""

from orcastra.commands.api import command_routes, do_command, load_token
from orcastra.commands.dispatch import CommandContext, CommandResult, run_command
from orcastra.commands.journal import Journal, results_path
from orcastra.commands.model import (
    COMMAND_NAMES,
    Command,
    CommandFileError,
    Malformed,
    parse_command_file,
    parse_entry,
    parse_words,
)
from orcastra.commands.runner import CommandRunner
from orcastra.commands.watch import CommandWatcher

__all__ = [
    "COMMAND_NAMES",
    "Command",
    "CommandContext",
    "CommandFileError",
    "CommandResult",
    "CommandRunner",
    "CommandWatcher",
    "Journal",
    "Malformed",
    "command_routes",
    "do_command",
    "load_token",
    "parse_command_file",
    "parse_entry",
    "parse_words",
    "results_path",
    "run_command",
]
