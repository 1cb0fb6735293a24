"""Commands over HTTP: the routes the daemon adds to its ``ApiServer``, the bearer token, and the CLI's client.

``POST /v1/commands`` runs a command (the same forms as the command file, as JSON) through the same journal
as the file; ``GET /v1/commands/results`` lists recent results. Running a command changes the Swarm, so it
needs ``Authorization: Bearer <token>``; without a configured token the API refuses every command rather
than run unauthenticated (the listener is on 127.0.0.1 by default, but any local user can reach that).
"""

from __future__ import annotations

import hmac
import json
import logging
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx

from orcastra.adapters.http import Request, Response, Route, json_response, parse_listen_address
from orcastra.commands.dispatch import CommandResult
from orcastra.commands.model import Command, Malformed, parse_entry, parse_words
from orcastra.config.model import ApiSettings
from orcastra.errors import ConfigError, ConfigProblem, cut

log = logging.getLogger(__name__)

COMMANDS_PATH = "/v1/commands"
RESULTS_PATH = "/v1/commands/results"
DEFAULT_RESULTS_LIMIT = 20
MAX_RESULTS_LIMIT = 1000
CONNECT_TIMEOUT_SECONDS = 5.0
# A command runs while the request waits; ``reboot NODE`` drains, reboots and waits for the node to be Ready.
COMMAND_TIMEOUT_SECONDS = 3600.0
NO_TOKEN_MESSAGE = "commands over the API are disabled: set api.token or api.token_file in the configuration"
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
    """Routes for ``ApiServer(routes=...)``: ``POST /v1/commands`` (runs through ``submit``, token required)
    and, when ``results`` is given (e.g. ``CommandRunner.results``), ``GET /v1/commands/results?limit=N``."""
    expected = token.encode() if token else None

    def post_command(request: Request) -> Response:
        refused = _check_auth(request, expected)
        if refused is not None:
            return refused
        try:
            body = json.loads(request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_response(400, {"error": 'the body must be JSON, e.g. {"command": "restart app"}'})
        if not isinstance(body, dict):
            return json_response(400, {"error": "the body must be a JSON object with a 'command' key"})
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


def _limit(request: Request) -> int | str:
    # ``observe.Request`` carries the path without its query string; read ``query`` when it has one.
    query = str(getattr(request, "query", "") or "")
    values = parse_qs(query).get("limit")
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


def do_command(
    listen: str, token: str | None, words: Sequence[str], transport: httpx.BaseTransport | None = None
) -> tuple[int, str]:
    """``orcastra do restart app``: send the command to the running Orcastra on ``listen`` and wait for its
    result. Returns (exit code, text): 0 ok, 1 error result (or no Orcastra / refused), 2 bad command."""
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
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = client.post(url, json=cmd.to_entry(), headers=headers)
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


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
