"""Orcastra: a controller that adds anchor-following, node labels and rebalancing to Docker Swarm."""

__version__ = "0.1.0"
