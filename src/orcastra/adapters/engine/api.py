"""``EngineApi``: what the runtime needs of a Swarm manager's Engine, as a Protocol.

The runtime (loop, executor, lease, reboots, the reconcile cycle) is typed against this, not against the
adapter class: ``EngineAdapter`` is the implementation (docker-py underneath, one connection, error mapping),
and anything else that answers the same calls can stand in for it. The tests and benchmarks drive the real
adapter against the fake Engine (``orcastra_lab.fake_engine``), which speaks the Engine's HTTP API.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol, Self

from orcastra.domain.configs import SwarmConfig
from orcastra.domain.snapshot import Node, Service, Snapshot


class EngineApi(Protocol):
    calls: int  # Engine API calls made so far (metrics, benchmarks)

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    # --- reads ---------------------------------------------------------------------------------------------

    def snapshot(self, history: Callable[[Snapshot], Collection[str]] | None = None) -> Snapshot:
        """Nodes, services and tasks in a constant number of list calls."""
        ...

    def task_states(self, filters: Mapping[str, list[str]]) -> frozenset[tuple[str, str, str, str]]: ...

    def find_service(self, name: str) -> Service | None: ...

    def inspect_node(self, node_id: str) -> Node: ...

    def swarm_labels(self) -> dict[str, str]: ...

    def swarm_labels_with_version(self) -> tuple[dict[str, str], int]: ...

    def list_configs(self, filters: Mapping[str, list[str]]) -> tuple[SwarmConfig, ...]: ...

    # --- writes (each at the object's version; a stale one raises EngineConflictError) -----------------------

    def update_node_spec(self, node: Node, labels: Mapping[str, str], availability: str | None = None) -> None: ...

    def update_service(  # noqa: PLR0913 - keyword-only options, one per field of the UpdateService action
        self,
        service: Service,
        *,
        add_constraints: tuple[str, ...] = (),
        remove_constraints: tuple[str, ...] = (),
        set_labels: Mapping[str, str] | None = None,
        remove_labels: tuple[str, ...] = (),
        force: bool = False,
    ) -> None: ...

    def create_placeholder_service(self, name: str, labels: Mapping[str, str], image: str) -> None: ...

    def set_swarm_labels(self, changes: Mapping[str, str | None], version: int) -> None: ...

    def create_config(self, name: str, data: bytes, labels: Mapping[str, str]) -> str: ...

    def update_config_labels(
        self, config_id: str, version: int, set_labels: Mapping[str, str], remove_labels: tuple[str, ...] = ()
    ) -> None: ...

    def remove_config(self, config_id: str) -> None: ...
