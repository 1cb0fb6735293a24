"""The mod manager's pure parts: ``DOCKER_MODS`` references, the mods a node wants, manifests and platforms,
the cache plan, and the ``mods:`` settings. docs/mods.md has the cache contract they follow."""
