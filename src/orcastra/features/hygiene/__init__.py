"""Node hygiene planners: garbage collection, autoheal, log rotation."""
