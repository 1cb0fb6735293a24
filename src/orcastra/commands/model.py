"""Commands as data, and the command file as text: parse entries, and remove one entry keeping the rest as written.

An entry is either a string (``sync``, ``"restart app"``) or a mapping (``{command: restart, service: app}``).
Parsing never raises for a bad entry: it returns a ``Malformed`` with a message, so one bad entry is reported
and the others still run. Only a file that is not YAML (or not a list) is an error for the whole file.

Removing an entry edits the text line by line, so the operator's other entries, comments and quoting stay as
they wrote them; when the layout does not allow that (a flow list ``[sync, pause]``, two entries on one line),
the remaining entries are written out again by the YAML dumper, and the result is checked either way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import yaml

from orcastra.errors import PermanentError, cut

CommandName = Literal[
    "sync", "restart", "rebalance", "drain", "activate", "reboot", "pause", "resume", "relabel", "bootstrap"
]
COMMAND_NAMES: tuple[CommandName, ...] = get_args(CommandName)
ArgumentKind = Literal["service", "node"]

# Which argument each command takes (None: no argument). The key is also the mapping form's field name.
ARGUMENTS: Mapping[CommandName, ArgumentKind | None] = {
    "sync": None,
    "restart": "service",
    "rebalance": None,
    "drain": "node",
    "activate": "node",
    "reboot": "node",
    "pause": None,
    "resume": None,
    "relabel": None,
    "bootstrap": None,
}

# Swarm service names and node hostnames/IDs: letters, digits, '_', '.', '-'. Anything else (spaces, quotes,
# slashes) is a typo, and refusing it early gives a clearer message than the Engine's 404.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@dataclass(frozen=True)
class Command:
    """One well-formed command: its name and, for restart/drain/activate/reboot, the service or node."""

    name: CommandName
    target: str | None = None

    def __post_init__(self) -> None:
        kind = ARGUMENTS[self.name]
        if (kind is None) != (self.target is None):
            raise ValueError(f"{self.name}: target {self.target!r} does not fit (expects {kind or 'none'})")

    @property
    def argument(self) -> ArgumentKind | None:
        return ARGUMENTS[self.name]

    def to_entry(self) -> dict[str, str]:
        """The mapping form, e.g. ``{"command": "restart", "service": "app"}`` (what the API accepts)."""
        kind = self.argument
        return (
            {"command": self.name} if kind is None or self.target is None else {"command": self.name, kind: self.target}
        )

    def __str__(self) -> str:
        return self.name if self.target is None else f"{self.name} {self.target}"


@dataclass(frozen=True)
class Malformed:
    """An entry that is not a command; ``message`` says why, in words an operator can act on."""

    message: str


def _usage(name: CommandName) -> str:
    kind = ARGUMENTS[name]
    return name if kind is None else f"{name} {kind.upper()}"


def _check_name(name: CommandName, value: object) -> str | Malformed:
    kind = ARGUMENTS[name]
    if not isinstance(value, str):
        return Malformed(f"{name}: {kind} must be a name (a string), got {type(value).__name__}")
    if not _NAME.fullmatch(value):
        return Malformed(f"{name}: {value!r} is not a valid {kind} name")
    return value


def parse_words(words: Sequence[str]) -> Command | Malformed:
    """``["restart", "app"]`` -> ``Command("restart", "app")``; used by the string form and the CLI."""
    if not words:
        return Malformed("empty command")
    head, *rest = words
    if head not in ARGUMENTS:
        return Malformed(f"unknown command {head!r}; commands: {', '.join(COMMAND_NAMES)}")
    name: CommandName = head  # type: ignore[assignment]  # checked against ARGUMENTS just above
    kind = ARGUMENTS[name]
    if kind is None:
        if rest:
            return Malformed(f"{name} takes no argument, got {' '.join(rest)!r}")
        return Command(name)
    if len(rest) != 1:
        what = "is missing" if not rest else f"must be one word, got {' '.join(rest)!r}"
        return Malformed(f"{name}: the {kind} {what} (usage: {_usage(name)})")
    target = _check_name(name, rest[0])
    return target if isinstance(target, Malformed) else Command(name, target)


def parse_entry(entry: object) -> Command | Malformed:
    """Parse one entry of the command file or one API body: a string or a mapping."""
    if isinstance(entry, str):
        return parse_words(entry.split())
    if not isinstance(entry, Mapping):
        return Malformed(f"expected a command (a string or a mapping), got {_describe(entry)}")
    if "command" not in entry:
        return Malformed(f"mapping without a 'command' key: {_describe(entry)}")
    head = entry["command"]
    if not isinstance(head, str):
        return Malformed(f"'command' must be a string, got {_describe(head)}")
    words = head.split()
    if not words or words[0] not in ARGUMENTS:
        return parse_words(words)
    name: CommandName = words[0]  # type: ignore[assignment]  # checked against ARGUMENTS just above
    kind = ARGUMENTS[name]
    allowed = {"command"} | ({kind} if kind else set())
    extra = sorted(str(k) for k in entry if k not in allowed)
    if extra:
        return Malformed(f"{name}: unexpected key{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    if kind is not None and kind in entry:
        if len(words) > 1:
            return Malformed(f"{name}: give the {kind} either in 'command' or as '{kind}', not both")
        target = _check_name(name, entry[kind])
        return target if isinstance(target, Malformed) else Command(name, target)
    return parse_words(words)


def _describe(value: object) -> str:
    return cut(repr(value), 80) if value is not None else "nothing (null)"


# --- the file --------------------------------------------------------------------------------------------


class CommandFileError(PermanentError):
    """The command file is not valid YAML or not a list: it is reported once and nothing in it runs.
    ``line`` (1-based) is where the problem is, when YAML could tell."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Entry:
    """One entry of the command file: its position, its value as loaded, and its source text."""

    index: int
    value: object
    text: str
    line: int  # 1-based, for messages

    def parse(self) -> Command | Malformed:
        return parse_entry(self.value)


@dataclass(frozen=True)
class CommandFile:
    """The parsed command file. ``lines`` are the entries' (first, last) 0-based line numbers, or None when
    the layout cannot be edited line by line (then removal re-dumps the remaining values)."""

    text: str
    entries: tuple[Entry, ...]
    lines: tuple[tuple[int, int], ...] | None

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_command_file(text: str, source: str = "command file") -> CommandFile:
    """Parse the file's text. Raises ``CommandFileError`` for invalid YAML or a top level that is not a list;
    an empty file (or only comments) has no entries."""
    try:
        values = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        raise CommandFileError(f"{source} is not valid YAML: {_describe_yaml_error(e)}", _line(e)) from e
    except yaml.YAMLError as e:
        raise CommandFileError(f"{source} is not valid YAML: {cut(str(e))}") from e
    if values is None:
        return CommandFile(text, (), ())
    if not isinstance(values, list) or not isinstance(root, yaml.SequenceNode):
        line = root.start_mark.line + 1 if root is not None else None
        raise CommandFileError(
            f"{source} line {line}: expected a list of commands ('- sync', one a line),"
            f" got {_kind(values)} {_describe(values)}",
            line,
        )
    spans = _entry_spans(text, root)
    entries = tuple(
        Entry(
            index=i,
            value=value,
            text=text[node.start_mark.index : _end_index(node)].strip(),
            line=node.start_mark.line + 1,
        )
        for i, (value, node) in enumerate(zip(values, root.value, strict=True))
    )
    return CommandFile(text, entries, spans)


def _line(e: yaml.MarkedYAMLError) -> int | None:
    mark = e.problem_mark or e.context_mark
    return mark.line + 1 if mark is not None else None


def _describe_yaml_error(e: yaml.MarkedYAMLError) -> str:
    """PyYAML's message on one line, without its ``in "<unicode string>"`` and source excerpt:
    ``line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence
    from line 2, column 3)``."""

    def at(mark: yaml.Mark | None) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"

    where = at(e.problem_mark or e.context_mark)
    since = f" from {at(e.context_mark)}" if e.context_mark is not None else ""
    if e.problem and e.context and e.problem.startswith("but "):  # "expected X" + "but found Y"
        return cut(f"{where}: {e.context}{since} {e.problem}")
    text = f"{where}: {e.problem or e.context or 'cannot be read'}"
    if e.problem and e.context:
        text += f" ({e.context}{since})"
    return cut(text)


def _kind(value: object) -> str:
    names = {dict: "a mapping", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def _end_index(node: yaml.Node) -> int:
    """Index just past the node's last character. A block collection's ``end_mark`` is the start of the next
    token (possibly after comment lines), so for those the last child decides; empty scalars take no room."""
    if isinstance(node, yaml.ScalarNode):
        return node.end_mark.index
    if isinstance(node, yaml.CollectionNode) and node.flow_style:
        return node.end_mark.index
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            children += [key, value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    ends = [_end_index(c) for c in children if not _is_empty(c)]
    return max(ends, default=node.start_mark.index + 1)


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.start_mark.index == node.end_mark.index


def _entry_spans(text: str, root: yaml.SequenceNode) -> tuple[tuple[int, int], ...] | None:
    if root.flow_style:
        return None
    spans: list[tuple[int, int]] = []
    for node in root.value:
        # The dash may sit on an earlier line than the content ("-\n  command: sync"); find it.
        i = node.start_mark.index - 1
        while i >= 0 and text[i] in " \t\r\n":
            i -= 1
        if i < 0 or text[i] != "-":
            return None
        first = text.count("\n", 0, i)
        last = text.count("\n", 0, max(_end_index(node) - 1, i))
        if spans and first <= spans[-1][1]:
            return None  # two entries share a line
        spans.append((first, last))
    return tuple(spans)


def remove_entry(parsed: CommandFile, index: int) -> str:
    """The file's text without entry ``index``: the entry's lines cut out, everything else byte for byte.
    Falls back to dumping the remaining values when the layout is not line-based or the cut does not
    load back as exactly the remaining entries."""
    remaining = [e.value for e in parsed.entries if e.index != index]
    if parsed.lines:
        first, last = parsed.lines[index]
        lines = parsed.text.splitlines(keepends=True)
        text = "".join(lines[:first] + lines[last + 1 :])
        try:
            if (yaml.safe_load(text) or []) == remaining:
                return text
        except yaml.YAMLError:
            pass
    if not remaining:
        return ""
    return yaml.safe_dump(remaining, default_flow_style=False, sort_keys=False, allow_unicode=True)
