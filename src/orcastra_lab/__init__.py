"""The local lab: a real N-node Docker Swarm on one Linux box.

``Lab(name=...).up()`` gives a ``LabEnv`` (manager endpoint, registry, image, each node's endpoint);
see docs/lab.md for how it is built.
"""

from orcastra_lab.core import Lab, LabEnv, NodeStatus

__all__ = ["Lab", "LabEnv", "NodeStatus"]
