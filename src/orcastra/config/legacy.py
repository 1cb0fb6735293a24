"""The earlier tool's split files, named by ``NODES_FILE`` and ``DEPENDENCIES_FILE``, read for merging.

``nodes.yml`` maps hostname to ``{ip, labels}``; ``dependencies.yml`` maps anchor to
``{stack, services, restart_dependents, retry_intervals}`` or simply to a list of services. Their entries
join the main file's ``nodes`` and ``anchors`` and are validated by the same schema; problems in them
name the legacy file, with paths relative to its top level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orcastra.config.env import ENV_SOURCE
from orcastra.config.source import FILE_NOT_FOUND, NUL_IN_PATH, Document, read_yaml
from orcastra.domain.wording import describe
from orcastra.errors import ConfigProblem

NODES_FILE_VAR = "NODES_FILE"
DEPENDENCIES_FILE_VAR = "DEPENDENCIES_FILE"


@dataclass(frozen=True)
class LegacyFile:
    """Entries of one legacy file, shaped like the main file's section they join."""

    var: str
    section: str
    document: Document
    entries: Mapping[object, object]
    list_form: frozenset[object] = frozenset()
    """Anchors written as ``anchor: [svc, ...]``; their ``services`` key exists only after reading."""


def read_legacy_files(env: Mapping[str, str]) -> tuple[list[LegacyFile], list[ConfigProblem]]:
    """Read the legacy files named in ``env`` (either may be unset); collect every problem."""
    files: list[LegacyFile] = []
    problems: list[ConfigProblem] = []
    for var, section in ((NODES_FILE_VAR, "nodes"), (DEPENDENCIES_FILE_VAR, "anchors")):
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if "\0" in raw:
            problems.append(ConfigProblem(ENV_SOURCE, var, NUL_IN_PATH))
            continue
        document, found = read_yaml(Path(raw))
        if found and document is None and found[0].message == FILE_NOT_FOUND:
            # Say where the path came from: the user may not remember setting the variable.
            found = [ConfigProblem(found[0].source, "", f"{FILE_NOT_FOUND} (named by {var})")]
        problems.extend(found)
        if document is None:
            continue
        if document.data is None:
            entries: Mapping[object, object] = {}
        elif isinstance(document.data, dict):
            entries = document.data
        else:
            problems.append(
                ConfigProblem(
                    document.source,
                    "",
                    f"the top level must be a mapping of {'hostname' if section == 'nodes' else 'anchor'} "
                    f"to settings, found {describe(document.data)}",
                )
            )
            continue
        list_form: frozenset[object] = frozenset()
        if section == "anchors":
            # `db: [web, worker]` is the short form of `db: {services: [web, worker]}`.
            list_form = frozenset(name for name, value in entries.items() if isinstance(value, list))
            entries = {name: {"services": value} if name in list_form else value for name, value in entries.items()}
        files.append(LegacyFile(var, section, document, entries, list_form))
    return files, problems
