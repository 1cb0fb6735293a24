"""Reading a YAML configuration file into plain data, remembering the line of every key.

PyYAML's ``safe_load`` forgets where things came from, so problems could only name a field path. This
module composes the node tree itself and records the line of each mapping key and list item, which lets
a problem say "(line 12)". It also reports what ``safe_load`` silently accepts: a key given twice in one
mapping (the later value would win without a word). Every failure (missing file, directory, permission,
not UTF-8, YAML syntax) becomes a ``ConfigProblem``, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orcastra.domain.wording import format_path
from orcastra.errors import ConfigProblem

Loc = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"

FILE_NOT_FOUND = "file not found"


@dataclass(frozen=True)
class Document:
    """The content of one configuration file and the 1-based line of each key and list item in it."""

    source: str
    data: object
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest recorded key on the way to ``loc`` (the key itself when it exists)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None


def read_text(path: Path, source: str) -> tuple[str | None, list[ConfigProblem]]:
    """The file's text, or the problem that prevented reading it as UTF-8 text."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [ConfigProblem(source, "", FILE_NOT_FOUND)]
    except IsADirectoryError:
        return None, [ConfigProblem(source, "", "is a directory, expected a YAML file")]
    except PermissionError:
        return None, [ConfigProblem(source, "", "cannot be read: permission denied")]
    except OSError as e:
        return None, [ConfigProblem(source, "", f"cannot be read: {e.strerror or e}")]
    try:
        # utf-8-sig: a byte-order mark left by some Windows editors is harmless, so accept it.
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return None, [
            ConfigProblem(
                source,
                "",
                f"is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line} cannot be decoded",
            )
        ]


def parse_yaml(text: str, source: str) -> tuple[Document | None, list[ConfigProblem]]:
    """Parse YAML text into plain data plus key lines; an empty document is ``None`` data."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            return None, [ConfigProblem(source, "", _syntax_message(e))]
        except yaml.YAMLError as e:
            return None, [ConfigProblem(source, "", f"YAML error: {e}")]
        except RecursionError:
            return None, [ConfigProblem(source, "", "YAML error: the document is nested too deeply")]
        if root is None:
            return Document(source, None), []
        builder = _Builder(loader, source)
        try:
            data = builder.build(root, ())
        except yaml.MarkedYAMLError as e:
            return None, [ConfigProblem(source, "", _syntax_message(e))]
        except RecursionError:
            return None, [ConfigProblem(source, "", "YAML error: the document is nested too deeply")]
        return Document(source, data, builder.lines), builder.problems
    finally:
        loader.dispose()


def read_yaml(path: Path, source: str | None = None) -> tuple[Document | None, list[ConfigProblem]]:
    """Read and parse one YAML file; ``source`` is how problems name it (default: the path)."""
    name = source if source is not None else str(path)
    text, problems = read_text(path, name)
    if text is None:
        return None, problems
    return parse_yaml(text, name)


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = e.problem or "invalid YAML"
    context = ""
    if e.context:
        context = f" ({e.context}"
        if e.context_mark is not None and e.context_mark is not mark:
            context += f" at line {e.context_mark.line + 1}"
        context += ")"
    # A constructor error is valid syntax with a refused tag (!!python/...); say "YAML error" then.
    kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
    return f"{kind}{where}: {what}{context}"


class _Builder:
    """Turns a composed YAML node tree into dicts, lists and scalars, noting lines on the way."""

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.problems: list[ConfigProblem] = []
        self._active: set[int] = set()

    def build(self, node: Node, loc: Loc) -> object:
        if id(node) in self._active:
            # An alias that refers to an enclosing node would make the data infinitely deep.
            self._problem(loc, node, "an alias refers to the mapping or list that contains it")
            return None
        if isinstance(node, ScalarNode) or node.tag not in (_SEQ_TAG, _MAP_TAG):
            # PyYAML's safe constructor decides, so an unknown tag such as !!python/object is
            # refused exactly as safe_load refuses it (never constructed).
            return self.loader.construct_object(node, deep=True)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items: list[object] = []
                for i, item in enumerate(node.value):
                    self.lines[(*loc, i)] = item.start_mark.line + 1
                    items.append(self.build(item, (*loc, i)))
                return items
            assert isinstance(node, MappingNode)
            return self._build_mapping(node, loc)
        finally:
            self._active.discard(id(node))

    def _build_mapping(self, node: MappingNode, loc: Loc) -> dict[object, object]:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problems.append(
                    ConfigProblem(
                        self.source,
                        format_path((*loc, loc_part(key))),
                        f"key given twice (lines {first_line[key]} and {line}); the later one would "
                        "silently win, so remove one",
                    )
                )
            else:
                first_line[key] = line
        # `<<: *defaults` merge keys: PyYAML's own flattening, so merges behave exactly as in safe_load.
        self.loader.flatten_mapping(node)
        result: dict[object, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._problem(loc, key_node, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = self.loader.construct_object(key_node, deep=True)
            key_loc = (*loc, loc_part(key))
            self.lines[key_loc] = key_node.start_mark.line + 1  # an overriding key wins, as in the data
            result[key] = self.build(value_node, key_loc)
        return result

    def _problem(self, loc: Loc, node: Node, message: str) -> None:
        self.problems.append(
            ConfigProblem(self.source, format_path(loc), f"{message} (line {node.start_mark.line + 1})")
        )


def loc_part(key: object) -> str | int:
    """A mapping key as pydantic writes it in an error location (a bool is an int there, True == 1)."""
    return key if isinstance(key, str | int) else repr(key)
