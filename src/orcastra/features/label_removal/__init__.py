"""Removing every node label Orcastra owns (the ``remove_all_labels`` command; ``plan``: the pure planner)."""
