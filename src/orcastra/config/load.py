"""Loading the configuration: file, legacy files and environment merged, validated, every problem reported.

The sources are merged into one raw mapping first and validated once, so a value is checked the same way
wherever it came from. Each source keeps an ``_Origin`` (where its content sits in the merged data, and
its own file, paths and lines), and each problem is traced back through it: a bad value from
``NODES_FILE`` names that file and its line, a bad ``RELABEL_TIME`` names the variable.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from orcastra.config.env import ENV_SOURCE, EnvOverride, read_env_overrides
from orcastra.config.legacy import LegacyFile, read_legacy_files
from orcastra.config.model import Config
from orcastra.config.report import error_messages
from orcastra.config.source import FILE_NOT_FOUND, Document, loc_part, read_yaml
from orcastra.domain.wording import describe, format_path, one_line, printable
from orcastra.errors import ConfigError, ConfigProblem

DEFAULT_CONFIG_PATH = Path("/etc/orcastra/orcastra.yml")
CONFIG_PATH_VAR = "ORCASTRA_CONFIG"

Loc = tuple[str | int, ...]


def resolve_config_path(cli_value: Path | None, env: Mapping[str, str]) -> Path:
    """The config file to read: the command-line value, else ``$ORCASTRA_CONFIG``, else the default."""
    if cli_value is not None:
        return cli_value
    from_env = env.get(CONFIG_PATH_VAR, "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(path: Path | None, env: Mapping[str, str], *, required: bool = True) -> Config:
    """Read, merge and validate the configuration; raise one ``ConfigError`` listing every problem.

    ``path`` None means no file at all (defaults, legacy files and environment only). With
    ``required=False`` a file that does not exist is treated the same way; any other problem with it
    (a directory, unreadable, not UTF-8, bad YAML) is still reported.

    Nothing but ``ConfigError`` leaves this function: the daemon calls it again whenever the file changes
    and keeps its previous configuration on a ``ConfigError``; any other exception would stop it.
    """
    try:
        return _load(path, env, required=required)
    except ConfigError:
        raise
    except Exception as e:  # a bug of ours: still a refused configuration, never a dead daemon
        where = str(path) if path is not None else "configuration"
        raise ConfigError([ConfigProblem(where, "", f"{INTERNAL_ERROR} ({type(e).__name__})")]) from e


INTERNAL_ERROR = "could not be checked because of an error in Orcastra itself; please report it with the file"


def _load(path: Path | None, env: Mapping[str, str], *, required: bool) -> Config:
    problems: list[ConfigProblem] = []
    origins: list[_Origin] = []
    data: dict[object, object] = {}

    if path is not None:
        source = str(path)
        document, found = read_yaml(path, source)
        if not required and document is None and [p.message for p in found] == [FILE_NOT_FOUND]:
            found = []
        problems.extend(found)
        if document is not None:
            origins.append(_Origin((), document))
            if isinstance(document.data, dict):
                data = copy.deepcopy(document.data)
            elif document.data is not None:
                problems.append(
                    ConfigProblem(
                        source,
                        "",
                        f"the top level must be a mapping of settings (key: value), found {describe(document.data)}",
                    )
                )
                # Nothing of the file can be checked further; env and legacy files still can.

    legacy_files, found = read_legacy_files(env)
    problems.extend(found)
    for legacy in legacy_files:
        problems.extend(_merge_legacy(data, legacy, origins))

    overrides, found = read_env_overrides(env)
    problems.extend(found)
    for override in overrides:
        if _set_at(data, override.loc, override.value):
            origins.append(_Origin(override.loc, None, env=override))

    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        located = [_locate(err.loc, err.message, origins, is_key=err.is_key) for err in error_messages(e, Config)]
        # Pydantic reports field errors before cross checks; a person fixing files wants file order.
        rank = {source: i for i, source in enumerate(_source_order(origins))}
        located.sort(key=lambda item: (rank.get(item[0].source, len(rank)), item[1] or 0))
        problems.extend(problem for problem, _ in located)

    if problems or config is None:
        # Whatever a message quotes (a path, a YAML error's text), it stays one printable line.
        raise ConfigError([ConfigProblem(one_line(p.source), one_line(p.path), one_line(p.message)) for p in problems])
    return config


@dataclass(frozen=True)
class _Origin:
    """Where one source's content sits in the merged data (``prefix``) and what it is in its own file."""

    prefix: Loc
    document: Document | None
    inner_prefix: Loc = ()
    env: EnvOverride | None = None


def _merge_legacy(data: dict[object, object], legacy: LegacyFile, origins: list[_Origin]) -> list[ConfigProblem]:
    """Add a legacy file's entries to the merged section; an entry defined in both places is a problem."""
    problems: list[ConfigProblem] = []
    section = data.setdefault(legacy.section, {})
    if not isinstance(section, dict):
        # The main file's section is malformed (a list, null...); the schema reports that, and merging
        # into it would only hide the mistake.
        return problems
    main = origins[0].document if origins and origins[0].prefix == () else None
    for key, value in legacy.entries.items():
        part = loc_part(key)
        if key in section:
            where = ""
            if main is not None:
                line = main.line_of((legacy.section, part))
                where = f" ({main.source}: {format_path((legacy.section, part))}"
                where += f", line {line})" if line is not None else ")"
            what = "node" if legacy.section == "nodes" else "anchor"
            line = legacy.document.line_of((part,))
            problems.append(
                ConfigProblem(
                    legacy.document.source,
                    format_path((part,)),
                    f"{what} {key!r} is also defined in the main configuration{where}; define it in one "
                    f"place only" + (f" (line {line})" if line is not None else ""),
                )
            )
            continue
        section[key] = copy.deepcopy(value)
        origins.append(_Origin((legacy.section, part), legacy.document, (part,)))
        if key in legacy.list_form:
            # `db: [web]` became `db: {services: [web]}`: map `services[i]` back to `db[i]` in the file.
            origins.append(_Origin((legacy.section, part, "services"), legacy.document, (part,)))
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
