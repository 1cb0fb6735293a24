"""Dispatch: one command -> one call on a ``CommandContext``, and its outcome as a ``CommandResult``.

The context is where effects live (the daemon implements it with the adapter, executor, rebalancer...); this
module only chooses the call and turns its outcome into data. Nothing raised by the context escapes:
an ``OrcastraError`` is an expected failure (unknown node, Engine refused) and its message is the result;
anything else is a bug, logged with its traceback and reported as "internal error".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from orcastra.commands.model import Command
from orcastra.errors import OrcastraError, cut

log = logging.getLogger(__name__)

ResultKind = Literal["ok", "error"]


class CommandContext(Protocol):
    """What commands can do. Each method returns a message naming what it did and raises an
    ``OrcastraError`` subclass on failure (including an unknown service or node)."""

    def sync(self) -> str: ...

    def restart_service(self, name: str) -> str: ...

    def rebalance(self) -> str: ...

    def set_availability(self, node: str, availability: Literal["active", "drain"]) -> str: ...

    def reboot_node(self, node: str) -> str: ...

    def pause(self) -> str: ...

    def resume(self) -> str: ...

    def relabel(self) -> str: ...

    def bootstrap(self) -> str: ...

    def update_dependents(self) -> str: ...

    def remove_all_labels(self, force: bool) -> str: ...

    def refresh_mods(self) -> str: ...


@dataclass(frozen=True)
class CommandResult:
    """What became of one command. ``id`` and ``time`` are filled in by the runner that journals it;
    ``command`` is the command's text (``"restart app"``), or the entry as written when it was malformed."""

    command: str
    result: ResultKind
    message: str
    actions: tuple[str, ...] = ()
    id: str = ""
    time: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "result": self.result,
            "message": self.message,
            "time": self.time,
            "actions": list(self.actions),
            **self.extra,
        }


def _call(cmd: Command, ctx: CommandContext) -> Callable[[], str]:
    target = cmd.target or ""
    calls: dict[str, Callable[[], str]] = {
        "sync": ctx.sync,
        "restart": lambda: ctx.restart_service(target),
        "rebalance": ctx.rebalance,
        "drain": lambda: ctx.set_availability(target, "drain"),
        "activate": lambda: ctx.set_availability(target, "active"),
        "reboot": lambda: ctx.reboot_node(target),
        "pause": ctx.pause,
        "resume": ctx.resume,
        "relabel": ctx.relabel,
        "bootstrap": ctx.bootstrap,
        "update_dependents": ctx.update_dependents,
        "remove_all_labels": lambda: ctx.remove_all_labels(cmd.force),
        "refresh_mods": ctx.refresh_mods,
    }
    return calls[cmd.name]


def run_command(cmd: Command, ctx: CommandContext) -> CommandResult:
    """Run one command through ``ctx``. Never raises (except ``BaseException``s such as KeyboardInterrupt)."""
    try:
        message = _call(cmd, ctx)()
    except OrcastraError as e:
        log.warning("command %s failed: %s", cmd, e)
        return CommandResult(str(cmd), "error", str(e))
    except Exception as e:
        log.exception("command %s: internal error", cmd)
        return CommandResult(str(cmd), "error", f"internal error: {type(e).__name__}: {cut(str(e))}")
    log.info("command %s: %s", cmd, message)
    # The context reports one message per command; it is also the list of what was done.
    return CommandResult(str(cmd), "ok", message, (message,))
