"""Static node labels from the config, with recorded ownership (``settings``: ``labels:``; ``plan``: the pure
planner).
"""
