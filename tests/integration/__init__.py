"""Integration tests: they run against the real lab Swarm (root, dockerd), brought up by conftest."""
