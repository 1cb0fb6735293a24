"""The adapter's snapshot against the benchmark's fake Engine (an HTTP server speaking the same endpoints and
answering like 20.10 does, 404 for a task filter naming an unknown service): how many list calls, and which
tasks are read in full."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from orcastra.adapters.engine import EngineAdapter
from orcastra.adapters.engine.adapter import EngineSettings
from orcastra.domain.snapshot import Snapshot


@pytest.fixture
def engine() -> Iterator[EngineAdapter]:
    fake: Any = importlib.import_module("orcastra_lab.fake_engine")
    with (
        fake.FakeEngine(fake.Cluster(nodes=3, services=12, groups=2)) as server,
        EngineAdapter(EngineSettings(host=server.docker_host)) as adapter,
    ):
        adapter.ping()
        yield adapter


def test_without_history_three_calls_read_every_task(engine: EngineAdapter) -> None:
    before = engine.calls
    snap = engine.snapshot()
    assert engine.calls - before == 3
    assert engine.reads_through_pool
    assert len(snap.tasks) == 12 * 3 * 2  # running + one shutdown task per slot
    assert len(snap.nodes) == 3
    assert len(snap.services) == 12


def test_history_only_for_the_services_asked_for_in_four_calls(engine: EngineAdapter) -> None:
    asked: list[Snapshot] = []

    def history(first: Snapshot) -> set[str]:
        asked.append(first)
        return {first.services[0].id}

    before = engine.calls
    snap = engine.snapshot(history=history)
    assert engine.calls - before == 4
    assert asked[0].tasks == ()
    assert len(asked[0].services) == 12
    first = snap.services[0].id
    assert {t.desired_state for t in snap.tasks_of(first)} == {"running", "shutdown"}
    for svc in snap.services[1:]:
        assert {t.desired_state for t in snap.tasks_of(svc.id)} == {"running"}
    assert len({t.id for t in snap.tasks}) == len(snap.tasks) == 12 * 3 + 3


def test_no_history_wanted_is_three_calls(engine: EngineAdapter) -> None:
    before = engine.calls
    snap = engine.snapshot(history=lambda first: ())
    assert engine.calls - before == 3
    assert {t.desired_state for t in snap.tasks} == {"running"}


def test_a_service_gone_between_reads_falls_back_to_every_task(engine: EngineAdapter) -> None:
    snap = engine.snapshot(history=lambda first: {"removed-meanwhile"})
    assert len(snap.tasks) == 12 * 3 * 2


def test_an_error_status_keeps_its_type_and_the_engines_message(engine: EngineAdapter) -> None:
    import pytest

    from orcastra.errors import EngineNotFoundError

    with pytest.raises(EngineNotFoundError, match="service nope not found"):
        engine.list_tasks({"service": ["nope"]})
    assert engine.snapshot().nodes  # the connection is still usable
