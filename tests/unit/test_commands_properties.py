"""Property tests (hypothesis) of the command channels' hostile input: any command file text, any entry value, any
API body and header. The command file is a whole-file ``CommandFileError`` or entries (each a command or a
problem); an entry is a ``Command`` or a ``Malformed``; the API answers 200 or a 4xx, never a 500 or an
exception; each within a bounded time. Deterministic (derandomized) so CI sees the same examples every run."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orcastra.adapters.http import Request
from orcastra.commands.api import command_routes
from orcastra.commands.dispatch import CommandResult
from orcastra.commands.model import Command, CommandFileError, Malformed, parse_command_file, parse_entry

TOKEN = "t0ken"
BOUND_SECONDS = 1.0
PROPERTIES = settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# YAML-ish fragments that break readers: tags, anchors, flow collections, control characters, odd scalars.
FRAGMENTS = st.sampled_from(
    [
        "- ",
        "sync",
        "restart app",
        "{command: restart, service: x}",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "!!binary ",
        "!!set ",
        "!!int abc",
        "2024-13-45",
        "? ",
        ": ",
        "\n",
        "  ",
        "\t",
        "\x1b",
        "\x00",
        "#",
        "'",
        '"',
        "|",
        ">",
        "<<: *a",
        "9" * 60,
        "-" * 3,
        "...",
        "%YAML 1.1\n",
        "\ud800",
        "reboot -oProxyCommand=x",
        "drain node2",
    ]
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def timed(fn: Any, *args: Any) -> Any:
    started = time.monotonic()
    result = fn(*args)
    assert time.monotonic() - started < BOUND_SECONDS
    return result


@PROPERTIES
@given(st.lists(FRAGMENTS, max_size=30).map("".join) | st.text(max_size=300))
def test_any_command_file_text_is_entries_or_one_file_error(text: str) -> None:
    try:
        parsed = timed(parse_command_file, text, "commands.yml")
    except CommandFileError as e:
        problem = str(e)
        parsed = None
    else:
        problem = ""
    if parsed is None:
        assert problem.startswith("commands.yml")
        return
    for entry in parsed.entries:
        assert isinstance(entry.parse(), Command | Malformed)


@PROPERTIES
@given(VALUES)
def test_any_entry_value_is_a_command_or_malformed(value: object) -> None:
    assert isinstance(timed(parse_entry, value), Command | Malformed)


def route() -> Any:
    def submit(cmd: Command) -> CommandResult:
        return CommandResult(str(cmd), "ok", "done")

    return command_routes(submit, TOKEN)[("POST", "/v1/commands")]


POST = route()


@PROPERTIES
@given(
    body=st.binary(max_size=400) | VALUES.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "", "text/plain", "application/json; charset=utf-16"]),
    token=st.sampled_from([TOKEN, "", "wrong", TOKEN + "\n"]),
)
def test_any_api_body_is_answered_200_or_4xx(body: bytes, content_type: str, token: str) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["content-type"] = content_type
    response = timed(POST, Request("POST", "/v1/commands", headers, body))
    assert response.status == 200 or 400 <= response.status < 500, (response.status, response.body)
    assert TOKEN.encode() not in response.body
