"""Anchor-following: dependents run on the node(s) where their anchor runs (``settings``: the ``anchors:``
section; ``plan``: the pure planner and the groups' status).
"""
