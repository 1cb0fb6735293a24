"""What one memory source returns from one pass: node and task figures, and the problems it met.

Sources never raise for a failure they can describe (unreachable, HTTP error, bad data): they return a
``SourceReading`` with a ``MemoryProblem`` naming the source and the node or URL, and no number for it.
``collect_memory`` merges the readings into one ``MemoryView``.
"""

from __future__ import annotations

from dataclasses import dataclass

from orcastra.domain.usage import MemoryProblem, NodeMemory, TaskMemory


@dataclass(frozen=True)
class SourceReading:
    """One source's result: nodes by hostname, per-(service, node) task memory, problems."""

    nodes: tuple[NodeMemory, ...] = ()
    tasks: tuple[TaskMemory, ...] = ()
    problems: tuple[MemoryProblem, ...] = ()
