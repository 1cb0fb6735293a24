"""Environment variables that override settings from the file (the earlier tool's variable names).

Each variable is parsed here into a typed value and placed at its field in the raw data before the schema
validates it, so range checks (``> 0`` and the like) apply to it exactly as to a value from the file, and
a problem still names the variable. An empty variable counts as unset: ``STACK_NAME=`` in a compose file
is far more often a blank placeholder than a deliberate empty value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orcastra.config.model import DEFAULT_LOG_FILE
from orcastra.config.source import NUL_IN_PATH
from orcastra.errors import ConfigProblem

ENV_SOURCE = "environment"

Loc = tuple[str | int, ...]

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


class _Unparsable(ValueError):
    """The variable's text is not the kind of value it must hold; the message says what was expected."""


def parse_bool(raw: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` in any letter case."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _Unparsable("expected true or false (also accepted: 1/0, yes/no, on/off)")


def _number(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise _Unparsable("expected a number") from None
    if not math.isfinite(value):
        raise _Unparsable("expected a finite number")
    return value


def _minutes_as_seconds(raw: str) -> float:
    return _number(raw) * 60.0


def _text(raw: str) -> str:
    return raw.strip()


def _bootstrap_mode(raw: str) -> str:
    # Any case, as the earlier tool took it (`watch` is a mode of its own: loop + node events).
    return raw.strip().lower()


def _path(raw: str) -> Path:
    word = raw.strip()
    if "\0" in word:
        raise _Unparsable(NUL_IN_PATH)
    return Path(word)


def _log_file(raw: str) -> Path | None:
    word = raw.strip()
    if word.lower() in TRUE_WORDS:
        return DEFAULT_LOG_FILE
    if word.lower() in FALSE_WORDS:
        return None
    if word.startswith("/"):
        return _path(word)
    raise _Unparsable(f"expected true (log to {DEFAULT_LOG_FILE}), false (no log file) or an absolute file path")


def _cron(raw: str) -> str:
    # A cron line is often quoted in compose files: "0 */4 * * *" arrives with its quotes when written so.
    return raw.strip().strip("'\"").strip()


def _int(raw: str) -> int:
    value = _number(raw)
    if value != int(value):
        raise _Unparsable("expected a whole number")
    return int(value)


@dataclass(frozen=True)
class EnvVar:
    """One overriding variable: where its value goes and how its text is read."""

    name: str
    loc: Loc
    parse: Callable[[str], object]
    meaning: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("STACK_NAME", ("stack",), _text, "default stack of anchor and dependent names"),
    EnvVar("RELABEL_TIME", ("reconcile", "resync_interval_seconds"), _number, "seconds between resyncs"),
    EnvVar("EVENT_MODE", ("reconcile", "event_mode"), parse_bool, "react to Swarm events"),
    EnvVar("POLLING_MODE", ("reconcile", "polling_mode"), parse_bool, "resync periodically"),
    EnvVar("RESTART_DEPENDENTS", ("reconcile", "restart_dependents"), parse_bool, "restart dependents"),
    EnvVar("PRUNE_UNKNOWN_LABELS", ("labels", "prune"), parse_bool, "remove owned labels no longer set"),
    EnvVar("DRY_RUN", ("run", "dry_run"), parse_bool, "log changes instead of making them"),
    EnvVar("RUN_ONCE", ("run", "once"), parse_bool, "one cycle, then exit"),
    EnvVar("DEBUG", ("logging", "debug"), parse_bool, "debug logging"),
    EnvVar("LOG_TO_FILE", ("logging", "file"), _log_file, "log file"),
    EnvVar("BOOTSTRAP_MODE", ("bootstrap", "mode"), _bootstrap_mode, "bootstrap mode (watch: loop)"),
    EnvVar("LOOP_INTERVAL", ("bootstrap", "loop_interval_seconds"), _number, "bootstrap loop seconds"),
    EnvVar("COMMAND_FILE", ("commands", "file"), _path, "command file"),
    EnvVar(
        "REBALANCE_MONITOR_INTERVAL_SECONDS",
        ("rebalance", "monitor_interval_seconds"),
        _number,
        "memory sampling seconds",
    ),
    EnvVar(
        "REBALANCE_GLOBAL_COOLDOWN_MINUTES",
        ("rebalance", "global_cooldown_seconds"),
        _minutes_as_seconds,
        "minutes between rebalances (stored as seconds)",
    ),
    EnvVar(
        "REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT",
        ("rebalance", "high_percent"),
        _number,
        "memory use that starts a rebalance",
    ),
    EnvVar("GC_CRON", ("hygiene", "gc", "schedule"), _cron, "garbage collection schedule (cron)"),
    EnvVar("GC_FORCE_IMAGE_REMOVAL", ("hygiene", "gc", "force_image_removal"), parse_bool, "remove multi-tag images"),
    EnvVar("GC_MINIMUM_IMAGES_TO_SAVE", ("hygiene", "gc", "keep_per_repository"), _int, "images kept per repository"),
    EnvVar("GC_FORCE_CONTAINER_REMOVAL", ("hygiene", "gc", "remove_containers"), parse_bool, "remove exited ones"),
    EnvVar("GC_GRACE_PERIOD_SECONDS", ("hygiene", "gc", "grace_period_seconds"), _number, "exited containers kept"),
    EnvVar("GC_DRY_RUN", ("hygiene", "gc", "dry_run"), parse_bool, "garbage collection lists, removes nothing"),
    EnvVar("GC_CLEAN_UP_VOLUMES", ("hygiene", "gc", "remove_anonymous_volumes"), parse_bool, "remove orphan volumes"),
    EnvVar("MOD_MANAGER_DEST", ("mods", "cache_dir"), _path, "the mod cache directory (in the agent)"),
    EnvVar(
        "MOD_MANAGER_REFRESH_INTERVAL_MINUTES",
        ("mods", "refresh_interval_seconds"),
        _minutes_as_seconds,
        "minutes between mod refreshes (stored as seconds)",
    ),
)


@dataclass(frozen=True)
class EnvOverride:
    """A parsed override: the variable, the field it sets, the typed value and the text it came from."""

    var: str
    loc: Loc
    value: object
    raw: str


def read_env_overrides(env: Mapping[str, str]) -> tuple[list[EnvOverride], list[ConfigProblem]]:
    """Parse every set override variable; collect a problem for each one that cannot be read."""
    overrides: list[EnvOverride] = []
    problems: list[ConfigProblem] = []
    for var in ENV_VARS:
        raw = env.get(var.name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = var.parse(raw)
        except _Unparsable as e:
            problems.append(ConfigProblem(ENV_SOURCE, var.name, f"{e}, found {raw!r}"))
            continue
        overrides.append(EnvOverride(var.name, var.loc, value, raw))
    return overrides, problems
