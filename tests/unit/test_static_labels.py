"""Table tests of the static labels planner: snapshots built in code, no daemon."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orcastra.domain.actions import UpdateNodeLabels, merge_node_label_updates
from orcastra.domain.snapshot import Node, Snapshot, frozen_labels
from orcastra.features.static_labels.plan import (
    OWNED_LABELS_KEY,
    StaticLabelSettings,
    plan_node_labels,
    plan_static_labels,
)


def node(hostname: str, labels: Mapping[str, str] | None = None, version: int = 7) -> Node:
    return Node(
        id=f"id-{hostname}",
        version=version,
        hostname=hostname,
        role="worker",
        availability="active",
        state="ready",
        labels=frozen_labels(labels),
    )


CASES = [
    # (current labels, desired, prune, expected set, expected remove)
    ({}, {"ssd": "true"}, False, {"ssd": "true", OWNED_LABELS_KEY: "ssd"}, ()),
    ({"ssd": "true", OWNED_LABELS_KEY: "ssd"}, {"ssd": "true"}, False, None, None),
    ({"zone": "a", OWNED_LABELS_KEY: "zone"}, {"zone": "b"}, False, {"zone": "b"}, ()),
    # hand-set value is overwritten but not taken into ownership
    ({"zone": "a"}, {"zone": "b"}, False, {"zone": "b"}, ()),
    # hand-set label never removed, even with prune
    ({"rack": "1"}, {}, True, None, None),
    # owned label no longer configured: kept without prune...
    ({"old": "true", OWNED_LABELS_KEY: "old"}, {}, False, None, None),
    # ...removed with prune, ownership record removed too
    ({"old": "true", OWNED_LABELS_KEY: "old"}, {}, True, {}, ("old", OWNED_LABELS_KEY)),
    # prune only what is owned; keep hand-set neighbours
    (
        {"old": "1", "rack": "1", "ssd": "true", OWNED_LABELS_KEY: "old,ssd"},
        {"ssd": "true"},
        True,
        {OWNED_LABELS_KEY: "ssd"},
        ("old",),
    ),
    # an owned label removed by hand and still configured is added again
    ({OWNED_LABELS_KEY: "ssd"}, {"ssd": "true"}, False, {"ssd": "true"}, ()),
    # an owned label removed by hand and no longer configured: forget ownership
    ({OWNED_LABELS_KEY: "gone"}, {}, False, {}, (OWNED_LABELS_KEY,)),
    # several new labels, ownership sorted
    ({}, {"b": "2", "a": "1"}, False, {"a": "1", "b": "2", OWNED_LABELS_KEY: "a,b"}, ()),
]


@pytest.mark.parametrize(
    ("current", "desired", "prune", "want_set", "want_remove"),
    CASES,
    ids=[
        "add-new",
        "in-sync",
        "change-owned",
        "overwrite-hand-set",
        "never-remove-hand-set",
        "keep-stale-without-prune",
        "prune-stale",
        "prune-only-owned",
        "re-add-removed-owned",
        "forget-removed-unconfigured",
        "several-sorted",
    ],
)
def test_plan_node_labels(
    current: dict[str, str],
    desired: dict[str, str],
    prune: bool,
    want_set: dict[str, str] | None,
    want_remove: tuple[str, ...] | None,
) -> None:
    action, _ = plan_node_labels(node("n1", current), desired, prune)
    if want_set is None:
        assert action is None
        return
    assert action is not None
    assert dict(action.set_labels) == want_set
    assert sorted(action.remove_labels) == sorted(want_remove or ())
    assert action.node_version == 7
    assert action.reason


def test_hand_set_overwrite_is_reported() -> None:
    _, findings = plan_node_labels(node("n1", {"zone": "a"}), {"zone": "b"}, False)
    assert any("set by someone else" in f.message for f in findings)


def test_plan_reports_unknown_hostnames_and_touches_only_configured_nodes() -> None:
    snap = Snapshot(nodes=(node("n1"), node("n2", {"x": "1"})), services=(), tasks=())
    settings = StaticLabelSettings(labels={"n1": {"ssd": "true"}, "ghost": {"a": "b"}})
    plan = plan_static_labels(snap, settings)
    assert [a.hostname for a in plan.actions] == ["n1"]
    assert any(f.subject == "ghost" and f.level == "warning" for f in plan.findings)


def test_merge_gives_one_update_per_node() -> None:
    a = UpdateNodeLabels("id1", "n1", 3, {"a": "1"}, (), "r1", "c1")
    b = UpdateNodeLabels("id1", "n1", 3, {"b": "2"}, ("a", "z"), "r2", "c2")
    c = UpdateNodeLabels("id2", "n2", 4, {"c": "3"}, (), "r3", "c1")
    merged = merge_node_label_updates([a, b, c])
    assert len(merged) == 2
    first = next(m for m in merged if m.node_id == "id1")
    assert isinstance(first, UpdateNodeLabels)
    assert dict(first.set_labels) == {"a": "1", "b": "2"}
    assert first.remove_labels == ("z",)
    assert first.reason == "r1; r2"


def test_merge_puts_label_removals_after_additions() -> None:
    remove_old = UpdateNodeLabels("id1", "n1", 3, {}, ("orcastra.anchor.db",), "anchor left n1", "colocation")
    add_new = UpdateNodeLabels("id2", "n2", 4, {"orcastra.anchor.db": "true"}, (), "anchor runs on n2", "colocation")
    merged = merge_node_label_updates([remove_old, add_new])
    assert [a.node_id for a in merged] == ["id2", "id1"]
