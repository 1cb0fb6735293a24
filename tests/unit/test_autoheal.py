"""Autoheal's decisions, one rule per test: opting in and out, the start period, Swarm tasks left to Swarm
(then acted on after the grace), the backoff, the cap and the give-up, the reset on healthy, the window, the
stop timeout label, and hostile names kept printable."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orcastra.features.hygiene.autoheal import (
    HEAL_ACTIONS,
    MAX_STOP_TIMEOUT_SECONDS,
    AutohealPolicy,
    Decision,
    HealAction,
    HealHistory,
    HealthView,
    backoff_seconds,
    decide,
    forget_gone,
    on_healthy,
    plan_resync,
    policy_problems,
    record_decision,
    record_give_up,
    record_restart,
    record_swarm_seen,
    resync_histories,
    stop_timeout_seconds,
    summary,
)

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
POLICY = AutohealPolicy()
OPTED_IN = {"orcastra.autoheal": "true"}
TASK = {
    "orcastra.autoheal": "true",
    "com.docker.swarm.task.id": "task-1",
    "com.docker.swarm.service.name": "shop_web",
}


def view(
    labels: Mapping[str, str] = OPTED_IN,
    *,
    health: str = "unhealthy",
    state: str = "running",
    name: str = "/web",
    cid: str = "c1",
    started_at: float | None = NOW - 3600,
    start_period: float = 0.0,
    unhealthy_since: float | None = None,
    restart_policy: str = "",
) -> HealthView:
    return HealthView(
        id=cid,
        name=name,
        health=health,
        state=state,
        labels=labels,
        started_at=started_at,
        start_period_seconds=start_period,
        unhealthy_since=unhealthy_since,
        restart_policy=restart_policy,
    )


def restarted_at(*times: float) -> HealHistory:
    return HealHistory(restarts=tuple(times))


# --- opting in and out ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "all_containers", "action", "said"),
    [
        ({}, False, "none", "not opted in (no orcastra.autoheal=true or autoheal=true container label)"),
        ({"orcastra.autoheal": "true"}, False, "restart", "restarting it"),
        ({"autoheal": "true"}, False, "restart", "restarting it"),
        ({"orcastra.autoheal": " TRUE "}, False, "restart", "restarting it"),
        ({}, True, "restart", "restarting it"),
        ({"orcastra.autoheal": "false"}, True, "none", "opted out by the label orcastra.autoheal=false"),
        ({"autoheal": "false"}, True, "none", "opted out by the label autoheal=false"),
        ({"orcastra.autoheal": "false", "autoheal": "true"}, False, "none", "orcastra.autoheal=false"),
        ({"orcastra.autoheal": "true", "autoheal": "false"}, False, "restart", "restarting it"),
        ({"orcastra.autoheal": "yes"}, False, "none", 'orcastra.autoheal="yes" is neither true nor false'),
        ({"orcastra.autoheal": "yes"}, True, "restart", "restarting it"),
        ({"orcastra.autoheal": "yes", "autoheal": "true"}, False, "restart", "restarting it"),
    ],
    ids=[
        "no-label",
        "orcastra-true",
        "willfarrell-true",
        "case-and-spaces",
        "all-containers",
        "orcastra-false-beats-all",
        "willfarrell-false-beats-all",
        "orcastra-label-wins-out",
        "orcastra-label-wins-in",
        "unreadable-value-ignored",
        "unreadable-value-with-all",
        "unreadable-then-willfarrell",
    ],
)
def test_opt_in_and_out_by_container_label(
    labels: dict[str, str], all_containers: bool, action: str, said: str
) -> None:
    decision = decide(view(labels), None, AutohealPolicy(all_containers=all_containers), NOW)
    assert decision.action == action
    assert said in decision.reason


def test_a_task_not_opted_in_is_told_where_the_label_goes() -> None:
    labels = {"com.docker.swarm.task.id": "t", "com.docker.swarm.service.name": "shop_web"}
    decision = decide(view(labels), None, POLICY, NOW)
    assert decision.action == "none"
    assert "set orcastra.autoheal=true in its deploy.labels or its container labels" in decision.reason


def test_a_service_label_from_the_controllers_facts_opts_its_tasks_in_and_a_container_label_wins() -> None:
    import msgspec

    from orcastra.adapters.node_engine import ContainerDetail
    from orcastra.runtime.node_autoheal import view_of

    task = {"com.docker.swarm.task.id": "t", "com.docker.swarm.service.name": "shop_web"}
    detail = msgspec.convert({"Id": "c1", "Name": "/shop_web.1.x", "Config": {"Labels": task}}, ContainerDetail)
    assert view_of(detail, None, {"shop_web": "true"}).labels["orcastra.autoheal"] == "true"
    assert "orcastra.autoheal" not in view_of(detail, None, {"other": "true"}).labels
    own = msgspec.convert({"Id": "c1", "Config": {"Labels": {**task, "autoheal": "false"}}}, ContainerDetail)
    assert "orcastra.autoheal" not in view_of(own, None, {"shop_web": "true"}).labels


@pytest.mark.parametrize(
    ("health", "state", "restart_policy", "labels", "said"),
    [
        ("healthy", "running", "", OPTED_IN, "web is healthy, not unhealthy"),
        ("starting", "running", "", OPTED_IN, "web is starting, not unhealthy"),
        ("", "running", "", OPTED_IN, "web has no health check"),
        ("unhealthy", "exited", "always", OPTED_IN, "its restart policy (always) decides"),
        ("unhealthy", "exited", "no", OPTED_IN, "autoheal restarts running containers only"),
        ("unhealthy", "restarting", "on-failure", OPTED_IN, "but restarting"),
        ("unhealthy", "exited", "", TASK, "Swarm's restart policy decides"),
    ],
    ids=["healthy", "starting", "no-health-check", "exited-always", "exited-no-policy", "restarting", "task-exited"],
)
def test_only_a_running_unhealthy_container_is_acted_on(
    health: str, state: str, restart_policy: str, labels: dict[str, str], said: str
) -> None:
    decision = decide(view(labels, health=health, state=state, restart_policy=restart_policy), None, POLICY, NOW)
    assert decision.action == "none"
    assert said in decision.reason


# --- the start period ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("started_at", "start_period", "action", "retry_at"),
    [
        (NOW - 10, 30.0, "wait", NOW + 20),
        (NOW - 30, 30.0, "restart", None),
        (NOW - 10, 0.0, "restart", None),
        (None, 30.0, "restart", None),
    ],
    ids=["within", "just-over", "no-start-period", "start-time-unknown"],
)
def test_the_start_period_is_waited_out(
    started_at: float | None, start_period: float, action: str, retry_at: float | None
) -> None:
    decision = decide(view(started_at=started_at, start_period=start_period), None, POLICY, NOW)
    assert (decision.action, decision.retry_at) == (action, retry_at)
    if action == "wait":
        assert "within its start period of 30 seconds (started 10 seconds ago): waiting 20 seconds" in decision.reason


# --- Swarm tasks ---------------------------------------------------------------------------------------------


def test_a_swarm_task_is_left_to_swarm_then_restarted_after_the_grace() -> None:
    within = decide(view(TASK, unhealthy_since=NOW - 30), None, POLICY, NOW)
    assert within.action == "swarm"
    assert within.retry_at == NOW + 30
    assert "task of the service shop_web" in within.reason
    assert "Swarm replaces unhealthy tasks; not acting" in within.reason
    assert within.stop_timeout_seconds is None

    after = decide(view(TASK, unhealthy_since=NOW - 61), None, POLICY, NOW)
    assert after.action == "restart"
    assert after.reason.startswith(
        "autoheal: Swarm did not replace this task within its grace of 60 seconds (1 minute); web is unhealthy for "
        "61 seconds: restarting it"
    )
    assert after.stop_timeout_seconds == 10


def test_without_an_unhealthy_time_the_grace_runs_from_the_first_sighting() -> None:
    first = decide(view(TASK), None, POLICY, NOW)
    assert (first.action, first.retry_at) == ("swarm", NOW + 60)
    history = record_decision(None, first, NOW, POLICY)
    assert history == HealHistory(swarm_seen_at=NOW)

    again = decide(view(TASK), history, POLICY, NOW + 30)
    assert (again.action, again.retry_at) == ("swarm", NOW + 60)
    assert record_decision(history, again, NOW + 30, POLICY) == history  # the first sighting stays

    assert decide(view(TASK), history, POLICY, NOW + 60).action == "restart"
    assert record_restart(history, NOW + 60, POLICY).swarm_seen_at is None  # a restart ends the spell


def test_a_plain_container_gets_no_swarm_grace() -> None:
    assert decide(view(unhealthy_since=NOW - 1), None, POLICY, NOW).action == "restart"


# --- backoff, cap, give-up -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restarts", "wait"),
    [(0, 0), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (7, 300), (10_000, 300)],
    ids=["first", "second", "third", "fourth", "fifth", "sixth", "capped", "still-capped", "no-overflow"],
)
def test_backoff_doubles_up_to_its_cap(restarts: int, wait: float) -> None:
    assert backoff_seconds(restarts, POLICY) == wait


def test_restarts_follow_the_backoff_schedule_then_give_up() -> None:
    """A container that is unhealthy again 1 s after each restart: restarted at +0, +10, +30, +70 and +150
    (10, 20, 40, 80 s after the previous one), then given up on."""
    history: HealHistory | None = None
    t = NOW
    restarts: list[float] = []
    for _ in range(20):
        decision = decide(view(), history, POLICY, t)
        history = record_decision(history, decision, t, POLICY)
        if decision.action == "restart":
            restarts.append(t - NOW)
            t += 1
        elif decision.action == "wait":
            assert decision.retry_at is not None
            assert "backoff, next restart in" in decision.reason
            t = decision.retry_at
        else:
            break
    assert restarts == [0, 10, 30, 70, 150]
    assert decision.action == "give_up"
    assert t == NOW + 151
    assert "still unhealthy after 5 restart(s) within 600 seconds (10 minutes): giving up" in decision.reason
    assert decision.retry_at == t + 600


def test_a_restart_reason_counts_the_restarts() -> None:
    decision = decide(view(unhealthy_since=NOW - 42), restarted_at(NOW - 100), POLICY, NOW)
    assert decision.action == "restart"
    assert "web is unhealthy for 42 seconds: restarting it (restart 2 of at most 5 within" in decision.reason


def test_give_up_is_decided_once_then_none_until_the_window_has_passed() -> None:
    history = restarted_at(NOW - 50, NOW - 40, NOW - 30, NOW - 20, NOW - 10)
    assert decide(view(), history, POLICY, NOW).action == "give_up"
    history = record_give_up(history, NOW)

    later = decide(view(), history, POLICY, NOW + 100)
    assert later.action == "none"
    assert later.retry_at == NOW + 600
    assert later.reason == (
        "autoheal: web: gave up at 2027-01-15 08:00:00 UTC, 100 seconds ago, after 5 restart(s) within 600 "
        "seconds (10 minutes); trying again in 500 seconds unless it turns healthy first"
    )
    assert decide(view(), history, POLICY, NOW + 599).action == "none"


def test_once_the_window_has_passed_since_giving_up_restarts_start_again() -> None:
    history = record_give_up(restarted_at(NOW - 50, NOW - 40, NOW - 30, NOW - 20, NOW - 10), NOW)
    decision = decide(view(), history, POLICY, NOW + 600)
    assert decision.action == "restart"
    assert "restart 1 of at most 5" in decision.reason
    assert record_restart(history, NOW + 600, POLICY) == HealHistory(restarts=(NOW + 600,))


def test_restarts_older_than_the_window_do_not_count() -> None:
    history = restarted_at(NOW - 700, NOW - 650, NOW - 620, NOW - 610, NOW - 200)
    decision = decide(view(), history, POLICY, NOW)
    assert decision.action == "restart"
    assert "restart 2 of at most 5" in decision.reason
    assert record_restart(history, NOW, POLICY).restarts == (NOW - 200, NOW)


def test_turning_healthy_resets_the_history() -> None:
    given_up = record_give_up(restarted_at(NOW - 50, NOW - 40, NOW - 30, NOW - 20, NOW - 10), NOW)
    assert on_healthy(given_up) is None
    assert on_healthy(None) is None
    decision = decide(view(), on_healthy(given_up), POLICY, NOW + 5)
    assert decision.action == "restart"
    assert "restart 1 of at most 5" in decision.reason


# --- stop timeout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "timeout", "note"),
    [
        ({}, 10, ""),
        ({"orcastra.autoheal.stop_timeout": "30"}, 30, ", from the label orcastra.autoheal.stop_timeout"),
        ({"orcastra.autoheal.stop_timeout": " 2.5 "}, 2.5, ", from the label"),
        ({"orcastra.autoheal.stop_timeout": "0"}, 0, ", from the label"),
        ({"autoheal.stop.timeout": "45"}, 45, ", from the label autoheal.stop.timeout"),
        ({"orcastra.autoheal.stop_timeout": "20", "autoheal.stop.timeout": "45"}, 20, "orcastra.autoheal.stop_timeout"),
        (
            {"orcastra.autoheal.stop_timeout": "abc"},
            10,
            '; the label orcastra.autoheal.stop_timeout="abc" is not a number of seconds (0 or more): using 10 seconds',
        ),
        ({"orcastra.autoheal.stop_timeout": "-1"}, 10, 'stop_timeout="-1" is not a number of seconds'),
        ({"orcastra.autoheal.stop_timeout": "nan"}, 10, "is not a number of seconds"),
        ({"orcastra.autoheal.stop_timeout": "inf"}, 10, "is not a number of seconds"),
        ({"orcastra.autoheal.stop_timeout": ""}, 10, "is not a number of seconds"),
        ({"autoheal.stop.timeout": "1e9"}, MAX_STOP_TIMEOUT_SECONDS, "the most allowed: the label"),
    ],
    ids=[
        "default",
        "integer",
        "float",
        "zero",
        "willfarrell",
        "orcastra-wins",
        "not-a-number",
        "negative",
        "nan",
        "infinite",
        "empty",
        "capped",
    ],
)
def test_stop_timeout_label(labels: dict[str, str], timeout: float, note: str) -> None:
    found, why = stop_timeout_seconds(labels, POLICY)
    assert found == timeout
    assert note in why
    assert bool(why) == bool(note)
    decision = decide(view({**OPTED_IN, **labels}), None, POLICY, NOW)
    assert decision.stop_timeout_seconds == timeout
    assert note in decision.reason


# --- hostile names -------------------------------------------------------------------------------------------

HOSTILE = "\x1b[2J\x1b[31mevil\nautoheal: FAKE restart of db\r" + "x" * 100


@pytest.mark.parametrize(
    ("subject", "history", "action"),
    [
        (view({}, name=HOSTILE), None, "none"),
        (view({"orcastra.autoheal": HOSTILE}, name=HOSTILE), None, "none"),
        (view(name=HOSTILE, health=HOSTILE), None, "none"),
        (view(name=HOSTILE, state=HOSTILE), None, "none"),
        (view({**OPTED_IN, "orcastra.autoheal.stop_timeout": HOSTILE}, name=HOSTILE), None, "restart"),
        (view({**TASK, "com.docker.swarm.service.name": HOSTILE}, name=HOSTILE), None, "swarm"),
        (view(name=HOSTILE, started_at=NOW, start_period=30), None, "wait"),
        (view(name=HOSTILE), restarted_at(NOW - 1), "wait"),
        (view(name=HOSTILE), restarted_at(*(NOW - i for i in range(100, 600, 100))), "give_up"),
        (view(name=HOSTILE), record_give_up(None, NOW - 1), "none"),
        (view(name="", cid="\x1b]0;title\x07" + "0" * 64), None, "restart"),
    ],
    ids=[
        "not-opted-in",
        "unreadable-opt-in",
        "health",
        "state",
        "stop-timeout",
        "swarm-service",
        "start-period",
        "backoff",
        "give-up",
        "given-up",
        "no-name-hostile-id",
    ],
)
def test_names_and_labels_from_the_engine_stay_printable(
    subject: HealthView, history: HealHistory | None, action: str
) -> None:
    decision = decide(subject, history, POLICY, NOW)
    assert decision.action == action
    for text in (decision.reason, decision.name):
        assert text.isprintable()
        assert "\x1b" not in text
    assert "\\x1b" in decision.name
    assert "x" * 100 not in decision.reason  # printable() cuts a name at 60 characters


def test_the_engines_leading_slash_is_not_shown() -> None:
    assert decide(view(name="/shop_web.1.abc"), None, POLICY, NOW).name == "shop_web.1.abc"


# --- resync, histories, summary, policy ----------------------------------------------------------------------


def test_resync_decides_for_every_unhealthy_container_and_leaves_out_none() -> None:
    views = [
        view(name="zeta", cid="z"),
        view(name="healthy", cid="h", health="healthy"),
        view({}, name="not-opted", cid="n"),
        view(TASK, name="task", cid="t", unhealthy_since=NOW - 5),
        view(name="alpha", cid="a"),
        view(name="backing-off", cid="b"),
    ]
    decisions = plan_resync(views, {"b": restarted_at(NOW - 1)}, POLICY, NOW)
    assert [(d.name, d.action) for d in decisions] == [
        ("alpha", "restart"),
        ("backing-off", "wait"),
        ("task", "swarm"),
        ("zeta", "restart"),
    ]
    assert summary(decisions) == {"restart": 2, "wait": 1, "give_up": 0, "swarm": 1, "none": 0}
    assert tuple(summary(()).keys()) == HEAL_ACTIONS


def test_histories_of_gone_and_healthy_containers_are_forgotten() -> None:
    histories = {"gone": restarted_at(NOW), "healed": restarted_at(NOW), "sick": restarted_at(NOW)}
    assert forget_gone(histories, ["healed", "sick", "new"]) == {
        "healed": restarted_at(NOW),
        "sick": restarted_at(NOW),
    }
    views = [view(cid="healed", health="healthy"), view(cid="sick"), view(cid="new", health="healthy")]
    assert resync_histories(histories, views) == {"sick": restarted_at(NOW)}


@pytest.mark.parametrize("action", ["wait", "none"])
def test_waiting_and_nothing_leave_the_history_as_it_is(action: HealAction) -> None:
    history = restarted_at(NOW - 1)
    decision = Decision(action, "c1", "web", "reason")
    assert record_decision(history, decision, NOW, POLICY) is history
    assert record_decision(None, decision, NOW, POLICY) is None


def test_record_swarm_seen_keeps_the_first_sighting() -> None:
    assert record_swarm_seen(record_swarm_seen(None, NOW), NOW + 10) == HealHistory(swarm_seen_at=NOW)


def test_policy_problems_are_listed_together() -> None:
    assert policy_problems(POLICY) == ()
    bad = AutohealPolicy(max_restarts=0, window_seconds=0, backoff_initial_seconds=float("nan"), backoff_max_seconds=-1)
    assert policy_problems(bad) == (
        "max_restarts is 0: expected at least 1",
        "window_seconds is 0: expected a finite number of seconds, more than 0",
        "backoff_initial_seconds is nan: expected a finite number of seconds, 0 or more",
        "backoff_max_seconds is -1: expected a finite number of seconds, 0 or more",
    )
    assert policy_problems(AutohealPolicy(backoff_initial_seconds=60, backoff_max_seconds=30)) == (
        "backoff_max_seconds (30) is less than backoff_initial_seconds (60)",
    )
