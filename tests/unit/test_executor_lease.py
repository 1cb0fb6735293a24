"""The write seam against the fake Engine: the executor (versions, conflicts, the Swarm's labels, quiet actions,
the dry run, a failing audit), the leader lease (clock injected), and a reconcile cycle that re-plans after a
conflict."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.adapters.engine.swarm import SwarmEngine
from orcastra.config import Config
from orcastra.domain.actions import CreateService, SetSwarmLabels, UpdateNodeLabels, UpdateService
from orcastra.domain.labels import LEASE_HOLDER_LABEL, PAUSED_LABEL, REMOVED_NODE_LABELS_PREFIX
from orcastra.domain.snapshot import Snapshot
from orcastra.runtime.controllers import StaticLabels
from orcastra.runtime.executor import DRY_RUN_RECORD_LIMIT, AuditLog, DryRunExecutor, EngineExecutor, Outcome
from orcastra.runtime.leadership import LeaderLease
from orcastra.runtime.membership import restore_labels
from orcastra.runtime.reconcile import run_cycle
from orcastra_lab.fake_engine import Cluster, FakeEngine

OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"
NO_OBJECTS = Snapshot((), (), ())


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    with FakeEngine(Cluster(nodes=3, services=4, groups=1)) as fe:
        yield fe


@pytest.fixture
def engine(fake: FakeEngine) -> Iterator[EngineAdapter]:
    with EngineAdapter(EngineSettings(host=fake.docker_host)) as adapter:
        yield adapter


def audit_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def label(snapshot: Snapshot, host: str, **labels: str) -> UpdateNodeLabels:
    node = snapshot.node_by_hostname(host)
    assert node is not None
    return UpdateNodeLabels(node.id, host, node.version, set_labels=MappingProxyType(labels), reason="test")


def test_writes_carry_the_version_and_a_conflict_stops_the_batch(fake: FakeEngine, engine: EngineAdapter) -> None:
    stream = io.StringIO()
    executor = EngineExecutor(engine, AuditLog(stream=stream))
    snapshot = engine.snapshot()
    fake.fail_next("POST", r"^/nodes/[^/]+/update$", 500, OUT_OF_SEQUENCE)
    outcomes = executor.apply([label(snapshot, "node2", a="1"), label(snapshot, "node3", b="2")], snapshot)
    assert [o.result for o in outcomes] == ["conflict", "skipped"]
    assert "b" not in fake.node("node3")["Spec"]["Labels"], "nothing after a conflict is written"
    fresh = engine.snapshot()
    assert [o.result for o in executor.apply([label(fresh, "node2", a="1")], fresh)] == ["ok"]
    assert fake.node("node2")["Spec"]["Labels"]["a"] == "1"
    assert [line["result"] for line in audit_lines(stream)] == ["conflict", "skipped", "ok"]


def test_a_stale_snapshot_is_a_conflict_without_a_write(fake: FakeEngine, engine: EngineAdapter) -> None:
    executor = EngineExecutor(engine, AuditLog(stream=io.StringIO()))
    old = engine.snapshot()
    executor.apply([label(old, "node2", first="1")], old)
    writes = len(fake.writes())
    (outcome,) = executor.apply([label(old, "node2", second="1")], engine.snapshot())
    assert outcome.result == "conflict"
    assert len(fake.writes()) == writes


def test_swarm_labels_are_a_compare_and_set(fake: FakeEngine, engine: EngineAdapter) -> None:
    executor = EngineExecutor(engine, AuditLog(stream=io.StringIO()))
    _, version = engine.swarm_labels_with_version()
    set_it = SetSwarmLabels({PAUSED_LABEL: "true"}, version, reason="test")
    assert [o.result for o in executor.apply([set_it], NO_OBJECTS)] == ["ok"]
    assert engine.swarm_labels() == {PAUSED_LABEL: "true"}
    again = SetSwarmLabels({PAUSED_LABEL: None}, version, reason="stale version")
    assert [o.result for o in executor.apply([again], NO_OBJECTS)] == ["conflict"]
    assert engine.swarm_labels() == {PAUSED_LABEL: "true"}


def test_quiet_actions_are_counted_not_audited(engine: EngineAdapter) -> None:
    stream = io.StringIO()
    seen: list[Outcome] = []
    executor = EngineExecutor(engine, AuditLog(stream=stream), seen.append)
    create = CreateService("placeholder", MappingProxyType({"x": "1"}), "none:none", quiet=True)
    assert [o.result for o in executor.apply([create], NO_OBJECTS)] == ["ok"]
    assert [o.result for o in executor.apply([create], NO_OBJECTS)] == ["conflict"], "the name is taken"
    assert [o.result for o in seen] == ["ok", "conflict"]
    assert audit_lines(stream) == [], "quiet actions are never audited"


def test_a_failing_audit_never_hides_a_write(fake: FakeEngine, engine: EngineAdapter, tmp_path: Path) -> None:
    audit = AuditLog(path=tmp_path / "audit.jsonl")
    (tmp_path / "audit.jsonl").mkdir()  # the audit file cannot be opened: as a full disk, the write fails
    snapshot = engine.snapshot()
    (outcome,) = EngineExecutor(engine, audit).apply([label(snapshot, "node3", z="9")], snapshot)
    assert outcome.result == "ok"
    assert fake.node("node3")["Spec"]["Labels"]["z"] == "9"
    assert audit.failed_writes == 1


def test_the_dry_run_writes_nothing_and_keeps_a_bounded_record(fake: FakeEngine, engine: EngineAdapter) -> None:
    stream = io.StringIO()
    executor = DryRunExecutor(AuditLog(stream=stream))
    snapshot = engine.snapshot()
    writes = len(fake.writes())
    actions = [label(snapshot, "node2", n=str(i)) for i in range(3)]
    assert {o.result for o in executor.apply(actions, snapshot)} == {"dry-run"}
    assert len(fake.writes()) == writes
    assert all(line["dry_run"] for line in audit_lines(stream))
    for _ in range(DRY_RUN_RECORD_LIMIT // 100 + 1):
        executor.apply([SetSwarmLabels({"k": str(i)}, 1, reason="test") for i in range(100)], snapshot)
    assert len(executor.recorded) == DRY_RUN_RECORD_LIMIT


def test_a_cycle_re_reads_and_re_plans_after_a_conflict(fake: FakeEngine, engine: EngineAdapter) -> None:
    config = Config.model_validate({"nodes": {"node3": {"labels": ["ssd"]}}})
    executor = EngineExecutor(engine, AuditLog(stream=io.StringIO()))
    fake.fail_next("POST", r"^/nodes/[^/]+/update$", 500, OUT_OF_SEQUENCE)
    result = run_cycle(engine, executor, config, [StaticLabels()])
    assert result.attempts == 2
    assert [o.result for o in result.outcomes] == ["conflict", "ok"]
    assert fake.node("node3")["Spec"]["Labels"]["ssd"] == "true"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lease(engine: EngineAdapter, holder: str, clock: Clock, stream: io.StringIO) -> LeaderLease:
    executor = EngineExecutor(engine, AuditLog(stream=stream))
    return LeaderLease(engine, executor, name="orcastra-leader", holder=holder, ttl_seconds=15.0, clock=clock)


def test_the_lease_elects_one_leader_and_a_follower_takes_over_when_it_stops_renewing(
    fake: FakeEngine, engine: EngineAdapter
) -> None:
    clock, stream = Clock(), io.StringIO()
    a, b = lease(engine, "a", clock, stream), lease(engine, "b", clock, stream)
    assert a.tick() is True  # creates the lease
    assert b.tick() is False
    clock.now += 5
    assert a.tick() is True  # renews
    assert b.tick() is False
    clock.now += 14  # a is gone; b has seen the lease unchanged for 14 s of its own clock: not yet
    assert b.tick() is False
    clock.now += 2
    assert a.is_leader is False, "a holder that could not renew for a ttl stops acting by itself"
    assert b.tick() is True
    assert fake.service("orcastra-leader")["Spec"]["Labels"][LEASE_HOLDER_LABEL] == "b"
    assert a.tick() is False
    assert stream.getvalue() == "", "lease writes are quiet"


def test_a_released_lease_is_taken_at_once_and_a_race_has_one_winner(fake: FakeEngine, engine: EngineAdapter) -> None:
    clock, stream = Clock(), io.StringIO()
    a, b, c = (lease(engine, h, clock, stream) for h in "abc")
    assert a.tick() is True
    assert b.tick() is False
    assert c.tick() is False
    a.release()
    assert fake.service("orcastra-leader")["Spec"]["Labels"][LEASE_HOLDER_LABEL] == ""
    # b and c both saw the lease free; the Swarm's version check lets only the first write win.
    fake.fail_next("POST", r"^/services/[^/]+/update$", 500, OUT_OF_SEQUENCE)
    assert b.tick() is False
    assert c.tick() is True
    assert b.tick() is False
    assert fake.service("orcastra-leader")["Spec"]["Labels"][LEASE_HOLDER_LABEL] == "c"


def test_a_service_update_at_the_wrong_version_is_refused_by_the_adapter(engine: EngineAdapter) -> None:
    snapshot = engine.snapshot()
    svc = next(s for s in snapshot.services if s.name == "bench_svc00000")
    executor = EngineExecutor(engine, AuditLog(stream=io.StringIO()))
    force = UpdateService(svc.id, svc.name, svc.version, force=True, reason="test")
    assert [o.result for o in executor.apply([force], snapshot)] == ["ok"]
    assert [o.result for o in executor.apply([force], snapshot)] == ["conflict"]


def test_a_node_that_joins_again_gets_the_labels_its_removed_entry_had(fake: FakeEngine) -> None:
    with SwarmEngine(EngineSettings(host=fake.docker_host)) as manager:
        _, version = manager.swarm_labels_with_version()
        kept = json.dumps({"rack": "r3", "zone": "b"})
        manager.set_swarm_labels({REMOVED_NODE_LABELS_PREFIX + "node3": kept}, version)
        assert "given back: rack" in restore_labels(manager, "node3")
        labels = fake.node("node3")["Spec"]["Labels"]
        assert labels["rack"] == "r3"
        assert labels["zone"] == "z2", "the node's own value wins"
        assert manager.swarm_labels() == {}, "the record is dropped once given back"
        assert restore_labels(manager, "node3") == ""


def test_labels_kept_in_a_bad_shape_are_dropped_not_applied(fake: FakeEngine) -> None:
    with SwarmEngine(EngineSettings(host=fake.docker_host)) as manager:
        _, version = manager.swarm_labels_with_version()
        manager.set_swarm_labels({REMOVED_NODE_LABELS_PREFIX + "node3": '["not", "a", "mapping"]'}, version)
        assert restore_labels(manager, "node3") == ""
        assert manager.swarm_labels() == {}


def test_the_swarm_engine_reads_the_engines_own_clock(fake: FakeEngine) -> None:
    with SwarmEngine(EngineSettings(host=fake.docker_host)) as engine:
        system_time = engine.local_swarm().system_time
    assert system_time is not None
    assert abs(system_time - time.time()) < 60
