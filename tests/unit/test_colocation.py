"""Table tests of the anchor-following planner over snapshots built in code (no daemon, no clock)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orcastra.domain.actions import UpdateNodeLabels, UpdateService, merge_node_label_updates
from orcastra.domain.labels import (
    ADDED_CONSTRAINT_LABEL,
    DEPENDENTS_PENDING_LABEL,
    FOLLOW_LABEL,
    RESTART_AT_LABEL,
    RESTART_ATTEMPTS_LABEL,
)
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.features.colocation.groups import AnchorGroup, ColocationSettings
from orcastra.features.colocation.plan import anchor_constraint, anchor_label_key, plan_colocation
from orcastra.features.colocation.status import ColocationPlan

KEY = anchor_label_key("app_db")
CONSTRAINT = anchor_constraint("app_db")
NOW = 10_000.0


def node(name: str, labels: Mapping[str, str] | None = None, state: str = "ready") -> Node:
    return Node(
        id=name, version=1, hostname=name, role="worker", availability="active", state=state,
        labels=frozen_labels(labels),
    )  # fmt: skip


def service(
    name: str, *, replicas: int = 1, constraints: tuple[str, ...] = (), labels: Mapping[str, str] | None = None
) -> Service:
    return Service(
        id=name, version=5, name=name, replicas=replicas, constraints=constraints,
        labels=frozen_labels(labels), stack=name.split("_", maxsplit=1)[0],
    )  # fmt: skip


def task(svc: str, node_id: str, state: str = "running", at: float = NOW - 100, desired: str = "running") -> Task:
    return Task(
        id=f"{svc}-{node_id}-{state}-{at}", service_id=svc, node_id=node_id, slot=1, desired_state=desired,
        state=state, updated_at=at, created_at=at,
    )  # fmt: skip


GROUP = AnchorGroup("app_db", ("app_web", "app_worker"), restart_dependents=False, retry_intervals=(2, 10, 60))
SETTINGS = ColocationSettings(groups=(GROUP,))
DEPS = (service("app_web", replicas=2, constraints=(CONSTRAINT,)), service("app_worker", constraints=(CONSTRAINT,)))


def snap(nodes: tuple[Node, ...], services: tuple[Service, ...], tasks: tuple[Task, ...]) -> Snapshot:
    return Snapshot(nodes=nodes, services=services, tasks=tasks, taken_at=NOW)


def plan(s: Snapshot, settings: ColocationSettings = SETTINGS, now: float = NOW) -> ColocationPlan:
    return plan_colocation(s, settings, now)


def node_changes(p: ColocationPlan) -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    return {
        a.hostname: (dict(a.set_labels), a.remove_labels) for a in p.plan.actions if isinstance(a, UpdateNodeLabels)
    }


def service_changes(p: ColocationPlan) -> dict[str, UpdateService]:
    return {a.service_name: a for a in p.plan.actions if isinstance(a, UpdateService)}


def colocated_snapshot(anchor_labels: Mapping[str, str] | None = None) -> Snapshot:
    return snap(
        (node("n1", {KEY: "true"}), node("n2")),
        (service("app_db", labels=anchor_labels), *DEPS),
        (task("app_db", "n1"), task("app_web", "n1"), task("app_web", "n1", at=NOW - 99), task("app_worker", "n1")),
    )


def test_colocated_group_needs_nothing() -> None:
    p = plan(colocated_snapshot())
    assert p.plan.actions == ()
    (g,) = p.groups
    assert g.colocated
    assert g.anchor_nodes == ("n1",)
    assert [d.nodes for d in g.dependents] == [("n1",), ("n1",)]


def test_anchor_without_label_gets_it() -> None:
    s = snap((node("n1"), node("n2")), (service("app_db"), *DEPS), (task("app_db", "n1"),))
    p = plan(s)
    assert node_changes(p) == {"n1": ({KEY: "true"}, ())}
    assert not p.groups[0].colocated


def test_anchor_moved_new_node_labelled_before_old_loses_it() -> None:
    s = snap(
        (node("n1", {KEY: "true"}), node("n2")),
        (service("app_db"), *DEPS),
        (task("app_db", "n1", state="shutdown", desired="shutdown"), task("app_db", "n2"), task("app_web", "n1")),
    )
    p = plan(s)
    assert node_changes(p) == {"n2": ({KEY: "true"}, ()), "n1": ({}, (KEY,))}
    ordered = merge_node_label_updates(list(p.plan.actions))
    assert [a.target for a in ordered if isinstance(a, UpdateNodeLabels)] == ["node/n2", "node/n1"]
    # Labels are moving: Swarm's constraint enforcer moves the dependents; no forced update yet.
    assert not any(a.force for a in service_changes(p).values())


def test_task_on_down_node_does_not_count_as_running() -> None:
    # The orphaned task on a Down node still says "running"; the anchor now runs on n2.
    s = snap(
        (node("n1", {KEY: "true"}, state="down"), node("n2")),
        (service("app_db"), *DEPS),
        (task("app_db", "n1"), task("app_db", "n2", at=NOW - 1)),
    )
    p = plan(s)
    assert node_changes(p) == {"n2": ({KEY: "true"}, ()), "n1": ({}, (KEY,))}
    assert p.groups[0].anchor_nodes == ("n2",)


def test_replicated_anchor_labels_every_node_it_runs_on() -> None:
    s = snap(
        (node("n1"), node("n2"), node("n3")),
        (service("app_db", replicas=2), *DEPS),
        (task("app_db", "n1"), task("app_db", "n2")),
    )
    assert set(node_changes(plan(s))) == {"n1", "n2"}


@pytest.mark.parametrize(
    ("anchor_labels", "last_task_at", "now", "want_force", "want_attempt"),
    [
        ({}, NOW - 1, NOW, False, None),  # failed 1 s ago, first retry after 2 s
        ({}, NOW - 3, NOW, True, "1"),
        ({RESTART_ATTEMPTS_LABEL: "1", RESTART_AT_LABEL: str(NOW - 5)}, NOW - 3, NOW, False, None),  # 10 s backoff
        ({RESTART_ATTEMPTS_LABEL: "1", RESTART_AT_LABEL: str(NOW - 11)}, NOW - 3, NOW, True, "2"),
        ({RESTART_ATTEMPTS_LABEL: "7", RESTART_AT_LABEL: str(NOW - 59)}, NOW - 3, NOW, False, None),  # capped at 60
        ({RESTART_ATTEMPTS_LABEL: "7", RESTART_AT_LABEL: str(NOW - 61)}, NOW - 3, NOW, True, "8"),
    ],
    ids=["wait-first", "first-restart", "backing-off", "second-restart", "capped-wait", "capped-restart"],
)
def test_anchor_restart_backoff(
    anchor_labels: dict[str, str], last_task_at: float, now: float, want_force: bool, want_attempt: str | None
) -> None:
    s = snap(
        (node("n1", {KEY: "true"}), node("n2")),
        (service("app_db", labels=anchor_labels), *DEPS),
        (task("app_db", "n1", state="rejected", at=last_task_at), task("app_web", "n1")),
    )
    p = plan(s, now=now)
    change = service_changes(p).get("app_db")
    assert bool(change and change.force) == want_force
    if want_attempt:
        assert change is not None
        assert change.set_labels[RESTART_ATTEMPTS_LABEL] == want_attempt
        assert change.set_labels[RESTART_AT_LABEL] == f"{now:.0f}"
        assert "rejected" in change.reason
    else:
        assert p.groups[0].next_restart_at is not None
        assert "backing off" in p.groups[0].why
    # The anchor is down: its label stays where it was, so running dependents are not evicted.
    assert "n1" not in node_changes(p)


def test_pending_anchor_gets_a_grace_period() -> None:
    s = snap((node("n1"),), (service("app_db"), *DEPS), (task("app_db", "", state="pending", at=NOW - 10),))
    assert "app_db" not in service_changes(plan(s))
    s2 = snap((node("n1"),), (service("app_db"), *DEPS), (task("app_db", "", state="pending", at=NOW - 40),))
    assert service_changes(plan(s2))["app_db"].force


def test_missing_constraint_is_added_once_per_service() -> None:
    s = snap(
        (node("n1", {KEY: "true"}),),
        (service("app_db"), service("app_web", replicas=2), DEPS[1]),
        (task("app_db", "n1"), task("app_web", "n1"), task("app_worker", "n1")),
    )
    changes = service_changes(plan(s))
    assert list(changes) == ["app_web"]
    assert changes["app_web"].add_constraints == (CONSTRAINT,)
    assert not changes["app_web"].force
    assert "stack file" in changes["app_web"].reason


def test_constraint_with_spaces_counts_as_present() -> None:
    spaced = CONSTRAINT.replace("==", " == ")
    deps = (service("app_web", constraints=(spaced,)), DEPS[1])
    s = snap(
        (node("n1", {KEY: "true"}),),
        (service("app_db"), *deps),
        (task("app_db", "n1"), task("app_web", "n1"), task("app_worker", "n1")),
    )
    p = plan(s)
    assert "app_web" not in service_changes(p)
    assert p.groups[0].colocated


@pytest.mark.parametrize(
    ("anchor_started", "want_force"),
    [(NOW - 5, False), (NOW - 30, True)],
    ids=["within-grace", "after-grace"],
)
def test_misplaced_dependent_forced_only_after_grace(anchor_started: float, want_force: bool) -> None:
    s = snap(
        (node("n1", {KEY: "true"}), node("n2")),
        (service("app_db"), *DEPS),
        (
            task("app_db", "n1", at=anchor_started),
            task("app_web", "n1"),
            task("app_web", "n1", at=NOW - 98),
            task("app_worker", "n2"),
        ),
    )
    p = plan(s)
    change = service_changes(p).get("app_worker")
    assert bool(change and change.force) == want_force
    assert "running on n2, anchor on n1" in p.groups[0].why


def test_colocated_group_resets_backoff() -> None:
    p = plan(colocated_snapshot({RESTART_ATTEMPTS_LABEL: "3", RESTART_AT_LABEL: "9000"}))
    change = service_changes(p)["app_db"]
    assert sorted(change.remove_labels) == sorted([RESTART_ATTEMPTS_LABEL, RESTART_AT_LABEL])
    assert not change.force


def test_restart_dependents_once_anchor_runs_again() -> None:
    p = plan(colocated_snapshot({DEPENDENTS_PENDING_LABEL: "true"}))
    changes = service_changes(p)
    assert DEPENDENTS_PENDING_LABEL in changes["app_db"].remove_labels
    assert changes["app_web"].force
    assert changes["app_worker"].force


def test_follow_label_declares_a_group_within_the_stack() -> None:
    s = snap(
        (node("n1"),),
        (service("shop_db"), service("shop_api", labels={FOLLOW_LABEL: "db"})),
        (task("shop_db", "n1"),),
    )
    p = plan(s, ColocationSettings())
    (g,) = p.groups
    assert (g.anchor, g.source, [d.name for d in g.dependents]) == ("shop_db", "labels", ["shop_api"])
    assert service_changes(p)["shop_api"].add_constraints == (anchor_constraint("shop_db"),)


def test_follow_label_conflicting_with_config_is_reported_and_config_wins() -> None:
    s = snap(
        (node("n1", {KEY: "true"}),),
        (service("app_db"), service("app_cache"), DEPS[0], service("app_worker", labels={FOLLOW_LABEL: "cache"})),
        (task("app_db", "n1"),),
    )
    p = plan(s)
    assert [g.anchor for g in p.groups] == ["app_db"]
    assert any("the config wins" in f.message for f in p.plan.findings)


def test_labels_of_anchors_no_longer_declared_are_removed() -> None:
    s = snap((node("n1", {anchor_label_key("old_db"): "true", "zone": "a"}),), (), ())
    p = plan(s, ColocationSettings())
    assert node_changes(p) == {"n1": ({}, (anchor_label_key("old_db"),))}


def test_missing_anchor_service_is_reported_and_labels_kept() -> None:
    s = snap((node("n1", {KEY: "true"}),), DEPS, ())
    p = plan(s)
    assert p.plan.actions == ()
    assert p.groups[0].why == "anchor service not found"


def test_dependent_pending_right_after_label_change_is_not_forced() -> None:
    # The anchor has run for long, but its node got the label 3 s ago (e.g. after a hand edit): the
    # dependents are being scheduled by Swarm; a forced update would only restart them.
    fresh = Node(
        id="n1", version=2, hostname="n1", role="worker", availability="active", state="ready",
        labels=frozen_labels({KEY: "true"}), updated_at=NOW - 3,
    )  # fmt: skip
    s = snap((fresh,), (service("app_db"), *DEPS), (task("app_db", "n1", at=NOW - 500),))
    p = plan(s)
    assert service_changes(p) == {}
    assert p.plan.wake_at == NOW - 3 + SETTINGS.misplaced_grace_seconds + 2  # + the first retry interval


def test_backoff_sets_a_wake_up_time() -> None:
    s = snap(
        (node("n1", {KEY: "true"}),),
        (service("app_db"), *DEPS),
        (task("app_db", "n1", state="failed", at=NOW - 1), task("app_web", "n1"), task("app_worker", "n1")),
    )
    assert plan(s).plan.wake_at == NOW + 1  # first retry 2 s after the failure


def test_task_history_is_asked_for_every_group_service_only() -> None:
    from orcastra.features.colocation.groups import group_service_ids

    followers = service("app_cache", labels={FOLLOW_LABEL: "db"})
    s = snap((node("n1"),), (service("app_db"), *DEPS, followers, service("app_other")), ())
    assert group_service_ids(s, SETTINGS) == {"app_db", "app_web", "app_worker", "app_cache"}
    assert group_service_ids(s, ColocationSettings()) == {"app_db", "app_cache"}


def _down_node_snapshot(extra: tuple[Task, ...], down_since: float) -> Snapshot:
    down = Node(
        id="n1", version=1, hostname="n1", role="worker", availability="active", state="down",
        labels=frozen_labels({KEY: "true"}), updated_at=down_since,
    )  # fmt: skip
    old = task("app_db", "n1", at=NOW - 600)  # still "running" on the node that died
    return snap((down, node("n2")), (service("app_db"), *DEPS), (old, *extra))


def test_anchor_on_a_down_node_with_a_replacement_waiting_out_its_restart_delay_is_left_to_swarm() -> None:
    waiting = Task(
        id="new", service_id="app_db", node_id="", slot=1, desired_state="ready", state="ready",
        updated_at=NOW - 2, created_at=NOW - 2,
    )  # fmt: skip
    p = plan(_down_node_snapshot((waiting,), down_since=NOW - 2))
    assert "app_db" not in service_changes(p)
    assert "backing off" in p.groups[0].why


def test_anchor_on_a_down_node_gets_the_pending_grace_from_when_the_node_went_down() -> None:
    p = plan(_down_node_snapshot((), down_since=NOW - 5))
    assert "app_db" not in service_changes(p)
    assert "its node n1 is down" in p.groups[0].why
    late = plan(_down_node_snapshot((), down_since=NOW - 5), now=NOW + 60)
    assert service_changes(late)["app_db"].force


# --- constraints of anchors that are gone ---------------------------------------------------------------------

OLD = anchor_constraint("app_cache")


@pytest.mark.parametrize(
    ("web_labels", "web_constraints", "removed", "warned"),
    [
        ({ADDED_CONSTRAINT_LABEL: "app_cache"}, (OLD,), True, False),
        ({}, (OLD,), False, True),
        ({ADDED_CONSTRAINT_LABEL: "app_cache"}, (" node.labels.orcastra.anchor.app_cache == TRUE ",), True, False),
        ({ADDED_CONSTRAINT_LABEL: "app_db"}, (CONSTRAINT,), False, False),
    ],
    ids=["ours-removed", "users-reported", "ours-spelled-otherwise", "still-its-anchor"],
)
def test_the_constraint_of_an_anchor_that_is_gone(
    web_labels: Mapping[str, str], web_constraints: tuple[str, ...], removed: bool, warned: bool
) -> None:
    # app_cache was an anchor (in the config, or by labels); it is not any more. app_web still follows app_db
    # in the last case only.
    web = service("app_web", constraints=web_constraints, labels=web_labels)
    settings = SETTINGS if web_constraints == (CONSTRAINT,) else ColocationSettings()
    s = snap((node("n1"), node("n2")), (service("app_db"), web), (task("app_db", "n1"), task("app_web", "n1")))
    p = plan(s, settings)
    change = service_changes(p).get("app_web")
    if removed:
        assert change is not None
        assert change.remove_constraints == web_constraints
        assert change.remove_labels == (ADDED_CONSTRAINT_LABEL,)
        assert change.add_constraints == ()
    else:
        assert change is None or change.remove_constraints == ()
    warnings = [f for f in p.plan.findings if f.subject == "app_web" and "can never be scheduled" in f.message]
    assert bool(warnings) == warned
    assert all(f.level == "warning" for f in warnings)


def test_adding_a_constraint_records_that_orcastra_added_it() -> None:
    web = service("app_web", replicas=2)
    s = snap((node("n1", {KEY: "true"}),), (service("app_db"), web, DEPS[1]), (task("app_db", "n1"),))
    change = service_changes(plan(s))["app_web"]
    assert change.add_constraints == (CONSTRAINT,)
    assert change.set_labels[ADDED_CONSTRAINT_LABEL] == "app_db"
