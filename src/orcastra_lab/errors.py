"""The lab's error type (the product knows nothing of the lab; the lab builds on the product's root error)."""

from __future__ import annotations

from orcastra.errors import OrcastraError


class LabError(OrcastraError):
    """The local lab could not do what was asked (not root, a missing program, a node that never got Ready)."""
