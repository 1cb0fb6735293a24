"""Plain-words descriptions of configuration values and field paths, for problem messages."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence

# A path part that needs no quoting: "nodes.node-1.labels" reads better than nodes["node-1"]["labels"].
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")


def describe(value: object) -> str:
    """Name what was found, the way a person would ("the string 'abc'", "a list", "nothing (null)")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int) and _too_long(value):
        return f"a number with about {_digits(value)} digits"
    if isinstance(value, int | float):
        return f"the number {number(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:60] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dt.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def kind(value: object) -> str:
    """What sort of value was found, without the value itself (for secrets): "a number", "a list"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dt.date):
        return "a date"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


_URL_PASSWORD_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:)[^/@\s]*@")


def hide_passwords(text: str) -> str:
    """``scheme://user:password@host`` with the password replaced by ``***``, wherever it is in ``text``."""
    return _URL_PASSWORD_RE.sub(r"\1***@", text)


def number(value: float) -> str:
    """A number as a person writes it: ``0`` rather than ``0.0``, ``2.5`` as is."""
    if isinstance(value, int) and _too_long(value):
        # Python refuses to print an integer of more than 4300 digits, and nobody wants to read one.
        return f"{'-' if value < 0 else ''}(a {_digits(value)}-digit number)"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


_UNITS = ((7 * 86400, "week"), (86400, "day"), (3600, "hour"), (60, "minute"))


def seconds(value: float) -> str:
    """A duration bound as a person reads it: ``1 second``, ``0.05 seconds``, ``86400 seconds (1 day)``."""
    text = f"{number(value)} second{'' if value == 1 else 's'}"
    for size, unit in _UNITS:
        if value >= size and value % size == 0:
            count = int(value // size)
            return f"{text} ({count} {unit}{'' if count == 1 else 's'})"
    return text


_MAX_SHOWN_DIGITS = 30


def _too_long(value: int) -> bool:
    return value.bit_length() > _MAX_SHOWN_DIGITS * 3.33


def _digits(value: int) -> int:
    return int(abs(value).bit_length() * math.log10(2)) + 1


def format_path(parts: Sequence[str | int]) -> str:
    """Dotted path with list indexes: ``anchors.db.retry_intervals[2]``, ``nodes.n1.labels["a b"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY_RE.match(part) and len(part) <= _SHOWN_KEY_CHARS:
            out += f".{part}" if out else part
        else:
            out += f'["{printable(part)}"]'
    return out


_SHOWN_KEY_CHARS = 60


def one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``, ``\\ud800``): a
    message is one line that cannot drive a terminal, and a log file can always encode it."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def printable(text: str) -> str:
    """``text`` for a message line: control characters, quotes and backslashes escaped (a key may hold an
    escape sequence that would drive the terminal, or a newline that would fake another problem), cut to 60
    characters."""
    cut = text if len(text) <= _SHOWN_KEY_CHARS else text[:_SHOWN_KEY_CHARS] + "..."
    out: list[str] = []
    for ch in cut:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))  # \x1b, \n, \ud800
    return "".join(out)
