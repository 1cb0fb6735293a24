"""bootstrap.mode watch: the loop's bootstrap/heal cycle, and one soon after a node event (a poke), never closer
together than the minimum gap; stopping wakes the ticker at once."""

from __future__ import annotations

import time
from types import SimpleNamespace

from orcastra.runtime.triggers import Trigger
from orcastra.runtime.watchers import BootstrapTicker


class StubLoop:
    def __init__(self) -> None:
        self.trigger = Trigger()
        self.config = SimpleNamespace(
            bootstrap=SimpleNamespace(loop_interval_seconds=3600.0),
            nodes={"node1": SimpleNamespace(endpoint="tcp://node1:2375")},
        )
        self.is_leader = True
        self.paused = False
        self.cycles: list[float] = []

    def bootstrap(self) -> str:
        self.cycles.append(time.monotonic())
        return "bootstrap: nothing to do"


def wait_until(check: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_a_node_event_runs_a_cycle_soon_and_bursts_are_spaced() -> None:
    loop = StubLoop()
    ticker = BootstrapTicker(loop, min_gap=0.3)  # type: ignore[arg-type]
    ticker.start()
    try:
        time.sleep(0.05)
        assert loop.cycles == []  # the loop interval (an hour) has not passed
        ticker.poke()
        wait_until(lambda: len(loop.cycles) == 1)
        ticker.poke()
        ticker.poke()  # a burst: one more cycle, not before the gap
        wait_until(lambda: len(loop.cycles) == 2)
        assert loop.cycles[1] - loop.cycles[0] >= 0.29
        time.sleep(0.1)
        assert len(loop.cycles) == 2
    finally:
        stopped = time.monotonic()
        loop.trigger.stop()
        ticker.stop()
        ticker.join(2)
    assert not ticker.is_alive()
    assert time.monotonic() - stopped < 0.5
