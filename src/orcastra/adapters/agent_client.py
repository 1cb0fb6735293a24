"""The controller's side of the agents' reports: ``GET http://<task address>:<port>/v1/report`` over the
stack's overlay network, and ``GET /v1/agents`` of the local controller for ``orcastra status``.

Both answers are input from the network: the connection has a short timeout, the body is read up to a cap and
decoded into bounded structs (``orcastra.features.agents.report``); anything else is an ``AgentReportError``.
"""

from __future__ import annotations

import http.client
import ipaddress

from orcastra.domain.wording import one_line
from orcastra.errors import TemporaryError, cut
from orcastra.features.agents.report import (
    AGENTS_PATH,
    MAX_AGENTS_BYTES,
    MAX_REPORT_BYTES,
    REPORT_PATH,
    AgentReport,
    AgentTable,
    decode_report,
    decode_table,
)


class AgentReportError(TemporaryError):
    """An agent (or the controller's table of them) did not answer, or not with what it should."""

    retry_after_seconds = 30.0


def get_body(  # noqa: PLR0913 - where, what, how long, how much; the POST body and token keyword-only
    host: str,
    port: int,
    path: str,
    timeout_seconds: float,
    max_bytes: int,
    *,
    post: bytes | None = None,
    token: str = "",
) -> bytes:
    """The body of a 200 answer to ``GET path`` (``POST`` with a JSON body when ``post`` is given), read up to
    ``max_bytes + 1`` bytes (so an oversized one shows)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_seconds)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        if post is None:
            conn.request("GET", path, headers=headers)
        else:
            conn.request("POST", path, body=post, headers=headers | {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read(max_bytes + 1)
    except (OSError, http.client.HTTPException) as e:
        raise AgentReportError(f"no answer from {host}:{port}: {type(e).__name__}: {cut(str(e), 120)}") from e
    finally:
        conn.close()
    if response.status != 200:
        said = cut(one_line(body[:300].decode("utf-8", "replace").strip()), 300)
        raise AgentReportError(f"{host}:{port}{path}: HTTP {response.status}{': ' + said if said else ''}")
    return body


def fetch_report(
    address: str, port: int, timeout_seconds: float, facts: bytes | None = None, token: str = ""
) -> AgentReport:
    """One agent's report, from its task's IP address; with ``facts``, a POST that hands it the Swarm's facts
    (``orcastra.features.agents.facts``) with the API token."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise AgentReportError(f"not an IP address: {cut(address, 60)!r}") from None
    body = get_body(str(ip), port, REPORT_PATH, timeout_seconds, MAX_REPORT_BYTES, post=facts, token=token)
    try:
        return decode_report(body)
    except ValueError as e:
        raise AgentReportError(f"{ip}:{port}{REPORT_PATH}: {cut(str(e), 200)}") from e


def fetch_table(host: str, port: int, timeout_seconds: float) -> AgentTable:
    """The local controller's ``/v1/agents``."""
    body = get_body(host, port, AGENTS_PATH, timeout_seconds, MAX_AGENTS_BYTES)
    try:
        return decode_table(body)
    except ValueError as e:
        raise AgentReportError(f"{host}:{port}{AGENTS_PATH}: {cut(str(e), 200)}") from e


# A GC run on a node answers when it is done: a paced cleanup of thousands of images takes minutes.
GC_TIMEOUT_SECONDS = 1800.0
MAX_ACTION_ANSWER_BYTES = 1024 * 1024


def post_json(  # noqa: PLR0913 - where, what, with which token, how long; as get_body
    address: str, port: int, path: str, payload: dict[str, object], *, token: str, timeout_seconds: float
) -> dict[str, object]:
    """``POST path`` to one agent with a JSON body and the token; its JSON object answer."""
    import json

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise AgentReportError(f"not an IP address: {cut(address, 60)!r}") from None
    body = json.dumps(payload).encode()
    answer = get_body(str(ip), port, path, timeout_seconds, MAX_ACTION_ANSWER_BYTES, post=body, token=token)
    try:
        result = json.loads(answer)
    except ValueError as e:
        raise AgentReportError(f"{ip}:{port}{path}: not a JSON answer: {cut(str(e), 200)}") from e
    if not isinstance(result, dict):
        raise AgentReportError(f"{ip}:{port}{path}: not a JSON object")
    return result


def request_gc(address: str, port: int, dry_run: bool | None, token: str = "") -> dict[str, object]:
    """``POST /v1/gc`` to one agent: its run's result (``orcastra.runtime.node_gc.GcResult`` as JSON)."""
    return post_json(address, port, "/v1/gc", {"dry_run": dry_run}, token=token, timeout_seconds=GC_TIMEOUT_SECONDS)
