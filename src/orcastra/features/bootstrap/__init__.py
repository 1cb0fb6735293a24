"""Swarm bootstrap and healing: ``settings`` (the ``bootstrap:`` section), ``model`` (observations and actions)
and ``plan`` (pure: what to init, join, promote, demote or remove). The I/O (observing each node's Engine,
applying through it) is ``orcastra.runtime.bootstrap``; see docs/bootstrap.md.
"""
