"""The Docker Engine boundary: the only package that talks to the Engine API or sees its raw JSON."""

from orcastra.adapters.engine.adapter import EngineAdapter, EngineEvent, EngineSettings

__all__ = ["EngineAdapter", "EngineEvent", "EngineSettings"]
