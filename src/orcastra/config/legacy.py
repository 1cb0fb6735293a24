"""The earlier tool's files: named by ``NODES_FILE`` / ``DEPENDENCIES_FILE`` or found in its directory.

The earlier tool read ``nodes.yml``, ``dependencies.yml`` and the combined ``swarm.yml`` from
``/etc/swarm-orchestration/`` (its compose file mounts ``./config`` there). Those files are read when a
variable names them or when the legacy directory (``ORCASTRA_LEGACY_DIR``, else that default) holds them.

Shapes:

- ``nodes.yml`` maps hostname to ``{ip, labels}``, or is in the combined layout below (the earlier tool's
  own seed wrote it so);
- ``dependencies.yml`` maps anchor to ``{stack, services, restart_dependents, retry_intervals}`` or simply
  to a list of services;
- ``swarm.yml`` (combined): ``leader``, ``advertise_addr``, ``nodes``, ``options``
  (``prune_unknown_labels``) and ``dependencies``.

Their entries join the main file's ``nodes`` and ``anchors`` and are validated by the same schema; problems
in them name the legacy file, with paths relative to its top level and their line.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orcastra.config.env import ENV_SOURCE
from orcastra.config.source import FILE_NOT_FOUND, NUL_IN_PATH, Document, loc_part, read_yaml
from orcastra.domain.wording import describe, format_path
from orcastra.errors import ConfigProblem

Loc = tuple[str | int, ...]

NODES_FILE_VAR = "NODES_FILE"
DEPENDENCIES_FILE_VAR = "DEPENDENCIES_FILE"
LEGACY_DIR_VAR = "ORCASTRA_LEGACY_DIR"
DEFAULT_LEGACY_DIR = Path("/etc/swarm-orchestration")

NODES_FILE_NAME = "nodes.yml"
DEPENDENCIES_FILE_NAME = "dependencies.yml"
COMBINED_FILE_NAME = "swarm.yml"
# Files of the earlier tool's config directory that Orcastra does not read (yet): reported, never ignored.
UNSUPPORTED_FILE_NAMES = ("rebalance_config.yml", "node_exporter_deploy.yml")

EXPECTED_MAPPING = "expected a mapping (key: value)"
COMBINED_KEYS = ("leader", "advertise_addr", "nodes", "options", "dependencies")
# options.<key> of the combined layout -> the setting it maps to.
OPTION_LOCS: Mapping[str, Loc] = {"prune_unknown_labels": ("labels", "prune")}


@dataclass(frozen=True)
class LegacyFile:
    """Entries of one legacy file, shaped like the main file's section they join."""

    var: str
    """The variable that named the file; empty when it was found in the legacy directory."""
    section: str
    document: Document
    entries: Mapping[object, object]
    list_form: frozenset[object] = frozenset()
    """Anchors written as ``anchor: [svc, ...]``; their ``services`` key exists only after reading."""
    inner: Loc = ()
    """Where the entries sit in the file: ``()`` at the top level, ``("nodes",)`` in the combined layout."""


@dataclass(frozen=True)
class LegacySetting:
    """One single setting a legacy file gives (``options.prune_unknown_labels`` -> ``labels.prune``)."""

    loc: Loc
    value: object
    document: Document
    inner: Loc


@dataclass
class LegacyRead:
    """Everything read from the legacy files, and what could not be."""

    files: list[LegacyFile] = field(default_factory=list)
    settings: list[LegacySetting] = field(default_factory=list)
    discovered: list[Path] = field(default_factory=list)
    """Files found in the legacy directory without a variable naming them: they turn legacy mode on."""
    unsupported_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)


def resolve_legacy_dir(env: Mapping[str, str], override: Path | None = None) -> Path:
    """The earlier tool's config directory: ``override``, else ``$ORCASTRA_LEGACY_DIR``, else the default."""
    if override is not None:
        return override
    raw = env.get(LEGACY_DIR_VAR, "").strip()
    return Path(raw) if raw and "\0" not in raw else DEFAULT_LEGACY_DIR


def read_legacy_files(env: Mapping[str, str], directory: Path | None = None) -> LegacyRead:
    """Read the legacy files named in ``env`` or found in the legacy directory; collect every problem."""
    read = LegacyRead()
    where = resolve_legacy_dir(env, directory)
    if "\0" in env.get(LEGACY_DIR_VAR, ""):
        read.problems.append(ConfigProblem(ENV_SOURCE, LEGACY_DIR_VAR, NUL_IN_PATH))
    for var, name, section in (
        (NODES_FILE_VAR, NODES_FILE_NAME, "nodes"),
        (DEPENDENCIES_FILE_VAR, DEPENDENCIES_FILE_NAME, "anchors"),
        ("", COMBINED_FILE_NAME, "combined"),
    ):
        raw = env.get(var, "").strip() if var else ""
        if raw:
            if "\0" in raw:
                read.problems.append(ConfigProblem(ENV_SOURCE, var, NUL_IN_PATH))
                continue
            path = Path(raw)
        else:
            path = where / name
            if not _exists(path):
                continue
            read.discovered.append(path)
        _read_one(read, path, var if raw else "", section)
    read.unsupported_files.extend(p for name in UNSUPPORTED_FILE_NAMES if _exists(p := where / name))
    return read


def legacy_file_paths(env: Mapping[str, str], directory: Path | None = None) -> tuple[Path, ...]:
    """Every path ``read_legacy_files`` reads when it exists: what the daemon watches to reload on a change
    (a file that appears or goes away counts too)."""
    where = resolve_legacy_dir(env, directory)
    out = []
    for var, name in ((NODES_FILE_VAR, NODES_FILE_NAME), (DEPENDENCIES_FILE_VAR, DEPENDENCIES_FILE_NAME)):
        raw = env.get(var, "").strip()
        if "\0" not in raw:
            out.append(Path(raw) if raw else where / name)
    return (*out, where / COMBINED_FILE_NAME)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long, or a directory we may not search: nothing to discover
        return False


def _read_one(read: LegacyRead, path: Path, var: str, section: str) -> None:
    document, found = read_yaml(path)
    if found and document is None and found[0].message == FILE_NOT_FOUND and var:
        # Say where the path came from: the user may not remember setting the variable.
        found = [ConfigProblem(found[0].source, "", f"{FILE_NOT_FOUND} (named by {var})")]
    read.problems.extend(found)
    if document is None:
        return
    data = document.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = {
            "nodes": "hostname to settings",
            "anchors": "anchor to settings",
            "combined": "settings (" + ", ".join(COMBINED_KEYS) + ")",
        }[section]
        read.problems.append(
            ConfigProblem(document.source, "", f"the top level must be a mapping of {what}, found {describe(data)}")
        )
        return
    if section == "combined" or (section == "nodes" and any(key in COMBINED_KEYS for key in data)):
        # The earlier tool's own nodes.yml already had the combined layout (leader, nodes, options).
        _read_combined(read, document, data, var)
        return
    read.files.append(_section_file(var, section, document, data, ()))


def _section_file(
    var: str, section: str, document: Document, entries: Mapping[object, object], inner: Loc
) -> LegacyFile:
    list_form: frozenset[object] = frozenset()
    if section == "anchors":
        # `db: [web, worker]` is the short form of `db: {services: [web, worker]}`.
        list_form = frozenset(name for name, value in entries.items() if isinstance(value, list))
        entries = {name: {"services": value} if name in list_form else value for name, value in entries.items()}
    return LegacyFile(var, section, document, entries, list_form, inner)


def _problem(document: Document, inner: Loc, message: str) -> ConfigProblem:
    line = document.line_of(inner)
    return ConfigProblem(document.source, format_path(inner), message + (f" (line {line})" if line else ""))


def _unknown(key: object, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r} (expected one of: {', '.join(allowed)}){hint}"


def _read_combined(read: LegacyRead, document: Document, data: Mapping[object, object], var: str) -> None:
    """The combined layout: each key mapped to today's settings; an unknown key is a problem."""
    nodes: dict[object, object] = {}
    leader: str | None = None
    advertise: str | None = None
    for key, value in data.items():
        part = loc_part(key)
        if key in ("nodes", "dependencies"):
            if value is None:
                continue
            if not isinstance(value, dict):
                read.problems.append(_problem(document, (part,), f"{EXPECTED_MAPPING}, found {describe(value)}"))
                continue
            if key == "nodes":
                nodes = dict(value)
            else:
                read.files.append(_section_file(var, "anchors", document, value, ("dependencies",)))
        elif key == "options":
            _read_options(read, document, value)
        elif key == "leader":
            leader = _text_value(read, document, part, value)
        elif key == "advertise_addr":
            advertise = _address_value(read, document, part, value)
        else:
            read.problems.append(_problem(document, (part,), _unknown(key, COMBINED_KEYS)))
    _place_leader(read, document, nodes, leader, advertise)
    if nodes:
        read.files.append(LegacyFile(var, "nodes", document, nodes, frozenset(), ("nodes",)))


def _text_value(read: LegacyRead, document: Document, part: str | int, value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    read.problems.append(_problem(document, (part,), f"expected text, found {describe(value)}"))
    return None


def _address_value(read: LegacyRead, document: Document, part: str | int, value: object) -> str | None:
    text = _text_value(read, document, part, value)
    if text is None:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        read.problems.append(_problem(document, (part,), f"expected an IPv4 or IPv6 address, found {text!r}"))
        return None
    return text


def _read_options(read: LegacyRead, document: Document, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        read.problems.append(_problem(document, ("options",), f"{EXPECTED_MAPPING}, found {describe(value)}"))
        return
    for option, setting in value.items():
        inner: Loc = ("options", loc_part(option))
        loc = OPTION_LOCS.get(option) if isinstance(option, str) else None
        if loc is None:
            read.problems.append(_problem(document, inner, _unknown(option, tuple(OPTION_LOCS))))
            continue
        read.settings.append(LegacySetting(loc, setting, document, inner))


def _place_leader(
    read: LegacyRead, document: Document, nodes: dict[object, object], leader: str | None, advertise: str | None
) -> None:
    """``leader`` is a manager; ``advertise_addr`` is its address (the leader's ``ip`` when it has none)."""
    if leader is None:
        if advertise is not None:
            read.notes.append(
                f"{document.source}: advertise_addr {advertise} is not used without a leader: each node's "
                "ip is its address"
            )
        return
    entry = nodes.get(leader)
    if not isinstance(entry, dict):
        read.notes.append(
            f"{document.source}: leader {leader!r} is not listed under nodes, so it is not used; list it "
            "there (its role becomes manager)"
        )
        return
    entry = dict(entry)
    entry.setdefault("role", "manager")
    if advertise is not None:
        ip = entry.setdefault("ip", advertise)
        if ip != advertise:
            read.notes.append(
                f"{document.source}: advertise_addr {advertise} differs from the leader's ip {ip}; the ip is used"
            )
    nodes[leader] = entry
