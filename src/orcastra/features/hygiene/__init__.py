"""Node hygiene planners: garbage collection, autoheal."""
