"""Legacy mode: an earlier-tool deployment detected, its defaults applied, and one line that says so.

Legacy mode is on when the earlier tool's config directory holds one of its files (found without a
variable naming it), or when a variable or value only the earlier tool knew is set (``GC_*``,
``MOD_MANAGER_*``, ``BOOTSTRAP_MODE=watch``). Then the earlier tool's defaults apply where today's
differ, below the main file and the environment, and ``legacy_summary_line`` says in one line what was
found, what differs and what is not supported yet, for the daemon to print once at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

Loc = tuple[str | int, ...]

EARLIER_ONLY_PREFIXES = ("GC_", "MOD_MANAGER_")
# Of those, the ones Orcastra does not act on yet (none: GC_* configure the agents' garbage collection,
# MOD_MANAGER_* their mod manager).
UNSUPPORTED_PREFIXES: tuple[str, ...] = ()
MODS_PREFIX = "MOD_MANAGER_"
WATCH_MODE = "watch"
WATCH_NOTE = (
    "BOOTSTRAP_MODE=watch: heal the Swarm every LOOP_INTERVAL seconds (default 300) and soon after each node "
    "event (a node down, back, joined or left), at most every 10 s"
)
TZ_VAR = "TZ"
GC_NOTE = (
    "GC_*: garbage collection is done by `orcastra agent` on each node (hygiene.gc, docs/hygiene.md), "
    "not by this controller: set them on the agent"
)
MODS_NOTE = (
    "MOD_MANAGER_*: the mod cache is kept by `orcastra agent` on each node (mods:, docs/mods.md), "
    "not by this controller: set them on the agent"
)


@dataclass(frozen=True)
class LegacyDefault:
    """A default of the earlier tool that differs from today's: the variable, the setting, its value."""

    var: str
    loc: Loc
    value: object
    shown: str


# The earlier tool's default command file (its trigger-bootstrap.sh appends ``- bootstrap_swarm`` to it).
LEGACY_COMMAND_FILE = Path("/mnt/commands/swarm-orchestration.command.yml")

LEGACY_DEFAULTS: tuple[LegacyDefault, ...] = (
    LegacyDefault("STACK_NAME", ("stack",), "swarm-dev", "stack=swarm-dev"),
    LegacyDefault("DEBUG", ("logging", "debug"), True, "logging.debug=true"),
    LegacyDefault("BOOTSTRAP_MODE", ("bootstrap", "mode"), "watch", "bootstrap.mode=watch"),
    LegacyDefault(
        "COMMAND_FILE",
        ("commands", "file"),
        LEGACY_COMMAND_FILE,
        f"commands.file={LEGACY_COMMAND_FILE}",
    ),
)

# Any MOD_MANAGER_* variable meant the earlier tool's mod manager ran: so does Orcastra's (unless the file says).
MODS_ENABLED = LegacyDefault("MOD_MANAGER_*", ("mods", "enabled"), True, "mods.enabled=true")


def implied_defaults(env: Mapping[str, str]) -> tuple[LegacyDefault, ...]:
    """Defaults the earlier tool's variables imply (below the files, like ``LEGACY_DEFAULTS``)."""
    return (MODS_ENABLED,) if any(name.startswith(MODS_PREFIX) for name in earlier_only_vars(env)) else ()


def is_set(env: Mapping[str, str], name: str) -> bool:
    """Set and not blank (an empty variable counts as unset, as for every override)."""
    return env.get(name, "").strip() != ""


def earlier_only_vars(env: Mapping[str, str]) -> list[str]:
    """The set variables only the earlier tool knew (they turn legacy mode on), in name order."""
    return sorted(name for name in env if name.startswith(EARLIER_ONLY_PREFIXES) and is_set(env, name))


def unsupported_vars(env: Mapping[str, str]) -> list[str]:
    """The earlier tool's variables for features Orcastra does not have yet, in name order."""
    return [name for name in earlier_only_vars(env) if name.startswith(UNSUPPORTED_PREFIXES)]


def watch_requested(env: Mapping[str, str]) -> bool:
    return env.get("BOOTSTRAP_MODE", "").strip().lower() == WATCH_MODE


@dataclass
class LegacySummary:
    """What legacy mode found and changed; ``line()`` is the one line the daemon prints at start."""

    found: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = ["legacy mode: found " + ", ".join(self.found)]
        parts.append("differs: " + (", ".join(self.differs) if self.differs else "nothing"))
        if self.unsupported:
            parts.append("not yet supported (read, not acted on): " + ", ".join(self.unsupported))
        parts.extend(self.notes)
        return "; ".join(parts)


def detect_legacy_mode(
    env: Mapping[str, str], discovered: list[Path], unsupported_files: list[Path]
) -> LegacySummary | None:
    """The summary so far when legacy mode is on (defaults not applied yet), else None."""
    found = [str(p) for p in discovered]
    unsupported = unsupported_vars(env)
    found.extend(earlier_only_vars(env))
    if watch_requested(env):
        found.append("BOOTSTRAP_MODE=watch")
    if not found:
        return None
    summary = LegacySummary(found=found)
    summary.unsupported = [*unsupported, *(f"{p} (not read)" for p in unsupported_files)]
    if is_set(env, TZ_VAR):
        summary.notes.append(f"TZ={env[TZ_VAR].strip()}: log times and reboot windows follow the container's time zone")
    if watch_requested(env):
        summary.notes.append(WATCH_NOTE)
    if any(name.startswith("GC_") for name in earlier_only_vars(env)):
        summary.notes.append(GC_NOTE)
    if any(name.startswith(MODS_PREFIX) for name in earlier_only_vars(env)):
        summary.notes.append(MODS_NOTE)
    return summary
