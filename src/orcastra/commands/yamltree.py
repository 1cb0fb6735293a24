"""A restricted YAML reader for the command file: PyYAML's safe parser, our own small composer, plain values.

The command file is written by people and read by a process that can reboot nodes, so reading it must be
cheap and must not fail in ways nobody reported. PyYAML's ``safe_load`` is not enough for that:

- aliases expand without bound (a few hundred bytes of ``&a [*b, *b, ...]`` take minutes): this composer
  refuses anchors and aliases outright (a command file never needs them);
- its composer and constructor recurse, so ``[[[[...]]]]`` raises ``RecursionError`` (after the scanner spent
  seconds on it): this composer keeps an explicit stack, and refuses the file as soon as it is nested deeper
  than ``MAX_NESTING``;
- its constructor turns ``2024-06-01`` into a ``date``, ``!!binary`` into ``bytes`` and ``!!set`` into a
  ``set`` (none of which JSON can hold), and raises ``ValueError`` or worse for ``2024-13-45``, ``!!int abc``,
  ``!!timestamp foo`` or a 5,000-digit number: ``plain()`` makes only str, int, float, bool, None, lists and
  mappings, and says in a ``NotPlain`` what it refused and why, so the caller can report one entry.

The events come from libyaml when PyYAML has it (twenty times faster) and from PyYAML's pure-Python parser
otherwise; both give character positions. A syntax error is described by the pure-Python parser, whose
messages the operator sees (and which tests pin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from orcastra.errors import cut

# A parser over a text: check_event(), get_event(), dispose(). libyaml's when PyYAML was built with it.
_Parser = Callable[[str], Any]
_PYTHON_PARSER: _Parser = yaml.SafeLoader
_FAST_PARSER: _Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_NESTING = 8  # the list is level 1, an entry's mapping level 2: room to spare, and a bound on the parser's work
MAX_NUMBER_CHARS = 64  # longer "numbers" are not commands, and converting them costs (base 60, 4,300 digits)

_YAML_TAG = "tag:yaml.org,2002:"
_SEQ, _MAP, _STR = Resolver.DEFAULT_SEQUENCE_TAG, Resolver.DEFAULT_MAPPING_TAG, Resolver.DEFAULT_SCALAR_TAG

_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
# Refused tags: what they are, in words (an operator reads this next to their entry).
_REFUSED = {
    "timestamp": "a date or time (!!timestamp)",
    "binary": "binary data (!!binary)",
    "set": "a set (!!set)",
    "omap": "an ordered mapping (!!omap)",
    "pairs": "a list of pairs (!!pairs)",
    "merge": "a merge key (<<)",
    "value": "a value key (=)",
}


class Refused(Exception):
    """The whole file is refused (an anchor, an alias, too deep): ``message`` says why, ``line`` (1-based) where."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class NotPlain(Exception):
    """A node that is not plain data (a date, a bad number, a tag...); ``message`` names it and says why."""


def compose(text: str) -> yaml.Node | None:
    """The root node of the single document in ``text`` (None when there is none). Raises ``Refused`` for
    anchors, aliases and deep nesting, and ``yaml.YAMLError`` (marked, in PyYAML's pure-Python wording) for bad
    syntax."""
    try:
        return _compose(_events(text, _FAST_PARSER))
    except Refused:
        raise
    except yaml.YAMLError:
        if _FAST_PARSER is _PYTHON_PARSER:
            raise
    # libyaml's messages differ; the pure-Python parser says it the way the operator is shown (or, where the
    # two parsers disagree, accepts what libyaml did not).
    return _compose(_events(text, _PYTHON_PARSER))


def _events(text: str, parser: _Parser) -> Iterator[yaml.Event]:
    loader = parser(text)
    try:
        while loader.check_event():
            yield loader.get_event()
    finally:
        loader.dispose()


def _marks(event: yaml.Event) -> tuple[yaml.Mark, yaml.Mark]:
    # Typed as PyYAML's or libyaml's Mark (or None); both parsers always set them, with the same fields.
    return cast("yaml.Mark", event.start_mark), cast("yaml.Mark", event.end_mark)


class _Frame:
    """An open collection while composing: the node, and a mapping's key waiting for its value."""

    __slots__ = ("key", "node")

    def __init__(self, node: yaml.SequenceNode | yaml.MappingNode) -> None:
        self.node = node
        self.key: yaml.Node | None = None

    def add(self, child: yaml.Node) -> None:
        if isinstance(self.node, yaml.SequenceNode):
            self.node.value.append(child)
        elif self.key is None:
            self.key = child
        else:
            self.node.value.append((self.key, child))
            self.key = None


def _compose(events: Iterator[yaml.Event]) -> yaml.Node | None:
    """PyYAML's ``Composer`` without recursion, anchors or aliases, and with a depth bound."""
    frames: list[_Frame] = []
    root: yaml.Node | None = None
    first_document: yaml.Mark | None = None

    def add(node: yaml.Node) -> None:
        nonlocal root
        if frames:
            frames[-1].add(node)
        else:
            root = node

    for event in events:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise Refused("anchors and aliases (&name, *name) are not allowed in a command file", _line(event))
        if isinstance(event, yaml.DocumentStartEvent):
            start, _ = _marks(event)
            if first_document is not None:
                raise ComposerError(
                    "expected a single document in the stream", first_document, "but found another document", start
                )
            first_document = start
        elif isinstance(event, yaml.ScalarEvent):
            add(_scalar(event))
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(frames) >= MAX_NESTING:
                # Refusing at once also bounds the parser's work: its scanner slows down with every open level.
                raise Refused(f"more than {MAX_NESTING} levels of nesting (a command needs 2)", _line(event))
            flow = bool(event.flow_style)
            start, _ = _marks(event)
            node: yaml.SequenceNode | yaml.MappingNode
            if isinstance(event, yaml.SequenceStartEvent):
                node = yaml.SequenceNode(_tag(event.tag, _SEQ), [], start, None, flow)
            else:
                node = yaml.MappingNode(_tag(event.tag, _MAP), [], start, None, flow)
            add(node)
            frames.append(_Frame(node))
        elif isinstance(event, yaml.CollectionEndEvent):
            frames.pop().node.end_mark = _marks(event)[1]
    return root


def _scalar(event: yaml.ScalarEvent) -> yaml.ScalarNode:
    tag = event.tag
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    start, end = _marks(event)
    return yaml.ScalarNode(tag, event.value, start, end, event.style)


def _tag(tag: str | None, default: str) -> str:
    return default if tag is None or tag == "!" else tag


def _line(event: yaml.Event) -> int:
    return _marks(event)[0].line + 1


# --- plain values ----------------------------------------------------------------------------------------


def plain(node: yaml.Node, text: str) -> object:
    """The node as plain data: str, int, float, bool, None, list, dict. Raises ``NotPlain`` naming the first
    node that is anything else (``text`` is the file, to quote the node as written). Recursion is bounded by
    the composer's ``MAX_NESTING``."""
    if isinstance(node, yaml.ScalarNode):
        return _plain_scalar(node, text)
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        return [plain(child, text) for child in node.value]
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = plain(key_node, text)
            if isinstance(key, list | dict):
                raise NotPlain(_quote(key_node, text, "is a list or mapping used as a key"))
            if key in out:
                raise NotPlain(_quote(key_node, text, "is a key given twice"))
            out[key] = plain(value_node, text)
        return out
    raise NotPlain(_quote(node, text, _refused_tag(node.tag)))


def _plain_scalar(node: yaml.ScalarNode, text: str) -> object:
    tag = node.tag
    if tag == _STR:
        return node.value
    kind = tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else None
    if kind not in ("null", "bool", "int", "float"):
        raise NotPlain(_quote(node, text, _refused_tag(tag)))
    if kind in ("int", "float") and len(node.value) > MAX_NUMBER_CHARS:
        raise NotPlain(_quote(node, text, f"is a number of more than {MAX_NUMBER_CHARS} characters"))
    construct = {
        "null": _CONSTRUCTOR.construct_yaml_null,
        "bool": _CONSTRUCTOR.construct_yaml_bool,
        "int": _CONSTRUCTOR.construct_yaml_int,
        "float": _CONSTRUCTOR.construct_yaml_float,
    }[kind]
    try:
        return construct(node)
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, yaml.YAMLError) as e:
        # PyYAML's scalar constructors raise assorted errors for an explicit tag on a bad value (!!int abc).
        raise NotPlain(_quote(node, text, f"is not a valid !!{kind}")) from e


def _refused_tag(tag: str) -> str:
    kind = tag.removeprefix(_YAML_TAG)
    if kind in _REFUSED:
        return f"reads as {_REFUSED[kind]}, which is not a command"
    shown = f"!!{kind}" if tag.startswith(_YAML_TAG) else tag
    return f"has the tag {shown}, which a command file does not use"


def _quote(node: yaml.Node, text: str, problem: str) -> str:
    """``2024-06-01 reads as ...``: the node as written (a block collection: its first line). No line number:
    the entry's own line changes as the entries before it are taken."""
    start, end = node.start_mark.index, node.end_mark.index
    if isinstance(node, yaml.CollectionNode) and not node.flow_style:
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline
    written = " ".join(text[start:end].split()) or "(empty)"
    return f"{cut(written, 60)} {problem}"
