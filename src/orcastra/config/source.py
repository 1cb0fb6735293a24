"""Reading a YAML configuration file into plain data, remembering the line of every key.

PyYAML's ``safe_load`` forgets where things came from, so problems could only name a field path. This
module composes the node tree itself and records the line of each mapping key and list item, which lets
a problem say "(line 12)". It also reports what ``safe_load`` silently accepts: a key given twice in one
mapping (the later value would win without a word). Every failure (missing file, directory, permission,
not UTF-8, a control character, YAML syntax, a value that cannot be constructed such as ``2024-13-45`` or
``!!int abc``) becomes a ``ConfigProblem``, never an exception: the daemon re-reads this file while it runs,
and a mistake in it must never stop it. A value that cannot be constructed is reported here and replaced by
``UNREADABLE``, which the schema's report skips, so each mistake is said once. Reading any file is bounded
work: its size, its nesting and what its aliases expand to are limited (below) and measured before anything
is built.
"""

from __future__ import annotations

import stat
import unicodedata
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

# Limits that keep the work of reading any file small, whatever is in it. A real configuration is a few
# kilobytes, a handful of levels deep; PyYAML's pure-Python reader takes about 7 s for 1 MiB.
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 20
# Aliases (*name) and merge keys (<<) repeat what they refer to: ten lines can stand for 10**9 values.
# Counted before anything is built, with every repetition, in values and in characters of text.
MAX_VALUES = 250_000
MAX_TEXT_CHARS = 4 * MAX_FILE_BYTES

FILE_NOT_FOUND = "file not found"
NUL_IN_PATH = "the path contains a NUL character"
SURROGATE = "contains an escaped surrogate (\\ud800-\\udfff), which is not a character"

_YAML_PREFIX = "tag:yaml.org,2002:"
# What a value of each standard tag was meant to be, for "cannot be read as ...".
_TAG_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "timestamp": "a date or time",
    "binary": "binary (base64) data",
    "null": "null",
}


class Unreadable:
    """Stands in the data for a value YAML could not construct; its problem is already reported."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unreadable value>"


UNREADABLE = Unreadable()


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
    """The file's text, or the problem that prevented reading it as UTF-8 text (at most ``MAX_FILE_BYTES``)."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            # Opening a pipe waits for a writer: the daemon's loop would hang on it.
            return None, [ConfigProblem(source, "", "is not a regular file (a pipe or socket), expected a YAML file")]
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # a device such as /dev/zero never ends
    except FileNotFoundError:
        return None, [ConfigProblem(source, "", FILE_NOT_FOUND)]
    except IsADirectoryError:
        return None, [ConfigProblem(source, "", "is a directory, expected a YAML file")]
    except PermissionError:
        return None, [ConfigProblem(source, "", "cannot be read: permission denied")]
    except OSError as e:
        return None, [ConfigProblem(source, "", f"cannot be read: {e.strerror or e}")]
    except ValueError:  # "embedded null byte": no file can have such a name
        return None, [ConfigProblem(source, "", NUL_IN_PATH)]
    if len(raw) > MAX_FILE_BYTES:
        return None, [
            ConfigProblem(
                source, "", "is larger than 1 MiB, the most a configuration file may be; is it the right file?"
            )
        ]
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
    try:
        # The reader checks the whole text for characters YAML forbids as soon as it is built.
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        return None, [ConfigProblem(source, "", _forbidden_character_message(text, e))]
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                return Document(source, None), []
            _measure(root)
            builder = _Builder(loader, source)
            data = builder.build(root, ())
        except _Refused as e:
            return None, [ConfigProblem(source, "", str(e))]
        except yaml.MarkedYAMLError as e:
            return None, [ConfigProblem(source, "", _syntax_message(e))]
        except yaml.YAMLError as e:
            return None, [ConfigProblem(source, "", f"YAML error: {e}")]
        return Document(source, data, builder.lines), builder.problems
    finally:
        loader.dispose()


class _Refused(Exception):
    """The document is past one of the limits above; the message says which, and where."""


def _too_deep(line: int, *, expanded: bool = False) -> _Refused:
    how = " once aliases are expanded" if expanded else ""
    return _Refused(
        f"YAML error: the document is nested more than {MAX_DEPTH} levels deep{how} (line {line}); "
        "a configuration needs far fewer"
    )


def _too_large(line: int) -> _Refused:
    return _Refused(
        f"YAML error: the document expands to more than {MAX_VALUES:,} values or "
        f"{MAX_TEXT_CHARS // MAX_FILE_BYTES} MiB of text once aliases (*name) and merge keys (<<) repeat what "
        f"they refer to; it passes that limit with what starts at line {line}"
    )


class _NestingError(yaml.MarkedYAMLError):
    """Raised while composing, where the line and column of the level too many are known."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than ``MAX_DEPTH`` while it composes (its composer
    recurses once per level; its parser and scanner do not)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _NestingError(
                    None,
                    None,
                    f"the document is nested more than {MAX_DEPTH} levels deep; a configuration needs far fewer",
                    mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class _Size:
    values: int
    chars: int
    height: int


def _measure(root: Node) -> None:
    """Refuse a document whose expansion is past ``MAX_VALUES``/``MAX_TEXT_CHARS`` or ``MAX_DEPTH``.

    Linear in the number of distinct nodes: the size of a node that several aliases refer to is computed
    once. Every node is at most ``MAX_DEPTH`` levels down when its size is computed (deeper is refused), so
    a long chain of aliases cannot exhaust the stack either. A problem names the line of the mapping or
    list that is too large or too deep (an alias's own position is not kept by PyYAML).
    """
    sizes: dict[int, _Size] = {}
    on_path: set[int] = set()

    def size_of(node: Node, depth: int) -> _Size:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in on_path:
            return _Size(1, 0, 1)  # an alias to its own container: the builder reports it
        if isinstance(node, ScalarNode):
            known = _Size(1, len(str(node.value)), 1)
        else:
            on_path.add(id(node))
            try:
                known = collection_size(node, depth)
            finally:
                on_path.discard(id(node))
        sizes[id(node)] = known
        return known

    def collection_size(node: Node, depth: int) -> _Size:
        # (child, levels it adds): a merge key's mapping (or list of mappings) counts whole, since flattening
        # copies every entry it refers to, but its entries join this mapping, one level down, not two.
        children: list[tuple[Node, int]] = []
        for item in node.value:
            if not isinstance(item, tuple):
                children.append((item, 1))
            elif item[0].tag == _MERGE_TAG and isinstance(item[1], SequenceNode):
                children.extend([(item[0], 1), *((merged, 0) for merged in item[1].value)])
            else:
                children.extend([(item[0], 1), (item[1], 0 if item[0].tag == _MERGE_TAG else 1)])
        total = _Size(1, 0, 1)
        for child, levels in children:
            part = size_of(child, depth + levels)
            total.values += part.values
            total.chars += part.chars
            total.height = max(total.height, part.height + levels)
            if total.values > MAX_VALUES or total.chars > MAX_TEXT_CHARS:
                raise _too_large(child.start_mark.line + 1)  # what an alias refers to, or a big merge
            if depth + total.height - 1 > MAX_DEPTH:
                raise _too_deep(node.start_mark.line + 1, expanded=True)
        return total

    size_of(root, 1)


def read_yaml(path: Path, source: str | None = None) -> tuple[Document | None, list[ConfigProblem]]:
    """Read and parse one YAML file; ``source`` is how problems name it (default: the path)."""
    name = source if source is not None else str(path)
    text, problems = read_text(path, name)
    if text is None:
        return None, problems
    return parse_yaml(text, name)


def _forbidden_character_message(text: str, e: yaml.reader.ReaderError) -> str:
    position = int(e.position)
    code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    kind = "control character" if unicodedata.category(chr(code)) == "Cc" else "character"
    return (
        f"contains the {kind} U+{code:04X} at line {line}, column {column}; YAML allows only printable "
        "characters (and tab, newline), so remove it"
    )


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
    # A constructor error is valid syntax with a refused tag (!!python/...), a nesting error valid syntax
    # past a limit; say "YAML error" then.
    kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError | _NestingError) else "YAML syntax error"
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
            return self._construct(node, loc)
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
            key = self._construct(key_node, loc, is_key=True, report=False)
            if isinstance(key, Unreadable):
                continue  # reported below, where the entry is skipped
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
            key = self._construct(key_node, loc, is_key=True)
            if isinstance(key, Unreadable):
                continue
            key_loc = (*loc, loc_part(key))
            self.lines[key_loc] = key_node.start_mark.line + 1  # an overriding key wins, as in the data
            result[key] = self.build(value_node, key_loc)
        return result

    def _construct(self, node: Node, loc: Loc, *, is_key: bool = False, report: bool = True) -> object:
        """PyYAML's value of ``node``, or ``UNREADABLE`` after reporting why it has none."""
        try:
            value = self.loader.construct_object(node, deep=True)
            if is_key:
                hash(value)
            if not isinstance(value, str) or not _has_surrogate(value):
                return value
            # "\ud800" in a double-quoted string: half of a UTF-16 pair, no character (no file or label can
            # hold it, and the schema's validator refuses the whole document without saying where).
            message, with_line = ("a key " if is_key else "") + SURROGATE, True
        except yaml.constructor.ConstructorError as e:
            message, with_line = _syntax_message(e), False  # it names line and column itself
        except Exception as e:  # PyYAML's constructors raise whatever their parsing raises
            # (ValueError for 2024-13-45 or !!int abc, KeyError for !!bool maybe, AttributeError for
            # !!timestamp foo, binascii.Error...): every one of them means this value cannot be read.
            message, with_line = self._unreadable_message(node, e, is_key=is_key), True
        # A failed construction leaves PyYAML's bookkeeping half-done; start the next one clean.
        self.loader.constructed_objects = {}
        self.loader.recursive_objects = {}
        self.loader.state_generators = []
        self.loader.deep_construct = False
        if report:
            self._problem(loc, node, message, with_line=with_line)
        return UNREADABLE

    def _unreadable_message(self, node: Node, error: Exception, *, is_key: bool) -> str:
        """What the value was meant to be and why it is not, without repeating the value (it may be a secret)."""
        tag = str(node.tag)
        short = tag[len(_YAML_PREFIX) :] if tag.startswith(_YAML_PREFIX) else tag
        what = _TAG_WORDS.get(short, f"a {tag} value")
        subject = "a key cannot" if is_key else "cannot"
        if isinstance(error, TypeError):
            return f"{subject} be used: a {short} value cannot be a mapping key"
        implicit = (
            isinstance(node, ScalarNode)
            and node.style is None
            # The tag an unquoted value of this text would get: the same one means the tag was not written.
            and self.loader.resolve(ScalarNode, node.value, (True, False)) == tag  # type: ignore[no-untyped-call]
        )
        why = (
            f" (YAML reads an unquoted value that looks like this as {what}; quote it if you mean text)"
            if implicit
            else f" (it is tagged !!{short})"
            if tag.startswith(_YAML_PREFIX)
            else ""
        )
        detail = ""
        if short == "timestamp" and isinstance(error, ValueError):
            detail = f": {error}"  # "month must be in 1..12": says what is wrong, never the value itself
        elif short == "int" and "digits" in str(error):
            detail = ": it has too many digits"
        return f"{subject} be read as {what}{why}{detail}"

    def _problem(self, loc: Loc, node: Node, message: str, *, with_line: bool = True) -> None:
        if with_line:
            message += f" (line {node.start_mark.line + 1})"
        self.problems.append(ConfigProblem(self.source, format_path(loc), message))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def loc_part(key: object) -> str | int:
    """A mapping key as pydantic writes it in an error location (a bool is an int there, True == 1)."""
    return key if isinstance(key, str | int) else repr(key)
