"""Features: one package each, all of the same shape: ``settings`` (its section of the configuration, a
pydantic model), a pure planner (``plan``: snapshot + settings -> actions, findings, status), and the label
keys it owns (listed in ``orcastra.domain.labels``). Features never import the Engine adapter, the runtime or
the configuration package, and do no I/O (import-linter enforces it); ``orcastra.runtime.controllers`` turns
the configuration into each feature's settings and runs the planners every cycle.
"""
