"""Loading the configuration: file, legacy files and environment merged, validated, every problem reported.

The sources are merged into one raw mapping first and validated once, so a value is checked the same way
wherever it came from. Each source keeps an ``_Origin`` (where its content sits in the merged data, and
its own file, paths and lines), and each problem is traced back through it: a bad value from
``NODES_FILE`` names that file and its line, a bad ``RELABEL_TIME`` names the variable.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from orcastra.config.env import ENV_SOURCE, EnvOverride, read_env_overrides
from orcastra.config.legacy import LegacyFile, LegacyRead, read_legacy_files
from orcastra.config.legacy_mode import (
    LEGACY_DEFAULTS,
    WATCH_NOTE,
    detect_legacy_mode,
    implied_defaults,
    is_set,
    watch_requested,
)
from orcastra.config.model import Config
from orcastra.config.report import error_messages
from orcastra.config.source import FILE_NOT_FOUND, Document, loc_part, read_yaml
from orcastra.domain.wording import describe, format_path, one_line, printable
from orcastra.errors import ConfigError, ConfigProblem
from orcastra.features.rebalance.settings import RebalanceSettings

DEFAULT_CONFIG_PATH = Path("/etc/orcastra/orcastra.yml")
CONFIG_PATH_VAR = "ORCASTRA_CONFIG"

Loc = tuple[str | int, ...]


def resolve_config_path(cli_value: Path | None, env: Mapping[str, str]) -> Path:
    """The config file to read: the command-line value, else ``$ORCASTRA_CONFIG``, else the default."""
    if cli_value is not None:
        return cli_value
    from_env = env.get(CONFIG_PATH_VAR, "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


@dataclass(frozen=True)
class LoadReport:
    """A loaded configuration and what the loader wants a person to know about it.

    ``notes``: one line per thing worth saying once (a legacy value the main file overrides, a derived
    value, a legacy key read in a new way). ``legacy_summary``: the one "legacy mode: ..." line when an
    earlier-tool deployment was detected, else None; the daemon prints it once at start.
    """

    config: Config
    notes: tuple[str, ...] = ()
    legacy_summary: str | None = None


def load_config(
    path: Path | None, env: Mapping[str, str], *, required: bool = True, legacy_dir: Path | None = None
) -> Config:
    """Read, merge and validate the configuration; raise one ``ConfigError`` listing every problem.

    ``path`` None means no file at all (defaults, legacy files and environment only). With
    ``required=False`` a file that does not exist is treated the same way; any other problem with it
    (a directory, unreadable, not UTF-8, bad YAML) is still reported. ``legacy_dir`` is where the earlier
    tool's files are looked for (default: ``$ORCASTRA_LEGACY_DIR``, else ``/etc/swarm-orchestration``).

    Nothing but ``ConfigError`` leaves this function: the daemon calls it again whenever the file changes
    and keeps its previous configuration on a ``ConfigError``; any other exception would stop it.
    """
    return load_config_report(path, env, required=required, legacy_dir=legacy_dir).config


def load_config_report(
    path: Path | None, env: Mapping[str, str], *, required: bool = True, legacy_dir: Path | None = None
) -> LoadReport:
    """``load_config``, with the notes and the legacy-mode summary line next to the configuration."""
    try:
        return _load(path, env, required=required, legacy_dir=legacy_dir)
    except ConfigError:
        raise
    except Exception as e:  # a bug of ours: still a refused configuration, never a dead daemon
        where = str(path) if path is not None else "configuration"
        raise ConfigError([ConfigProblem(where, "", f"{INTERNAL_ERROR} ({type(e).__name__})")]) from e


INTERNAL_ERROR = "could not be checked because of an error in Orcastra itself; please report it with the file"


@dataclass
class _Merge:
    """The merged raw data and what is known about where each part came from."""

    data: dict[object, object] = field(default_factory=dict)
    origins: list[_Origin] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    legacy_values: dict[Loc, object] = field(default_factory=dict)
    """Single settings a legacy file supplied, so an environment variable overriding one is noted."""


def _load(path: Path | None, env: Mapping[str, str], *, required: bool, legacy_dir: Path | None) -> LoadReport:
    merge = _Merge()
    if path is not None:
        _read_main(merge, path, required=required)
    legacy = read_legacy_files(env, legacy_dir)
    merge.problems.extend(legacy.problems)
    merge.notes.extend(legacy.notes)
    _merge_legacy_read(merge, legacy, str(path) if path is not None else "the main configuration")

    summary = detect_legacy_mode(env, legacy.discovered, legacy.unsupported_files)
    if summary is not None:
        # The earlier tool's defaults, below the files and the environment.
        for default in (*LEGACY_DEFAULTS, *implied_defaults(env)):
            if (
                _get_at(merge.data, default.loc) is _ABSENT
                and not is_set(env, default.var)
                and _set_at(merge.data, default.loc, default.value)
            ):
                summary.differs.append(default.shown)
    if watch_requested(env):
        merge.notes.append(WATCH_NOTE)
    _apply_env(merge, env)

    problems, origins = merge.problems, merge.origins
    config: Config | None = None
    try:
        config = Config.model_validate(merge.data)
    except ValidationError as e:
        located = [_locate(err.loc, err.message, origins, is_key=err.is_key) for err in error_messages(e, Config)]
        # Pydantic reports field errors before cross checks; a person fixing files wants file order.
        rank = {source: i for i, source in enumerate(_source_order(origins))}
        located.sort(key=lambda item: (rank.get(item[0].source, len(rank)), item[1] or 0))
        problems.extend(problem for problem, _ in located)

    if problems or config is None:
        # Whatever a message quotes (a path, a YAML error's text), it stays one printable line.
        raise ConfigError([ConfigProblem(one_line(p.source), one_line(p.path), one_line(p.message)) for p in problems])
    return LoadReport(
        config,
        tuple(one_line(n) for n in merge.notes),
        one_line(summary.line()) if summary is not None else None,
    )


def _read_main(merge: _Merge, path: Path, *, required: bool) -> None:
    source = str(path)
    document, found = read_yaml(path, source)
    if not required and document is None and [p.message for p in found] == [FILE_NOT_FOUND]:
        found = []
    merge.problems.extend(found)
    if document is None:
        return
    merge.origins.append(_Origin((), document))
    if isinstance(document.data, dict):
        merge.data = copy.deepcopy(document.data)
    elif document.data is not None:
        merge.problems.append(
            ConfigProblem(
                source,
                "",
                f"the top level must be a mapping of settings (key: value), found {describe(document.data)}",
            )
        )
        # Nothing of the file can be checked further; env and legacy files still can.


def _merge_legacy_read(merge: _Merge, legacy: LegacyRead, main_source: str) -> None:
    """Legacy entries and settings join the data; where the main file has them already, it wins (noted)."""
    data = merge.data
    main_keys = {
        section: set(value) if isinstance(value := data.get(section), dict) else set()
        for section in ("nodes", "anchors")
    }
    for legacy_file in legacy.files:
        merge.problems.extend(
            _merge_legacy(data, legacy_file, merge.origins, main_keys[legacy_file.section], merge.notes)
        )
    for setting in legacy.settings:
        current = _get_at(data, setting.loc)
        if current is not _ABSENT:
            if current != setting.value:
                merge.notes.append(
                    f"{_where(setting.document, setting.inner)} is overridden by {main_source} "
                    f"({format_path(setting.loc)}: {printable(str(current))}): the main configuration wins"
                )
            continue
        if _set_at(data, setting.loc, copy.deepcopy(setting.value)):
            merge.legacy_values[setting.loc] = setting.value
            merge.origins.append(_Origin(setting.loc, setting.document, setting.inner))


def _apply_env(merge: _Merge, env: Mapping[str, str]) -> None:
    overrides, found = read_env_overrides(env)
    merge.problems.extend(found)
    for override in overrides:
        legacy_value = merge.legacy_values.get(override.loc, _ABSENT)
        if legacy_value is not _ABSENT and legacy_value != override.value:
            merge.notes.append(
                f"{override.var}={printable(override.raw)} overrides {format_path(override.loc)} of a legacy "
                "file: the environment wins"
            )
        if _set_at(merge.data, override.loc, override.value):
            merge.origins.append(_Origin(override.loc, None, env=override))
            if override.loc == HIGH_PERCENT_LOC:
                merge.notes.extend(_derive_target_percent(merge.data, override))


HIGH_PERCENT_LOC: Loc = ("rebalance", "high_percent")
TARGET_PERCENT_LOC: Loc = ("rebalance", "target_percent")
TARGET_BELOW_HIGH_POINTS = 15.0


def _derive_target_percent(data: dict[object, object], override: EnvOverride) -> list[str]:
    """The earlier tool had one threshold: give ``target_percent`` a value below it when none was given.

    Only when today's default target would not be below the threshold, so a configuration valid today keeps
    its meaning: ``threshold - 15`` points, or half the threshold when that is higher (it stays above 0).
    """
    high = override.value
    default = RebalanceSettings.model_fields["target_percent"].default
    if _get_at(data, TARGET_PERCENT_LOC) is not _ABSENT or not isinstance(high, float):
        return []
    if not 0 < high <= 100 or default < high:
        return []
    target = max(high - TARGET_BELOW_HIGH_POINTS, high / 2)
    _set_at(data, TARGET_PERCENT_LOC, target)
    return [
        f"rebalance.target_percent is {target:g}, derived from {override.var}={high:g} (today's default "
        f"{default:g} must be below it; set rebalance.target_percent to choose)"
    ]


_ABSENT = object()


def _get_at(data: dict[object, object], loc: Loc) -> object:
    target: object = data
    for part in loc:
        if not isinstance(target, dict) or part not in target:
            return _ABSENT
        target = target[part]
    return target


def _where(document: Document, inner: Loc) -> str:
    line = document.line_of(inner)
    return f"{document.source}: {format_path(inner)}" + (f" (line {line})" if line is not None else "")


@dataclass(frozen=True)
class _Origin:
    """Where one source's content sits in the merged data (``prefix``) and what it is in its own file."""

    prefix: Loc
    document: Document | None
    inner_prefix: Loc = ()
    env: EnvOverride | None = None


def _merge_legacy(
    data: dict[object, object],
    legacy: LegacyFile,
    origins: list[_Origin],
    main_keys: set[object],
    notes: list[str],
) -> list[ConfigProblem]:
    """Add a legacy file's entries to the merged section.

    An entry the main file also defines is left out (the main configuration wins; noted once); one that
    another legacy file already gave is a problem, since neither of them is the one to prefer.
    """
    problems: list[ConfigProblem] = []
    section = data.setdefault(legacy.section, {})
    if not isinstance(section, dict):
        # The main file's section is malformed (a list, null...); the schema reports that, and merging
        # into it would only hide the mistake.
        return problems
    main = origins[0].document if origins and origins[0].prefix == () else None
    what = "node" if legacy.section == "nodes" else "anchor"
    for key, value in legacy.entries.items():
        part = loc_part(key)
        inner = (*legacy.inner, part)
        if key in main_keys:
            where = main.source if main is not None else "the main configuration"
            if main is not None:
                line = main.line_of((legacy.section, part))
                where += f" ({format_path((legacy.section, part))}" + (f", line {line})" if line is not None else ")")
            notes.append(
                f"{_where(legacy.document, inner)}: {what} {key!r} is also defined in {where}; the main "
                "configuration wins and this entry is not used"
            )
            continue
        if key in section:
            other = next(
                (o.document.source for o in reversed(origins) if o.prefix == (legacy.section, part) and o.document),
                "another legacy file",
            )
            line = legacy.document.line_of(inner)
            problems.append(
                ConfigProblem(
                    legacy.document.source,
                    format_path(inner),
                    f"{what} {key!r} is also defined in {other}; define it in one place only"
                    + (f" (line {line})" if line is not None else ""),
                )
            )
            continue
        section[key] = copy.deepcopy(value)
        origins.append(_Origin((legacy.section, part), legacy.document, inner))
        if key in legacy.list_form:
            # `db: [web]` became `db: {services: [web]}`: map `services[i]` back to `db[i]` in the file.
            origins.append(_Origin((legacy.section, part, "services"), legacy.document, inner))
    return problems


def _set_at(data: dict[object, object], loc: Loc, value: object) -> bool:
    """Put an environment value at ``loc``, creating missing sections; False if a section is malformed."""
    target = data
    for part in loc[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            # e.g. `reconcile: 5` in the file: the schema reports the file's mistake.
            return False
        target = child
    target[loc[-1]] = value
    return True


def _source_order(origins: list[_Origin]) -> list[str]:
    order: list[str] = []
    for origin in origins:
        name = origin.document.source if origin.document is not None else ENV_SOURCE
        if name not in order:
            order.append(name)
    return order


def _locate(
    loc: Loc, message: str, origins: list[_Origin], *, is_key: bool = False
) -> tuple[ConfigProblem, int | None]:
    """Attribute a problem at ``loc`` in the merged data to the source that supplied that value."""
    best: _Origin | None = None
    for origin in origins:
        if loc[: len(origin.prefix)] == origin.prefix and (best is None or len(origin.prefix) > len(best.prefix)):
            best = origin
    if best is not None and best.env is not None:
        return (
            ConfigProblem(
                ENV_SOURCE, best.env.var, f"{message} (value {best.env.raw!r} for {format_path(best.env.loc)})"
            ),
            None,
        )
    from_env = [o.env for o in origins if o.env is not None and o.env.loc[: len(loc)] == loc]
    if from_env:
        # A check over a whole section (event_mode vs polling_mode...) saw values from variables.
        message += " (from the environment: " + ", ".join(f"{e.var}={printable(e.raw)}" for e in from_env) + ")"
    if best is None or best.document is None:
        # No file supplied this location (for example only the environment was used).
        return ConfigProblem(ENV_SOURCE if from_env else "configuration", format_path(loc), message), None
    inner = best.inner_prefix + loc[len(best.prefix) :]
    line = best.document.line_of(inner)
    suffix = f" (line {line})" if line is not None else ""
    # A bad key is named in the message; the path is where it sits, since the key itself is no name.
    path = format_path(inner[:-1] if is_key else inner)
    return ConfigProblem(best.document.source, path, message + suffix), line
