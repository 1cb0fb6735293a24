"""Turning pydantic validation errors into plain-words messages, each tied to its field location.

Pydantic's own messages ("Input should be a valid list", plus a documentation URL) are written for
programmers. Here each error type is said the way an operator editing a YAML file needs it: what was
expected and what was found, and for unknown keys which keys exist (and the closest one). A secret
(``SecretStr``, such as ``api.token``) is never repeated: only its kind is named ("found a number"), and a
password in a URL (``https://user:password@host``) is shown as ``***``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from orcastra.config.source import SURROGATE, Unreadable
from orcastra.domain.wording import describe, format_path, hide_passwords, kind, number, printable, seconds

Loc = tuple[str | int, ...]

_KEY_MARKER = "[key]"  # pydantic appends this to the location of an invalid dict key


@dataclass(frozen=True)
class FieldError:
    """One problem at ``loc`` in the merged data; ``is_key``: the key at ``loc`` is not text (no path part)."""

    loc: Loc
    message: str
    is_key: bool = False


def error_messages(error: ValidationError, root: type[BaseModel]) -> list[FieldError]:
    """One ``FieldError`` per pydantic error, in the order pydantic found them.

    A value the YAML reader could not construct was reported there already; its schema error is skipped.
    """
    found: list[FieldError] = []
    for detail in error.errors(include_url=False):
        if isinstance(detail["input"], Unreadable):
            continue
        loc: Loc = tuple(detail["loc"])
        is_key = bool(loc) and loc[-1] == _KEY_MARKER
        if is_key:
            loc = loc[:-1]
        message = hide_passwords(_message(detail, loc, root))
        # A key that is text names itself in the path (labels["fast disk"]); one that is not is no name.
        is_key = is_key and not isinstance(detail["input"], str)
        if is_key and detail["type"] == "string_type":
            # YAML 1.1 reads `yes:`, `on:`, `12:30:` or `3:` as a boolean or a number, not as text.
            message = (
                f"a key was read as {describe(detail['input'])}, not as text; quote it (YAML reads "
                "unquoted yes/no/on/off/true/false as booleans and digits as numbers)"
            )
        found.append(FieldError(loc, message, is_key))
    return found


# pydantic error types whose message is "expected X, found <the value>".
_EXPECTED = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "path_type": "a file path",
}
# pydantic error types for a bound, with the context key that holds it.
_BOUNDS = {
    "greater_than": ("must be greater than", "gt"),
    "greater_than_equal": ("must be at least", "ge"),
    "less_than": ("must be less than", "lt"),
    "less_than_equal": ("must be at most", "le"),
}


def _message(detail: ErrorDetails, loc: Loc, root: type[BaseModel]) -> str:
    error = detail["type"]
    ctx: dict[str, Any] = dict(detail.get("ctx") or {})
    value = detail.get("input")
    found = describe(value)
    if _is_secret(root, loc):
        hint = "; quote it to make it text" if isinstance(value, int | float | dt.date) else ""
        found = f"{kind(value)} (not shown: {format_path(loc)} is a secret{hint})"
    special = _special_message(error, value, found)
    if special is not None:
        return special
    if error in _EXPECTED:
        return f"expected {_EXPECTED[error]}, found {found}"
    if error in _BOUNDS:
        words, key = _BOUNDS[error]
        bound = ctx.get(key)
        shown = seconds(bound) if _is_duration(loc) and isinstance(bound, int | float) else _bound(bound)
        return f"{words} {shown}, found {found}"
    if error == "orcastra":
        return str(ctx.get("message", detail["msg"]))
    if error == "missing":
        return "required but missing"
    if error == "extra_forbidden":
        return _unknown_key_message(loc, root)
    if error in ("list_type", "tuple_type", "set_type"):
        hint = f" (write [{printable(value)}] for a one-item list)" if isinstance(value, str) else ""
        return f"expected a list, found {found}{hint}"
    if error in ("dict_type", "model_type", "model_attributes_type"):
        hint = " (leave the key out to use the defaults, or write {} for empty)" if value is None else ""
        return f"expected a mapping (key: value), found {found}{hint}"
    if error == "too_short":
        minimum = ctx.get("min_length", 1)
        if minimum == 1:
            return "must not be empty: give at least one item"
        return f"needs at least {minimum} items, found {ctx.get('actual_length')}"
    if error == "literal_error":
        return f"expected {ctx.get('expected')}, found {found}"
    return f"{detail['msg']}, found {found}"


def _special_message(error: str, value: object, found: str) -> str | None:
    if error == "string_unicode":
        # A lone surrogate inside a value the YAML reader did not check (a !!set or !!omap).
        return SURROGATE
    if error == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        # An integer too large for a float (past 1e308): no bound check ever saw it.
        return f"expected a number of a sensible size, found {found}"
    return None


def _is_secret(root: type[BaseModel], loc: Loc) -> bool:
    tp = _strip(_type_at(root, loc))
    return isinstance(tp, type) and issubclass(tp, SecretStr | SecretBytes)


def _is_duration(loc: Loc) -> bool:
    """``*_seconds`` settings and ``retry_intervals`` items are seconds."""
    name = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return name.endswith("_seconds") or name == "retry_intervals"


def _bound(value: object) -> str:
    return number(value) if isinstance(value, int | float) else str(value)


def _unknown_key_message(loc: Loc, root: type[BaseModel]) -> str:
    key = loc[-1] if loc else ""
    allowed = _allowed_keys(root, loc[:-1])
    if not allowed:
        return "unknown key"
    message = f"unknown key {key!r}; expected one of: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _allowed_keys(root: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model at ``loc`` accepts."""
    current = _strip(_type_at(root, loc))
    if isinstance(current, type) and issubclass(current, BaseModel):
        # Field names only: an alias such as `services` is accepted from old files but not advertised.
        return list(current.model_fields)
    return []


def _type_at(root: type[BaseModel], loc: Loc) -> Any:
    """The schema's type at ``loc``, following models, dicts and lists along the path (None: no such place)."""
    current: Any = root
    for part in loc:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = _field_type(current, str(part))
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
        if current is None:
            return None
    return current


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        names = [name, *(alias.choices if isinstance(alias, AliasChoices) else [])]
        if key in names:
            return info.annotation
    return None


def _strip(tp: Any) -> Any:
    """Remove ``Annotated[...]`` and ``| None`` wrappers to reach the type that shapes the data."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp
