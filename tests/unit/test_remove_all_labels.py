"""remove_all_labels: the command's syntax (words and mapping forms), the pure planner, and the handler (refusal
while anchors run, pause first, conflicts read again)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_commands import FakeContext, FakeOps

from orcastra.commands.dispatch import run_command
from orcastra.commands.model import Command, Malformed, parse_entry
from orcastra.config import Config
from orcastra.domain.actions import Action, UpdateNodeLabels
from orcastra.domain.snapshot import Node, Service, Snapshot, Task, frozen_labels
from orcastra.features.label_removal.plan import owned_node_labels, plan_remove_all_labels
from orcastra.runtime.executor import Outcome
from orcastra.runtime.handlers import CommandHandlers


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("remove_all_labels", Command("remove_all_labels")),
        ("remove_all_labels --force", Command("remove_all_labels", force=True)),
        ({"command": "remove_all_labels", "force": True}, Command("remove_all_labels", force=True)),
        ({"command": "remove_all_labels", "force": False}, Command("remove_all_labels")),
        ({"command": "remove_all_labels --force"}, Command("remove_all_labels", force=True)),
        ({"command": "remove_all_labels", "force": "yes"},
         Malformed("remove_all_labels: 'force' must be true or false, got 'yes'")),
        ("remove_all_labels now", Malformed("remove_all_labels takes no argument (besides --force), got 'now'")),
        ("sync --force", Malformed("sync takes no argument, got '--force'")),
        ({"command": "sync", "force": True}, Malformed("sync: unexpected key force")),
    ],
    ids=["words", "words-force", "mapping-force", "mapping-no-force", "mapping-words-force", "bad-force",
         "extra-word", "force-elsewhere", "force-key-elsewhere"],
)  # fmt: skip
def test_remove_all_labels_syntax(entry: object, expected: Command | Malformed) -> None:
    assert parse_entry(entry) == expected


def test_a_forced_command_round_trips_through_its_entry_and_text() -> None:
    cmd = Command("remove_all_labels", force=True)
    assert cmd.to_entry() == {"command": "remove_all_labels", "force": True}
    assert parse_entry(cmd.to_entry()) == cmd
    assert parse_entry(str(cmd)) == cmd
    ctx = FakeContext()
    assert run_command(cmd, ctx).ok
    assert ctx.calls == [("remove_all_labels", "--force")]


def node(name: str, labels: dict[str, str], version: int = 5) -> Node:
    return Node(id=f"id-{name}", version=version, hostname=name, role="worker", availability="active",
                state="ready", labels=frozen_labels(labels))  # fmt: skip


def swarm(anchor_runs: bool, n1_version: int = 5) -> Snapshot:
    nodes = (
        node("n1", {"zone": "a", "hand": "x", "orcastra.owned-labels": "zone", "orcastra.anchor.app_db": "true"},
             n1_version),
        node("n2", {"orcastra.place.app_web": "true", "hand": "y"}),
        node("n3", {"hand": "z"}),
    )  # fmt: skip
    services = (Service(id="db", version=1, name="app_db"),)
    tasks = (
        (Task(id="t", service_id="db", node_id="id-n1", slot=1, desired_state="running", state="running"),)
        if anchor_runs
        else ()
    )
    return Snapshot(nodes, services, tasks)


def test_the_plan_removes_what_orcastra_owns_and_nothing_else() -> None:
    plan = plan_remove_all_labels(swarm(anchor_runs=False))
    assert [(a.hostname, a.node_version, a.remove_labels, dict(a.set_labels)) for a in plan.actions] == [
        ("n1", 5, ("orcastra.anchor.app_db", "orcastra.owned-labels", "zone"), {}),
        ("n2", 5, ("orcastra.place.app_web",), {}),
    ]
    assert plan.running_anchors == ()
    assert plan.label_count == 4


@pytest.mark.parametrize(
    ("labels", "owned"),
    [
        ({"orcastra.owned-labels": "zone, gone", "zone": "a"}, ("orcastra.owned-labels", "zone")),
        ({"zone": "a"}, ()),
        ({"orcastra.anchor.x": "true", "Orcastra.x": "1"}, ("orcastra.anchor.x",)),
    ],
    ids=["recorded-keys-present-only", "nothing-recorded", "prefix-is-case-sensitive"],
)
def test_owned_node_labels(labels: dict[str, str], owned: tuple[str, ...]) -> None:
    assert owned_node_labels(node("n", labels)) == owned


def test_the_plan_names_the_anchors_that_run() -> None:
    assert plan_remove_all_labels(swarm(anchor_runs=True)).running_anchors == ("app_db",)


class ConflictOnce(FakeOps):
    """The first label update of n1 meets a conflict; the swarm as read again has n1 at a newer version."""

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        out = super().apply(actions, snapshot)
        if len(self.applied) == len(actions):  # the first attempt
            self.swarm = Snapshot(
                tuple(node("n1", {"zone": "a", "orcastra.owned-labels": "zone"}, 6) if n.hostname == "n1" else
                      node("n2", {}) if n.hostname == "n2" else n for n in self.swarm.nodes),
                self.swarm.services,
                self.swarm.tasks,
            )  # fmt: skip
            return [Outcome(o.action, "conflict" if o.action.target == "node/n1" else "ok") for o in out]
        return out


def test_refused_while_an_anchor_runs_and_nothing_changes() -> None:
    ops = FakeOps(config=Config(), swarm=swarm(anchor_runs=True))
    done = run_command(Command("remove_all_labels"), CommandHandlers(ops))
    assert done.result == "error"
    assert "anchors run (app_db)" in done.message
    assert "--force" in done.message
    assert (ops.applied, ops.paused) == ([], False)


@pytest.mark.parametrize("anchor_runs", [True, False], ids=["forced-while-running", "nothing-runs"])
def test_pauses_then_removes_with_the_nodes_versions(anchor_runs: bool) -> None:
    ops = FakeOps(config=Config(), swarm=swarm(anchor_runs))
    done = run_command(Command("remove_all_labels", force=anchor_runs), CommandHandlers(ops))
    assert done.result == "ok", done.message
    assert done.message.startswith("paused first (resume would put the labels back); removed 4 label(s) from 2")
    assert ops.paused
    assert [(a.target, a.node_version) for a in ops.applied if isinstance(a, UpdateNodeLabels)] == [
        ("node/n1", 5),
        ("node/n2", 5),
    ]


def test_a_conflict_is_read_again_and_retried_at_the_new_version() -> None:
    ops = ConflictOnce(config=Config(), swarm=swarm(anchor_runs=False))
    done = run_command(Command("remove_all_labels"), CommandHandlers(ops))
    assert done.result == "ok", done.message
    assert [(a.target, a.node_version) for a in ops.applied if isinstance(a, UpdateNodeLabels)] == [
        ("node/n1", 5),
        ("node/n2", 5),
        ("node/n1", 6),
    ]
    assert "removed 3 label(s) from 2 node(s)" in done.message


def test_nothing_to_remove_still_pauses() -> None:
    ops = FakeOps(config=Config(), swarm=Snapshot((node("n3", {"hand": "z"}),), (), ()), paused=True)
    done = run_command(Command("remove_all_labels"), CommandHandlers(ops))
    assert (done.result, done.message) == ("ok", "already paused; no node carries a label Orcastra owns")
