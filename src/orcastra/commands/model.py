"""Commands as data, and the command file as text: parse entries, and remove entries keeping the rest as written.

An entry is either a string (``sync``, ``"restart app"``) or a mapping (``{command: restart, service: app}``).
Parsing never raises for a bad entry: it returns a ``Malformed`` with a message, so one bad entry is reported
and the others still run; that includes entries YAML reads as something other than plain data (a date,
``!!binary``, ``!!set``, a bad ``!!int``: see ``yamltree``). Only a whole-file problem raises: a file over
``MAX_COMMAND_FILE_BYTES``, not valid YAML, with anchors or aliases, or not a list.

Removing entries edits the text line by line, so the operator's other entries, comments and quoting stay as
they wrote them; a flow list ``[sync, pause]`` is written again from the remaining entries' own text; when
neither reads back as exactly the remaining entries, they are written out by the YAML dumper."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import yaml
from yaml.resolver import Resolver

from orcastra.commands.yamltree import NotPlain, Refused, compose, plain
from orcastra.errors import PermanentError, cut

CommandName = Literal[
    "sync",
    "restart",
    "rebalance",
    "drain",
    "activate",
    "reboot",
    "pause",
    "resume",
    "relabel",
    "bootstrap",
    "update_dependents",
    "remove_all_labels",
    "refresh_mods",
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
    "update_dependents": None,
    "remove_all_labels": None,
    "refresh_mods": None,
}

# Commands that take ``--force`` (words form) / ``force: true`` (mapping form): a command that refuses when it
# could do harm, unless told to go ahead.
FORCE_FLAG = "--force"
FORCEABLE: frozenset[CommandName] = frozenset({"remove_all_labels"})

# A command file holds a few commands; reading a bigger one is not worth its time (YAML in Python is slow).
MAX_COMMAND_FILE_BYTES = 1024 * 1024
_NULL_TAG = "tag:yaml.org,2002:null"

# Swarm service names and node hostnames/IDs: letters, digits, '_', '.', '-'. Anything else (spaces, quotes,
# slashes) is a typo, and refusing it early gives a clearer message than the Engine's 404.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@dataclass(frozen=True)
class Command:
    """One well-formed command: its name and, for restart/drain/activate/reboot, the service or node."""

    name: CommandName
    target: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        kind = ARGUMENTS[self.name]
        if (kind is None) != (self.target is None):
            raise ValueError(f"{self.name}: target {self.target!r} does not fit (expects {kind or 'none'})")
        if self.force and self.name not in FORCEABLE:
            raise ValueError(f"{self.name} takes no {FORCE_FLAG}")

    @property
    def argument(self) -> ArgumentKind | None:
        return ARGUMENTS[self.name]

    def to_entry(self) -> dict[str, str | bool]:
        """The mapping form, e.g. ``{"command": "restart", "service": "app"}`` (what the API accepts)."""
        kind = self.argument
        entry: dict[str, str | bool] = {"command": self.name}
        if kind is not None and self.target is not None:
            entry[kind] = self.target
        if self.force:
            entry["force"] = True
        return entry

    def __str__(self) -> str:
        text = self.name if self.target is None else f"{self.name} {self.target}"
        return f"{text} {FORCE_FLAG}" if self.force else text


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


# The earlier Orcastra's command names that mean exactly one of today's (its trigger-bootstrap.sh appends
# ``- bootstrap_swarm``); the result names today's command.
ALIASES: Mapping[str, CommandName] = {
    "relabel_all": "relabel",
    "bootstrap_swarm": "bootstrap",
    "refresh-mods": "refresh_mods",
}


def parse_words(words: Sequence[str]) -> Command | Malformed:
    """``["restart", "app"]`` -> ``Command("restart", "app")``; used by the string form and the CLI."""
    if not words:
        return Malformed("empty command")
    head, *rest = words
    head = ALIASES.get(head, head)
    if head not in ARGUMENTS:
        return Malformed(f"unknown command {head!r}; commands: {', '.join(COMMAND_NAMES)}")
    name: CommandName = head  # type: ignore[assignment]  # checked against ARGUMENTS just above
    kind = ARGUMENTS[name]
    force = name in FORCEABLE and FORCE_FLAG in rest
    rest = [w for w in rest if not (force and w == FORCE_FLAG)]
    if kind is None:
        if rest:
            hint = f" (besides {FORCE_FLAG})" if name in FORCEABLE else ""
            return Malformed(f"{name} takes no argument{hint}, got {' '.join(rest)!r}")
        return Command(name, force=force)
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
    if words:
        words[0] = ALIASES.get(words[0], words[0])
    if not words or words[0] not in ARGUMENTS:
        return parse_words(words)
    name: CommandName = words[0]  # type: ignore[assignment]  # checked against ARGUMENTS just above
    kind = ARGUMENTS[name]
    allowed = {"command"} | ({kind} if kind else set()) | ({"force"} if name in FORCEABLE else set())
    extra = sorted(str(k) for k in entry if k not in allowed)
    if extra:
        return Malformed(f"{name}: unexpected key{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    if "force" in entry:
        force = entry["force"]
        if not isinstance(force, bool):
            return Malformed(f"{name}: 'force' must be true or false, got {_describe(force)}")
        parsed = parse_words(words)
        return parsed if isinstance(parsed, Malformed) or not force else Command(parsed.name, parsed.target, True)
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
    """The command file as a whole cannot be used (not valid YAML, not a list, too large, anchors or aliases): it
    is reported once and nothing in it runs. ``line`` (1-based) is where the problem is, when known; ``key``
    identifies a problem with the file itself rather than its content (reported once whatever the content)."""

    def __init__(self, message: str, line: int | None = None, *, key: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.key = key


@dataclass(frozen=True)
class Entry:
    """One entry of the command file: its position, its value (plain data; see ``yamltree.plain``), its source
    text, and ``problem`` when the value is not plain data (a date, ``!!binary``...: then ``value`` is None)."""

    index: int
    value: object
    text: str
    line: int  # 1-based, for messages
    problem: Malformed | None = None

    def parse(self) -> Command | Malformed:
        return self.problem or parse_entry(self.value)


@dataclass(frozen=True)
class CommandFile:
    """The parsed command file. ``lines`` are the entries' (first, last) 0-based line numbers, or None when
    the layout cannot be edited line by line; ``flow`` is the (start, end) of a flow list ``[a, b]``."""

    text: str
    entries: tuple[Entry, ...]
    lines: tuple[tuple[int, int], ...] | None
    flow: tuple[int, int] | None = None

    @cached_property
    def sha256(self) -> str:
        return text_sha256(self.text)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_command_file(text: str, source: str = "command file") -> CommandFile:
    """Parse the file's text. Raises ``CommandFileError`` for a whole-file problem: over
    ``MAX_COMMAND_FILE_BYTES``, invalid YAML, anchors or aliases, a top level that is not a list. An entry that
    is not plain data is an ``Entry`` with a ``problem``. An empty file (or only comments) has no entries."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError as e:  # a lone surrogate: no file read as UTF-8 holds one, but a caller's text may
        raise CommandFileError(f"{source} is not valid text (character {e.start + 1} cannot be encoded)") from e
    if size > MAX_COMMAND_FILE_BYTES:
        raise CommandFileError(f"{source} is {size} bytes, over the limit of {MAX_COMMAND_FILE_BYTES} (1 MiB)")
    try:
        root = compose(text)
    except Refused as e:
        raise CommandFileError(f"{source} line {e.line}: {e.message}", e.line) from e
    except yaml.MarkedYAMLError as e:
        raise CommandFileError(f"{source} is not valid YAML: {_describe_yaml_error(e)}", _line(e)) from e
    except yaml.YAMLError as e:
        raise CommandFileError(f"{source} is not valid YAML: {cut(str(e))}") from e
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
        return CommandFile(text, (), ())
    if not isinstance(root, yaml.SequenceNode) or root.tag != Resolver.DEFAULT_SEQUENCE_TAG:
        line = root.start_mark.line + 1
        expected = "expected a list of commands ('- sync', one a line)"
        raise CommandFileError(f"{source} line {line}: {expected}, got {_describe_root(root, text)}", line)
    entries = tuple(_entry(i, node, text) for i, node in enumerate(root.value))
    flow = (root.start_mark.index, root.end_mark.index) if root.flow_style else None
    return CommandFile(text, entries, _entry_spans(text, root), flow)


def _entry(index: int, node: yaml.Node, text: str) -> Entry:
    source = text[node.start_mark.index : _end_index(node)].strip()
    try:
        return Entry(index, plain(node, text), source, node.start_mark.line + 1)
    except NotPlain as e:
        return Entry(index, None, source, node.start_mark.line + 1, Malformed(str(e)))


def _describe_root(root: yaml.Node, text: str) -> str:
    try:
        value = plain(root, text)
    except NotPlain as e:
        return f"something else ({e})"
    return f"{_kind(value)} {_describe(value)}"


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
        return int(node.end_mark.index)
    if isinstance(node, yaml.CollectionNode) and node.flow_style:
        return int(node.end_mark.index)
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
    # Line numbers count "\n" only (how the text is cut), from the previous entry on: linear in the file.
    at, line = 0, 0
    for node in root.value:
        # The dash may sit on an earlier line than the content ("-\n  command: sync"); find it.
        i = node.start_mark.index - 1
        while i >= 0 and text[i] in " \t\r\n":
            i -= 1
        if i < at or text[i] != "-":
            return None
        first = line + text.count("\n", at, i)
        end = max(_end_index(node) - 1, i)
        last = first + text.count("\n", i, end)
        if spans and first <= spans[-1][1]:
            return None  # two entries share a line
        spans.append((first, last))
        at, line = end, last
    return tuple(spans)


def remove_entries(parsed: CommandFile, indices: Collection[int]) -> CommandFile:
    """The file without the entries at ``indices``, parsed. A block list loses exactly those entries' lines
    (every other entry, comment and quoting stays byte for byte); a flow list ``[a, b]`` is written again from
    the remaining entries' text. The result must read back as exactly the remaining entries; if it does not,
    the remaining values are written out by the YAML dumper instead. Raises ``CommandFileError`` when neither
    works (a remaining entry that is not plain data cannot be dumped)."""
    drop = set(indices)
    remaining = [e for e in parsed.entries if e.index not in drop]
    for text, as_written in _removal_candidates(parsed, drop, remaining):
        try:
            after = parse_command_file(text)
        except CommandFileError:
            continue
        if [_key(e, as_written) for e in after.entries] == [_key(e, as_written) for e in remaining]:
            return after
    raise CommandFileError("the other entries cannot be kept as they are if these are removed")


def _removal_candidates(parsed: CommandFile, drop: set[int], remaining: list[Entry]) -> Iterator[tuple[str, bool]]:
    """Texts without the dropped entries, best first, each with whether it keeps entries as written."""
    if parsed.lines is not None:
        lines = _lines(parsed.text)
        cut_lines = {n for i in drop for n in range(parsed.lines[i][0], parsed.lines[i][1] + 1)}
        yield "".join(line for n, line in enumerate(lines) if n not in cut_lines), True
    elif parsed.flow is not None:
        start, end = parsed.flow
        items = ", ".join(e.text for e in remaining)
        yield f"{parsed.text[:start]}[{items}]{parsed.text[end:]}", True
    if all(e.problem is None for e in remaining):  # only plain data can be dumped
        values = [e.value for e in remaining]
        dumped = yaml.safe_dump(values, default_flow_style=False, sort_keys=False, allow_unicode=True)
        yield (dumped if values else ""), False


def _key(entry: Entry, as_written: bool) -> tuple[object, ...]:
    value = repr(entry.value)  # repr: a NaN equals itself
    return (entry.text, value, entry.problem is None) if as_written else (value,)


def _lines(text: str) -> list[str]:
    """The text's lines, each with its "\n" (only "\n" ends a line here, as in ``_entry_spans``)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
