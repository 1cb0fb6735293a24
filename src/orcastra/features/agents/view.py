"""Where the agent's tasks run, from a snapshot: one target per node, with the address the controller asks.

Pure: the poller (``orcastra.runtime.agents``) and ``orcastra status`` call it with a snapshot built once.
"""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.labels import AGENT_ROLE, ROLE_LABEL
from orcastra.domain.snapshot import Service, Snapshot, Task


@dataclass(frozen=True)
class AgentTarget:
    """A node and its agent task: ``task_state`` "" when the node has none; ``address`` "" unless it runs."""

    node_id: str
    hostname: str
    node_state: str
    task_state: str = ""
    task_error: str = ""
    address: str = ""


def agent_services(snapshot: Snapshot) -> tuple[Service, ...]:
    """The services labelled ``orcastra.role=agent`` (one per stack normally)."""
    return tuple(s for s in snapshot.services if s.labels.get(ROLE_LABEL) == AGENT_ROLE)


def _current(tasks: list[Task]) -> Task | None:
    """The task that stands for the node's agent now: an active one first, else the last one that changed
    (Swarm keeps the history of a global service's slot on each node)."""
    if not tasks:
        return None
    return max(tasks, key=lambda t: (t.active, t.updated_at, t.created_at))


def agent_targets(snapshot: Snapshot) -> tuple[AgentTarget, ...]:
    """One target per node (by hostname) when an agent service exists, else none."""
    services = agent_services(snapshot)
    if not services:
        return ()
    by_node: dict[str, list[Task]] = {}
    for service in services:
        for t in snapshot.tasks_of(service.id):
            if t.node_id:
                by_node.setdefault(t.node_id, []).append(t)
    out = []
    for node in sorted(snapshot.nodes, key=lambda n: (n.hostname, n.id)):
        task = _current(by_node.get(node.id, []))
        if task is None:
            out.append(AgentTarget(node.id, node.hostname, node.state))
            continue
        # "starting": the container runs and waits for its first healthy probe (a minute for the agent), and
        # its process already answers; asking it then shows an agent back from a restart a minute sooner.
        running = task.desired_state == "running" and task.state in ("starting", "running")
        out.append(
            AgentTarget(
                node.id,
                node.hostname,
                node.state,
                task_state=task.state,
                task_error=task.error,
                address=task.addresses[0] if running and task.addresses else "",
            )
        )
    return tuple(out)
