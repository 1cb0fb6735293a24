"""Asking every node's agent to do something now, from a controller (the ``refresh_mods`` command): the agents'
tasks from a snapshot, one POST each with the API token over the stack's network, a few at a time, and one
line per node in the answer. A node whose agent does not answer, or answers an error, is named in the failure.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from orcastra.adapters.agent_client import post_json
from orcastra.adapters.http import parse_listen_address
from orcastra.commands.api import load_token
from orcastra.config import Config
from orcastra.domain.snapshot import Snapshot
from orcastra.domain.wording import printable
from orcastra.errors import OrcastraError
from orcastra.features.agents.view import AgentTarget, agent_targets

MAX_PARALLEL = 8
MODS_REFRESH_PATH = "/v1/mods/refresh"
# A full refresh checks every mod with its registry (and may download them): minutes at worst.
MODS_REFRESH_TIMEOUT_SECONDS = 900.0


def _refresh_one(target: AgentTarget, port: int, token: str) -> str:
    if not target.address:
        raise OrcastraError(f"its agent task is {target.task_state or 'missing'}")
    r = post_json(
        target.address, port, MODS_REFRESH_PATH, {}, token=token, timeout_seconds=MODS_REFRESH_TIMEOUT_SECONDS
    )
    line = (
        f"{r.get('hits', 0)} current, {r.get('fetched', 0)} fetched ({r.get('bytes_fetched', 0)} bytes), "
        f"{r.get('pruned', 0)} pruned, {r.get('failed', 0)} failed"
    )
    if r.get("error") or r.get("failed"):
        raise OrcastraError(line + (f": {printable(str(r.get('error')))}" if r.get("error") else ""))
    return line


def refresh_mods_everywhere(config: Config, snapshot: Snapshot) -> str:
    targets = agent_targets(snapshot)
    if not targets:
        raise OrcastraError("no agent service in the Swarm: the mod manager runs in the agent (docs/mods.md)")
    port = parse_listen_address(config.agent.listen)[1]
    token = load_token(config.api) or ""

    def one(target: AgentTarget) -> tuple[str, str, bool]:
        try:
            return target.hostname, _refresh_one(target, port, token), True
        except OrcastraError as e:
            return target.hostname, str(e), False

    with ThreadPoolExecutor(min(MAX_PARALLEL, len(targets)), "orcastra-refresh-mods") as pool:
        results = list(pool.map(one, targets))
    lines = [f"{printable(node)}: {text}" for node, text, _ in results]
    failed = [printable(node) for node, _, ok in results if not ok]
    message = "; ".join(lines)
    if failed:
        raise OrcastraError(f"{message} (failed on {', '.join(failed)})")
    return message
