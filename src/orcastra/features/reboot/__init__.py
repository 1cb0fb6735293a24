"""Node maintenance: one node at a time, drain -> reboot -> wait Ready -> activate, under a Swarm-wide lock.

``settings`` (the ``reboot:`` config section), ``plan`` (pure: the lock's text, the schedule window, which
node to reboot next) and ``run`` (the I/O: Engine reads and writes, the reboot and sentinel commands).
Nothing is imported here, so the config schema can import ``orcastra.features.reboot.settings`` without pulling in the
Engine adapter.
"""
