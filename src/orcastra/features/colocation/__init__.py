"""Anchor-following: dependents run on the node(s) where their anchor runs (``settings``: the ``anchors:``
section; ``groups``: which services follow which anchor, from the config and ``orcastra.follow`` labels;
``plan``: the pure planner; ``status``: what it reports of each group).
"""
