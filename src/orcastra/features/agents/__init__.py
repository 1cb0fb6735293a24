"""The node agent as the controller sees it (docs/agent.md): its settings (the ``agent:`` section), the report
it serves (``report``: the wire format both sides share) and the pure view of where its tasks run and what they
reported (``view``). The agent process itself is ``orcastra.runtime.agent``; the controller's poller is
``orcastra.runtime.agents``.
"""
