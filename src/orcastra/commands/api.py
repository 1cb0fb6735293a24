"""Commands over HTTP: the routes the daemon adds to its ``ApiServer``, the bearer token, and the CLI's client.

``POST /v1/commands`` runs a command (the same forms as the command file, as JSON) through the same journal
as the file; ``GET /v1/commands/results`` lists recent results. Running a command changes the Swarm, and a
result can hold sensitive text, so both need ``Authorization: Bearer <token>``; without a configured token the
API refuses every request rather than serve unauthenticated (the listener is on 127.0.0.1 by default, but any
local user can reach that). No answer and no log line repeats a token, right or wrong.

A body is read strictly (``read_json_object``): ``application/json`` (or no Content-Type, or
``application/x-www-form-urlencoded``, what ``curl -d`` and Python's urllib send by default: the body must still
be JSON; a bearer token is required anyway, so a browser form cannot post a command), UTF-8, one JSON
object without duplicate keys, NaN or Infinity, numbers of at most ``MAX_JSON_NUMBER_DIGITS`` digits and
at most ``MAX_JSON_DEPTH`` levels deep. Anything else is a 415 or a 400 that says what is wrong, never a 500:
the standard library's decoder raises ``ValueError`` for a long integer and ``RecursionError`` for deep
nesting, and a duplicate key would silently keep its last value (``{"command": "sync", "command": "pause"}``).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx

from orcastra.adapters.http import JSON_CONTENT_TYPE, Request, Response, Route, json_response, parse_listen_address
from orcastra.commands.dispatch import CommandResult
from orcastra.commands.model import Command, Malformed, parse_entry, parse_words
from orcastra.config.model import ApiSettings
from orcastra.errors import ConfigError, ConfigProblem, cut

log = logging.getLogger(__name__)

# What `curl -d` and urllib send when nobody says: accepted, the body is read as JSON all the same.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

COMMANDS_PATH = "/v1/commands"
RESULTS_PATH = "/v1/commands/results"
DEFAULT_RESULTS_LIMIT = 20
MAX_RESULTS_LIMIT = 1000
CONNECT_TIMEOUT_SECONDS = 5.0
# A refused connection sent nothing, so it is safe to try again: a replica stopped by a rolling update is
# back (or another one answers on the published port) within seconds.
CONNECT_RETRY_SECONDS = 10.0
CONNECT_RETRY_PAUSE_SECONDS = 1.0
# A command runs while the request waits; ``reboot NODE`` drains, reboots and waits for the node to be Ready.
COMMAND_TIMEOUT_SECONDS = 3600.0
NO_TOKEN_MESSAGE = "commands over the API are disabled: set api.token or api.token_file in the configuration"
# A command is a flat object of short strings: these leave room for anything sensible and refuse what is not.
MAX_JSON_DEPTH = 8
MAX_JSON_NUMBER_DIGITS = 100
BODY_EXAMPLE = '{"command": "restart app"}'

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orcastra"'}

Submit = Callable[[Command], CommandResult]
Results = Callable[[int], list[dict[str, Any]]]


def load_token(api: ApiSettings) -> str | None:
    """The API token from ``api.token`` or the first line of ``api.token_file``; None when neither is set.
    Raises ``ConfigError`` when the file cannot be read or is empty."""
    if api.token is not None:
        return api.token.get_secret_value().strip()
    if api.token_file is None:
        return None
    path = api.token_file

    def problem(message: str) -> ConfigError:
        return ConfigError([ConfigProblem(str(path), "api.token_file", message)])

    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise problem(f"cannot read the token file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise problem("the token file is not UTF-8 text") from e
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise problem("the token file is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("api: token file %s is readable by other users; chmod 600 it", path)
    return token


def command_routes(
    submit: Submit, token: str | None, results: Results | None = None
) -> Mapping[tuple[str, str], Route]:
    """Routes for ``ApiServer(routes=...)``: ``POST /v1/commands`` (runs through ``submit``) and, when
    ``results`` is given (e.g. ``CommandRunner.results``), ``GET /v1/commands/results?limit=N``; both need the
    token (401 without it or with a wrong one, 403 for every request when no token is configured)."""
    expected = token.encode() if token else None

    def post_command(request: Request) -> Response:
        refused = _check_auth(request, expected)
        if refused is not None:
            return refused
        body = read_json_object(request)
        if isinstance(body, Response):
            return body
        cmd = parse_entry(body)
        if isinstance(cmd, Malformed):
            return json_response(400, {"error": cmd.message})
        result = submit(cmd)
        # 200 also for a result "error": the command was taken and ran; the body says how it went.
        return json_response(200, result.to_json())

    routes: dict[tuple[str, str], Route] = {("POST", COMMANDS_PATH): post_command}
    if results is not None:
        list_results = results

        def get_results(request: Request) -> Response:
            # Results can hold sensitive text (what a command did, an Engine's error): the same token as POST.
            refused = _check_auth(request, expected)
            if refused is not None:
                return refused
            limit = _limit(request)
            if isinstance(limit, str):
                return json_response(400, {"error": limit})
            return json_response(200, {"results": list_results(limit)})

        routes[("GET", RESULTS_PATH)] = get_results
    return routes


def _check_auth(request: Request, expected: bytes | None) -> Response | None:
    if expected is None:
        return json_response(403, {"error": NO_TOKEN_MESSAGE})
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return json_response(401, {"error": "missing or wrong bearer token"}, headers=_CHALLENGE)
    return None


class BadBody(ValueError):
    """What is wrong with a request body, in words for the client (the 400's message)."""


def read_json_object(request: Request) -> dict[str, Any] | Response:
    """The request's body as a JSON object, or the 415/400 answer that says why it is not one."""
    refused = _check_content_type(request.headers.get("content-type"))
    if refused is not None:
        return json_response(415, {"error": refused})
    try:
        return decode_json_object(request.body)
    except BadBody as e:
        return json_response(400, {"error": f"{e}; send a JSON object, e.g. {BODY_EXAMPLE}"})


def _check_content_type(value: str | None) -> str | None:
    """None when the body may be read as JSON (no Content-Type, or curl's and urllib's default form type, is
    taken as JSON: the body is checked as JSON anyway), else why not."""
    if value is None:
        return None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, text = param.partition("=")
        if key.strip().lower() == "charset":
            charset = text.strip().strip('"').lower()
    if media.strip().lower() in (JSON_CONTENT_TYPE, FORM_CONTENT_TYPE) and charset in (None, "utf-8", "utf8"):
        return None
    return f"send the body as JSON with Content-Type: {JSON_CONTENT_TYPE} (UTF-8), e.g. {BODY_EXAMPLE}"


def decode_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadBody("the body is empty")
    if body.startswith(b"\xef\xbb\xbf"):
        raise BadBody("the body starts with a byte order mark")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadBody(f"the body is not UTF-8 text (byte {e.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_short_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as e:
        raise BadBody(f"the body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise BadBody(f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except BadBody:
        raise
    except ValueError:  # anything else the decoder refuses; its message is about Python, not about the body
        raise BadBody("the body is not valid JSON") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadBody(f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if not isinstance(value, dict):
        raise BadBody(f"the body must be a JSON object with a 'command' key, not {_json_kind(value)}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise BadBody(f"duplicate key {cut(key, 40)!r} in the body")
        value[key] = item
    return value


def _short_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_NUMBER_DIGITS:
        raise BadBody(f"the body has a number of {digits} digits (at most {MAX_JSON_NUMBER_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > MAX_JSON_NUMBER_DIGITS:
        raise BadBody(f"the body has a number of {len(text)} characters (at most {MAX_JSON_NUMBER_DIGITS})")
    value = float(text)
    if not math.isfinite(value):
        raise BadBody("the body has a number too large for a float")
    return value


def _no_constant(name: str) -> Any:
    raise BadBody(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deep a decoded JSON value nests (1 for a scalar), counted without recursion and only as far as it
    must: past ``MAX_JSON_DEPTH`` it stops."""
    deepest = 0
    stack = [(value, 1)]
    while stack and deepest <= MAX_JSON_DEPTH:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "something else")


def _limit(request: Request) -> int | str:
    values = parse_qs(request.query).get("limit")
    if not values:
        return DEFAULT_RESULTS_LIMIT
    text = values[-1]
    if not text.isdigit() or not 1 <= int(text) <= MAX_RESULTS_LIMIT:
        return f"limit must be a number from 1 to {MAX_RESULTS_LIMIT}, got {text!r}"
    return int(text)


# --- the CLI's side --------------------------------------------------------------------------------------


def api_base_url(listen: str) -> str:
    """Where to reach the API that listens on ``listen``: a wildcard address is reached on loopback."""
    host, port, _family = parse_listen_address(listen)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def do_command(  # noqa: PLR0913 - the command, then keyword-only transport and retry collaborators for tests
    listen: str,
    token: str | None,
    words: Sequence[str],
    transport: httpx.BaseTransport | None = None,
    *,
    connect_retry_seconds: float = CONNECT_RETRY_SECONDS,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[int, str]:
    """``orcastra do restart app``: send the command to the running Orcastra on ``listen`` and wait for its
    result. Returns (exit code, text): 0 ok, 1 error result (or no Orcastra / refused), 2 bad command. A
    connection refused (nothing was sent) is tried again for ``connect_retry_seconds``."""
    cmd = parse_words(list(words))
    if isinstance(cmd, Malformed):
        return 2, cmd.message
    try:
        base = api_base_url(listen)
    except ValueError as e:
        return 2, str(e)
    url = base + COMMANDS_PATH
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(COMMAND_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        response = _post_retrying_connect(
            url,
            body=cmd.to_entry(),
            headers=headers,
            timeout=timeout,
            transport=transport,
            retry_seconds=connect_retry_seconds,
            sleep=sleep,
        )
    except httpx.ConnectError:
        return (
            1,
            f"cannot reach Orcastra at {base}: nothing listens there"
            f" (is `orcastra run` running, with api.listen {listen}?)",
        )
    except httpx.TimeoutException:
        return 1, f"no answer from Orcastra at {base} in time; `GET {RESULTS_PATH}` will show the result later"
    except httpx.HTTPError as e:
        return 1, f"request to {url} failed: {e}"
    payload = _json_object(response)
    if response.status_code == 200 and "result" in payload:
        text = f"{payload.get('command', cmd)}: {payload.get('message', '')}"
        return (0, text) if payload["result"] == "ok" else (1, f"{text} (failed)")
    error = str(payload.get("error") or cut(response.text))
    if response.status_code == 400:
        return 2, error
    if response.status_code == 401:
        return 1, f"Orcastra refused the token: {error} (give the token configured as api.token or api.token_file)"
    return 1, f"Orcastra answered HTTP {response.status_code}: {error}"


def _post_retrying_connect(  # noqa: PLR0913 - one request and how to retry it
    url: str,
    *,
    body: dict[str, str | bool],
    headers: dict[str, str],
    timeout: httpx.Timeout,
    transport: httpx.BaseTransport | None,
    retry_seconds: float,
    sleep: Callable[[float], object],
) -> httpx.Response:
    """POST once; on a refused connection (``ConnectError``: nothing sent) again, until ``retry_seconds``."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            with httpx.Client(timeout=timeout, transport=transport) as client:
                return client.post(url, json=body, headers=headers)
        except httpx.ConnectError:
            if time.monotonic() >= deadline:
                raise
            sleep(CONNECT_RETRY_PAUSE_SECONDS)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def check_health(listen: str, transport: httpx.BaseTransport | None = None) -> tuple[int, str]:
    """``orcastra health``: ask the running Orcastra's ``/healthz`` (a container's HEALTHCHECK, a probe).
    Returns (0, status) when it answers 200, else (1, why)."""
    try:
        url = api_base_url(listen) + "/healthz"
    except ValueError as e:
        return 1, str(e)
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0), transport=transport) as client:
            response = client.get(url)
    except httpx.HTTPError as e:
        return 1, f"no answer from Orcastra at {url}: {type(e).__name__}"
    payload = _json_object(response)
    summary = ", ".join(f"{k} {payload[k]}" for k in ("status", "role", "last_error") if payload.get(k) is not None)
    if response.status_code == 200:
        return 0, summary or "ok"
    return 1, f"HTTP {response.status_code}: {summary or cut(response.text)}"
