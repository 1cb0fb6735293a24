"""The Engine calls bootstrap needs (swarm init/join/leave, join tokens, node role and removal), typed.

A subclass of the adapter, so every call gets the same error mapping. Join tokens are secrets: they are
held in ``JoinTokens`` (kept out of ``repr``) and scrubbed from any error message a join raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orcastra.adapters.engine import EngineAdapter
from orcastra.adapters.engine.parse import parse_node, parse_time
from orcastra.domain.snapshot import Node
from orcastra.errors import EngineConflictError, EngineError

SWARM_PORT = 2377
LISTEN_ADDR = f"0.0.0.0:{SWARM_PORT}"
ROLE_UPDATE_ATTEMPTS = 3


@dataclass(frozen=True)
class LocalSwarm:
    """What one Engine says about its own Swarm membership (GET /info -> Swarm)."""

    local_state: str
    node_id: str
    cluster_id: str
    control_available: bool
    node_addr: str
    system_time: float | None = None  # the Engine's own clock (GET /info SystemTime), epoch seconds


@dataclass(frozen=True)
class JoinTokens:
    """The Swarm's join tokens (GET /swarm -> JoinTokens); never printed."""

    worker: str = field(repr=False)
    manager: str = field(repr=False)

    def for_role(self, role: str) -> str:
        return self.manager if role == "manager" else self.worker


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


class SwarmEngine(EngineAdapter):
    """One node's Engine, for bootstrap."""

    def __enter__(self) -> SwarmEngine:
        return self

    def local_swarm(self) -> LocalSwarm:
        info = self.info()
        swarm: dict[str, Any] = info.get("Swarm") or {}
        return LocalSwarm(
            local_state=str(swarm.get("LocalNodeState") or "inactive"),
            node_id=str(swarm.get("NodeID") or ""),
            cluster_id=str((swarm.get("Cluster") or {}).get("ID") or ""),
            control_available=bool(swarm.get("ControlAvailable")),
            node_addr=str(swarm.get("NodeAddr") or ""),
            system_time=parse_time(info.get("SystemTime")) or None,
        )

    def list_nodes(self) -> tuple[Node, ...]:
        raw: list[dict[str, Any]] = self._call("list nodes", lambda c: c.nodes())
        return tuple(parse_node(n) for n in raw)

    def init_swarm(self, address: str) -> str:
        """POST /swarm/init; returns the new node ID."""
        node_id: str = self._call(
            "swarm init",
            lambda c: c.init_swarm(advertise_addr=f"{address}:{SWARM_PORT}", listen_addr=LISTEN_ADDR),
        )
        return str(node_id)

    def join_tokens(self) -> JoinTokens:
        raw: dict[str, Any] = self._call("inspect swarm", lambda c: c.inspect_swarm())
        tokens = raw.get("JoinTokens") or {}
        return JoinTokens(worker=str(tokens.get("Worker") or ""), manager=str(tokens.get("Manager") or ""))

    def join_swarm(self, manager_address: str, token: str, address: str) -> None:
        """POST /swarm/join. Any error is re-raised with the token scrubbed from its message, and without
        the original exception attached (its request body and message could hold the token)."""
        try:
            self._call(
                "swarm join",
                lambda c: c.join_swarm(
                    remote_addrs=[f"{manager_address}:{SWARM_PORT}"],
                    join_token=token,
                    listen_addr=LISTEN_ADDR,
                    advertise_addr=f"{address}:{SWARM_PORT}",
                ),
            )
        except EngineError as e:
            raise type(e)(redact(str(e), (token,)), endpoint=e.endpoint, status=e.status) from None

    def leave_swarm(self) -> None:
        self._call("swarm leave", lambda c: c.leave_swarm(force=True))

    def set_role(self, node_id: str, role: str) -> bool:
        """Set Spec.Role at the node's current version; re-read and retry on a version conflict.
        Returns False when the node already had that role."""
        for attempt in range(1, ROLE_UPDATE_ATTEMPTS + 1):
            raw: dict[str, Any] = self._call(f"inspect node {node_id}", lambda c: c.inspect_node(node_id))
            spec = dict(raw.get("Spec") or {})
            if spec.get("Role") == role:
                return False
            spec["Role"] = role
            version = int((raw.get("Version") or {}).get("Index") or 0)
            try:
                self._update_node(node_id, version, spec)
                return True
            except EngineConflictError:
                if attempt == ROLE_UPDATE_ATTEMPTS:
                    raise
        return True

    def _inspect_node_raw(self, node_id: str) -> dict[str, Any]:
        raw: dict[str, Any] = self._call(f"inspect node {node_id}", lambda c: c.inspect_node(node_id))
        return raw

    def _update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        self._call(f"set role of node {node_id}", lambda c: c.update_node(node_id, version, spec))

    def add_node_labels(self, hostname: str, labels: Mapping[str, str]) -> list[str]:
        """Give the node called ``hostname`` each of ``labels`` it does not have (its own values win), at its
        version, re-read on a conflict. Returns the keys added ([] when no node has that hostname)."""
        for attempt in range(1, ROLE_UPDATE_ATTEMPTS + 1):
            node = next((n for n in self.list_nodes() if n.hostname == hostname), None)
            if node is None:
                return []
            missing = {k: v for k, v in labels.items() if k not in node.labels}
            if not missing:
                return []
            node_id = node.id
            raw = self._inspect_node_raw(node_id)
            spec = dict(raw.get("Spec") or {})
            spec["Labels"] = {**missing, **(spec.get("Labels") or {})}
            version = int((raw.get("Version") or {}).get("Index") or 0)
            try:
                self._update_node(node_id, version, spec)
                return sorted(missing)
            except EngineConflictError:
                if attempt == ROLE_UPDATE_ATTEMPTS:
                    raise
        return []

    def remove_node(self, node_id: str) -> None:
        self._call(f"remove node {node_id}", lambda c: c.remove_node(node_id, force=True))
