"""orcastra migrate: the planner's steps over snapshots built in code, and --apply against the fake Engine
(every step through the executor; no dependent task ever pending or rejected; a second run finds nothing)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.config import Config
from orcastra.domain.actions import UpdateNodeLabels, UpdateService
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.features.migrate.plan import OldAnchor, plan_migration
from orcastra.runtime.executor import AuditLog
from orcastra.runtime.migrate import Migration, migration_hint, old_anchors
from orcastra.runtime.wiring import make_executor
from orcastra_lab.fake_engine import Cluster, FakeEngine

OLD = "node.labels.db==true"
NEW = "node.labels.orcastra.anchor.app_db==true"
ANCHORS = (OldAnchor("db", "app_db", ("app_web",)),)


def snap(
    n1: dict[str, str], n2: dict[str, str], web: tuple[str, ...], web_on: str = "n1", web_state: str = "running"
) -> Snapshot:
    nodes = tuple(
        Node(id=h, version=7, hostname=h, role="worker", availability="active", state="ready",
             labels=frozen_labels(labels))
        for h, labels in (("n1", n1), ("n2", n2))
    )  # fmt: skip
    services = (
        Service(id="db", version=3, name="app_db", replicas=1),
        Service(id="web", version=4, name="app_web", replicas=1, constraints=web),
    )
    tasks = (
        Task(id="t-db", service_id="db", node_id="n1", slot=1, desired_state="running", state="running"),
        Task(id="t-web", service_id="web", node_id=web_on, slot=1, desired_state="running", state=web_state),
    )
    return Snapshot(nodes, services, tasks)


BOTH = {"db": "true", "orcastra.anchor.app_db": "true"}


@pytest.mark.parametrize(
    ("snapshot", "step", "changes"),
    [
        (snap({"db": "true"}, {}, (OLD,)), 1,
         ["node/n1 labels db=true orcastra.anchor.app_db=true",
          f"service/app_web +constraint {NEW}, label orcastra.added-constraint=app_db"]),
        (snap({}, {"db": "true"}, (OLD,), web_on="n2"), 1,
         ["node/n1 labels db=true orcastra.anchor.app_db=true",
          f"service/app_web +constraint {NEW}, label orcastra.added-constraint=app_db"]),
        (snap(BOTH, {}, (OLD, NEW), web_state="starting"), 0, []),
        (snap(BOTH, {}, (OLD, NEW)), 2, [f"service/app_web -constraint {OLD}"]),
        (snap(BOTH, {"db": "true"}, (NEW,)), 3, ["node/n1 labels -db", "node/n2 labels -db"]),
        (snap({"orcastra.anchor.app_db": "true"}, {}, (NEW,)), None, []),
    ],
    ids=["step1", "step1-stale-old-label-elsewhere", "wait-for-settling", "step2", "step3", "done"],
)  # fmt: skip
def test_each_step_follows_from_the_snapshot(snapshot: Snapshot, step: int | None, changes: list[str]) -> None:
    plan = plan_migration(snapshot, ANCHORS)
    assert plan.step == step
    assert [f"{a.target} {a.describe()}" for a in plan.actions] == changes
    for a in plan.actions:  # every write at the version it was planned on
        assert (a.node_version if isinstance(a, UpdateNodeLabels) else a.service_version) in (7, 4)  # type: ignore[union-attr]


def test_an_anchor_that_runs_nowhere_is_left_alone() -> None:
    s = snap({"db": "true"}, {}, (OLD,))
    s = Snapshot(s.nodes, s.services, tuple(t for t in s.tasks if t.service_id != "db"))
    plan = plan_migration(s, ANCHORS)
    assert (plan.step, plan.actions, len(plan.found)) == (None, (), 2)
    assert plan.notes == ("app_db runs nowhere: its old labels and constraints stay until it runs",)


def test_a_service_that_does_not_follow_gets_no_ownership_mark() -> None:
    plan = plan_migration(snap({"db": "true"}, {}, (OLD,)), (OldAnchor("db", "app_db"),))
    [update] = [a for a in plan.actions if isinstance(a, UpdateService)]
    assert dict(update.set_labels) == {}


# --- against the fake Engine ---------------------------------------------------------------------------------

ANCHOR, OLD_KEY = "bench_anchor0000", "anchor0000"
DEPS = ("bench_anchor0000-dep0", "bench_anchor0000-dep1")


def prepare_the_old_way(fake: FakeEngine, label_on: str) -> None:
    """The earlier tool's state: the plain label on ``label_on``, the hand-written constraint on dependents,
    and nothing of Orcastra's."""
    base = fake.docker_host.replace("tcp://", "http://")
    with httpx.Client(base_url=base, timeout=5) as http:

        def relabel(host: str, keep_orcastras: bool) -> None:
            node: dict[str, Any] = http.get(f"/nodes/{host}").json()
            labels = {
                k: v for k, v in node["Spec"]["Labels"].items() if keep_orcastras or not k.startswith("orcastra.")
            }
            if host == label_on:
                labels[OLD_KEY] = "true"
            spec = {**node["Spec"], "Labels": labels}
            http.post(f"/nodes/{node['ID']}/update", params={"version": node["Version"]["Index"]}, json=spec)

        relabel(label_on, keep_orcastras=True)  # first the old label, so the dependents always have a node
        for name in DEPS:
            svc: dict[str, Any] = http.get(f"/services/{name}").json()
            spec = svc["Spec"]
            spec["TaskTemplate"]["Placement"]["Constraints"] = [f"node.labels.{OLD_KEY}==true"]
            spec["Labels"] = {k: v for k, v in spec["Labels"].items() if not k.startswith("orcastra.")}
            http.post(f"/services/{svc['ID']}/update", params={"version": svc["Version"]["Index"]}, json=spec)
        for host in ("node1", "node2", "node3"):
            relabel(host, keep_orcastras=False)


@pytest.mark.parametrize("label_on", ["node1", "node2"], ids=["label-where-the-anchor-runs", "stale-label"])
def test_apply_moves_to_orcastras_labels_without_a_dependent_left_without_a_node(label_on: str) -> None:
    with FakeEngine(Cluster(nodes=3, services=4, groups=1, history=False)) as fake:
        prepare_the_old_way(fake, label_on)
        config = Config.model_validate(
            {"stack": "bench", "docker": {"host": fake.docker_host},
             "anchors": {OLD_KEY: {"dependents": ["anchor0000-dep0", "anchor0000-dep1"]}}}
        )  # fmt: skip
        lines: list[str] = []
        with EngineAdapter(EngineSettings(host=fake.docker_host)) as engine:
            assert migration_hint(engine.snapshot(), config) is not None
            executor = make_executor(config, engine, dry_run=False, audit=AuditLog(stream=io.StringIO()))
            migration = Migration(engine, executor, old_anchors(config), lines.append, sleep=lambda _: None)
            before = len(fake.writes())
            preview = migration.preview()  # the dry run writes nothing
            assert (preview.step, len(fake.writes())) == (1, before)
            assert migration.apply().done
            snapshot = engine.snapshot()
            assert migration_hint(snapshot, config) is None
            writes = len(fake.writes())
            assert migration.apply().done  # idempotent: nothing to do, nothing written
            assert len(fake.writes()) == writes
        done = [line.split(":")[0] for line in lines if line.endswith(": ok")]
        assert done == ["step 1"] * 3 + ["step 2"] * 2 + ["step 3"] * (1 if label_on == "node1" else 2)
        for host in ("node1", "node2", "node3"):
            labels = fake.node(host)["Spec"]["Labels"]
            assert OLD_KEY not in labels
            assert ("orcastra.anchor." + ANCHOR in labels) == (host == "node1")
        for name in DEPS:
            assert fake.service(name)["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == [
                f"node.labels.orcastra.anchor.{ANCHOR}==true"
            ]
            states = {t["Status"]["State"] for t in fake.tasks(name)}
            assert not states & {"pending", "rejected"}, states  # never without a node
            assert {t["NodeID"] for t in fake.tasks(name, "running")} == {fake.node("node1")["ID"]}
