"""The earlier tool's deployment: its config directory discovered, legacy mode, its variables and values."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from orcastra.config import Config, LoadReport, load_config, load_config_report
from orcastra.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "legacy"


def legacy_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    where = tmp_path / "swarm-orchestration"
    where.mkdir()
    for name, text in files.items():
        (where / name).write_text(text, encoding="utf-8")
    return where


def report(
    tmp_path: Path, files: dict[str, str], env: dict[str, str] | None = None, main: str | None = None
) -> LoadReport:
    where = legacy_dir(tmp_path, files)
    path = None
    if main is not None:
        path = tmp_path / "orcastra.yml"
        path.write_text(main, encoding="utf-8")
    return load_config_report(path, env or {}, legacy_dir=where)


def problems(tmp_path: Path, files: dict[str, str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        report(tmp_path, files, env)
    return str(info.value)


# --- the seed files, found in the legacy directory --------------------------------------------------


def test_seed_split_files_are_discovered(tmp_path: Path) -> None:
    where = tmp_path / "swarm-orchestration"
    shutil.copytree(DATA / "split", where)
    got = load_config_report(None, {"ORCASTRA_LEGACY_DIR": str(where)})
    c = got.config
    assert c.nodes["core-1"].labels == {"homelab": "true", "ubuntu": "true"}
    assert c.nodes["core-1"].role == "manager"
    assert c.nodes["node-2"].role is None
    assert c.labels.prune is True
    assert c.anchors["gitea_db"].dependents == ["gitea", "gitea_redis"]
    assert c.anchors["gitea_db"].restart_dependents is False
    assert c.anchors["couchdb"].dependents == ["influxdbv1", "swarmpit"]
    assert got.legacy_summary is not None
    assert got.legacy_summary.startswith(f"legacy mode: found {where / 'nodes.yml'}, {where / 'dependencies.yml'}")


def test_seed_combined_file_is_discovered(tmp_path: Path) -> None:
    where = tmp_path / "swarm-orchestration"
    shutil.copytree(DATA / "combined", where)
    got = load_config_report(None, {}, legacy_dir=where)
    c = got.config
    assert set(c.nodes) == {"core-1", "node-2"}
    assert c.nodes["core-1"].ip == "10.0.0.11"  # advertise_addr: the leader's address when it gives none
    assert c.nodes["core-1"].role == "manager"
    assert c.labels.prune is False
    assert c.anchors["semaphore_db"].dependents == ["semaphore"]
    assert c.service_name("semaphore") == "swarm-dev_semaphore"


def test_flat_nodes_file_is_read_too(tmp_path: Path) -> None:
    c = report(tmp_path, {"nodes.yml": "n1:\n  ip: 10.0.0.1\n  labels: {zone: a}\n"}).config
    assert c.nodes["n1"].labels == {"zone": "a"}


def test_variable_wins_over_the_directory(tmp_path: Path) -> None:
    named = tmp_path / "mine.yml"
    named.write_text("other: {labels: [x]}\n", encoding="utf-8")
    got = report(tmp_path, {"nodes.yml": "n1: {}\n"}, {"NODES_FILE": str(named)})
    assert set(got.config.nodes) == {"other"}
    assert got.legacy_summary is None  # nothing was found by discovery


# --- legacy mode ------------------------------------------------------------------------------------


def test_no_legacy_mode_without_anything_legacy(tmp_path: Path) -> None:
    got = report(tmp_path, {}, {"TZ": "Europe/Paris", "STACK_NAME": "shop"}, main="")
    assert got.legacy_summary is None
    assert got.notes == ()
    assert got.config == load_config(None, {"STACK_NAME": "shop"}, legacy_dir=tmp_path / "nowhere")
    assert got.config.logging.debug is False
    assert got.config.bootstrap.mode == "off"


def test_missing_default_legacy_dir_changes_nothing(tmp_path: Path) -> None:
    got = load_config_report(None, {"ORCASTRA_LEGACY_DIR": str(tmp_path / "absent")})
    assert got.legacy_summary is None
    assert got.config == Config()


def test_legacy_mode_applies_the_earlier_defaults(tmp_path: Path) -> None:
    got = report(tmp_path, {"dependencies.yml": "db: [web]\n"})
    c = got.config
    assert c.stack == "swarm-dev"
    assert c.logging.debug is True
    assert c.bootstrap.mode == "watch"
    assert str(c.commands.file) == "/mnt/commands/swarm-orchestration.command.yml"
    assert got.legacy_summary is not None
    assert "differs: stack=swarm-dev, logging.debug=true, bootstrap.mode=watch, " in (got.legacy_summary)
    assert "\n" not in got.legacy_summary


def test_main_file_and_environment_win_over_the_earlier_defaults(tmp_path: Path) -> None:
    got = report(
        tmp_path,
        {"nodes.yml": "n1: {}\n"},
        {"DEBUG": "false", "BOOTSTRAP_MODE": "off"},
        main="stack: shop\ncommands: {file: /etc/orcastra/c.yml}\n",
    )
    c = got.config
    assert (c.stack, c.logging.debug, c.bootstrap.mode, str(c.commands.file)) == (
        "shop",
        False,
        "off",
        "/etc/orcastra/c.yml",
    )
    assert got.legacy_summary is not None
    assert "differs: nothing" in got.legacy_summary


@pytest.mark.parametrize(
    ("env", "in_summary"),
    [
        ({"GC_CRON": "0 */4 * * *"}, ["found GC_CRON; differs:"]),
        (
            {"MOD_MANAGER_DEST": "/modcache", "MOD_MANAGER_REFRESH_INTERVAL_MINUTES": "720", "GC_DRY_RUN": "0"},
            [
                "found GC_DRY_RUN, MOD_MANAGER_DEST, MOD_MANAGER_REFRESH_INTERVAL_MINUTES",
                "mods.enabled=true",
                "MOD_MANAGER_*: the mod cache is kept by `orcastra agent` on each node",
            ],
        ),
        ({"BOOTSTRAP_MODE": "watch"}, ["found BOOTSTRAP_MODE=watch", "and soon after each node event"]),
        ({"GC_CRON": "0 3 * * *", "TZ": "Europe/Paris"}, ["TZ=Europe/Paris: log times and reboot windows follow"]),
    ],
    ids=["gc", "mod-manager", "watch", "tz"],
)
def test_earlier_only_variables_turn_legacy_mode_on(tmp_path: Path, env: dict[str, str], in_summary: list[str]) -> None:
    got = report(tmp_path, {}, env)
    assert got.legacy_summary is not None
    for fragment in in_summary:
        assert fragment in got.legacy_summary


def test_mod_manager_variables_set_the_mods_section_and_turn_it_on(tmp_path: Path) -> None:
    env = {"MOD_MANAGER_DEST": "/srv/modcache", "MOD_MANAGER_REFRESH_INTERVAL_MINUTES": "90"}
    got = report(tmp_path, {}, env)
    mods = got.config.mods
    assert (mods.enabled, str(mods.cache_dir), mods.refresh_interval_seconds) == (True, "/srv/modcache", 5400.0)
    assert got.legacy_summary is not None
    assert "not yet supported" not in got.legacy_summary


def test_the_file_can_keep_the_mod_manager_off_despite_the_variables(tmp_path: Path) -> None:
    got = report(tmp_path, {}, {"MOD_MANAGER_DEST": "/modcache"}, main="mods: {enabled: false}\n")
    assert got.config.mods.enabled is False
    assert got.legacy_summary is not None
    assert "mods.enabled=true" not in got.legacy_summary


def test_a_mod_manager_interval_that_is_not_a_number_names_the_variable(tmp_path: Path) -> None:
    text = problems(tmp_path, {}, {"MOD_MANAGER_REFRESH_INTERVAL_MINUTES": "often"})
    assert "MOD_MANAGER_REFRESH_INTERVAL_MINUTES: expected a number, found 'often'" in text


def test_unsupported_files_of_the_directory_are_named(tmp_path: Path) -> None:
    got = report(tmp_path, {"nodes.yml": "", "rebalance_config.yml": "x: 1\n"})
    assert got.legacy_summary is not None
    assert "rebalance_config.yml (not read)" in got.legacy_summary


def test_empty_earlier_variables_count_as_unset(tmp_path: Path) -> None:
    assert report(tmp_path, {}, {"GC_CRON": " ", "TZ": "UTC"}).legacy_summary is None


# --- every earlier variable and value ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"BOOTSTRAP_MODE": "watch"}, lambda c: c.bootstrap.mode == "watch"),
        ({"BOOTSTRAP_MODE": "WATCH", "LOOP_INTERVAL": "120"}, lambda c: c.bootstrap.loop_interval_seconds == 120),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "70"},
            lambda c: (c.rebalance.high_percent, c.rebalance.target_percent) == (70, 55),
        ),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "20"},
            lambda c: (c.rebalance.high_percent, c.rebalance.target_percent) == (20, 10),
        ),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "1"},
            lambda c: (c.rebalance.high_percent, c.rebalance.target_percent) == (1, 0.5),
        ),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "95"},
            lambda c: (c.rebalance.high_percent, c.rebalance.target_percent) == (95, 70),
        ),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "100"},
            lambda c: (c.rebalance.high_percent, c.rebalance.target_percent) == (100, 70),
        ),
    ],
    ids=["watch", "watch-any-case", "threshold-70", "threshold-20", "threshold-1", "threshold-95", "threshold-100"],
)
def test_earlier_values_are_accepted(tmp_path: Path, env: dict[str, str], check: Callable[[Config], bool]) -> None:
    assert check(report(tmp_path, {}, env).config)


def test_watch_is_noted(tmp_path: Path) -> None:
    got = report(tmp_path, {}, {"BOOTSTRAP_MODE": "watch"})
    assert any("BOOTSTRAP_MODE=watch: heal the Swarm every LOOP_INTERVAL" in n for n in got.notes)


def test_derived_target_is_noted_and_a_given_target_is_kept(tmp_path: Path) -> None:
    env = {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "60"}
    got = report(tmp_path, {}, env)
    assert got.notes == (
        "rebalance.target_percent is 45, derived from REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT=60 (today's "
        "default 70 must be below it; set rebalance.target_percent to choose)",
    )
    kept = load_config_report(tmp_path / "m.yml", env, required=False, legacy_dir=tmp_path / "none")
    assert kept.config.rebalance.target_percent == 45
    main = tmp_path / "orcastra.yml"
    main.write_text("rebalance: {target_percent: 30}\n", encoding="utf-8")
    assert load_config(main, env, legacy_dir=tmp_path / "none").rebalance.target_percent == 30


@pytest.mark.parametrize("raw", ["0", "101", "-5"])
def test_threshold_out_of_range_is_still_a_problem(tmp_path: Path, raw: str) -> None:
    message = problems(tmp_path, {}, {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": raw})
    assert "environment: REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT" in message


# --- precedence ---------------------------------------------------------------------------------------


def test_main_config_wins_over_legacy_files_each_override_noted_once(tmp_path: Path) -> None:
    got = report(
        tmp_path,
        {
            "swarm.yml": "nodes:\n  n1: {ip: 10.0.0.1}\n  n2: {}\noptions:\n  prune_unknown_labels: true\n",
            "dependencies.yml": "db: [web]\n",
        },
        main="labels: {prune: false}\nnodes:\n  n1: {ip: 10.0.0.9}\nanchors:\n  db: {dependents: [api]}\n",
    )
    c = got.config
    assert c.nodes["n1"].ip == "10.0.0.9"
    assert set(c.nodes) == {"n1", "n2"}
    assert c.anchors["db"].dependents == ["api"]
    assert c.labels.prune is False
    assert len(got.notes) == 3
    joined = "\n".join(got.notes)
    assert "swarm.yml: nodes.n1 (line 2): node 'n1' is also defined in" in joined
    assert "dependencies.yml: db (line 1): anchor 'db' is also defined in" in joined
    assert "swarm.yml: options.prune_unknown_labels (line 5) is overridden by" in joined


def test_environment_wins_over_a_legacy_option_noted(tmp_path: Path) -> None:
    got = report(tmp_path, {"swarm.yml": "options: {prune_unknown_labels: true}\n"}, {"PRUNE_UNKNOWN_LABELS": "no"})
    assert got.config.labels.prune is False
    assert any("PRUNE_UNKNOWN_LABELS=no overrides labels.prune of a legacy file" in n for n in got.notes)


def test_same_node_in_two_legacy_files_is_a_problem(tmp_path: Path) -> None:
    message = problems(tmp_path, {"nodes.yml": "n1: {}\n", "swarm.yml": "nodes:\n  n1: {}\n"})
    assert "swarm.yml: nodes.n1: node 'n1' is also defined in" in message
    assert "nodes.yml; define it in one place only (line 2)" in message


# --- malformed legacy files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "fragments"),
    [
        ({"swarm.yml": "leader: a\nmanagers: 3\n"}, ["swarm.yml: managers: unknown key 'managers'", "(line 2)"]),
        (
            {"swarm.yml": "options:\n  prune_unknown_label: true\n"},
            ["options.prune_unknown_label: unknown key", "did you mean 'prune_unknown_labels'?", "(line 2)"],
        ),
        (
            {"swarm.yml": "options:\n  prune_unknown_labels: maybe\n"},
            ["swarm.yml: options.prune_unknown_labels:", "(line 2)"],
        ),
        ({"swarm.yml": "advertise_addr: nowhere\n"}, ["advertise_addr: expected an IPv4 or IPv6 address", "(line 1)"]),
        ({"swarm.yml": "leader: [a]\n"}, ["swarm.yml: leader: expected text, found a list (line 1)"]),
        ({"swarm.yml": "nodes: [a, b]\n"}, ["swarm.yml: nodes: expected a mapping (key: value), found a list"]),
        (
            {"swarm.yml": "nodes:\n  n1:\n    labels: ['bad key']\n"},
            ["swarm.yml: nodes.n1.labels[\"bad key\"]: label key 'bad key' contains whitespace", "(line 3)"],
        ),
        (
            {"swarm.yml": "dependencies:\n  db:\n    services: [web]\n    retry_intervals: [5, -1]\n"},
            ["swarm.yml: dependencies.db.retry_intervals[1]", "(line 4)"],
        ),
        (
            {"nodes.yml": "leader: n1\nnodes:\n  n1: {ipp: 10.0.0.1}\n"},
            ["nodes.yml: nodes.n1.ipp: unknown key 'ipp'", "(line 3)"],
        ),
        ({"dependencies.yml": "db: [web\n"}, ["dependencies.yml: YAML syntax error at line 2"]),
        ({"swarm.yml": "- a\n"}, ["swarm.yml: the top level must be a mapping of settings (leader, advertise_addr"]),
    ],
    ids=[
        "unknown-key",
        "unknown-option",
        "bad-option-value",
        "bad-address",
        "bad-leader",
        "nodes-not-mapping",
        "bad-label",
        "negative-retry",
        "wrapped-nodes-unknown-key",
        "syntax",
        "top-level-list",
    ],
)
def test_malformed_legacy_files_are_reported_with_file_and_line(
    tmp_path: Path, files: dict[str, str], fragments: list[str]
) -> None:
    message = problems(tmp_path, files)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("leader: n9\nnodes:\n  n1: {}\n", "leader 'n9' is not listed under nodes, so it is not used"),
        ("leader: n1\nadvertise_addr: 10.0.0.2\nnodes:\n  n1: {ip: 10.0.0.1}\n", "differs from the leader's ip"),
        ("advertise_addr: 10.0.0.2\n", "advertise_addr 10.0.0.2 is not used without a leader"),
    ],
    ids=["leader-not-a-node", "address-differs", "address-without-leader"],
)
def test_leader_and_address_that_cannot_be_placed_are_noted(tmp_path: Path, text: str, note: str) -> None:
    got = report(tmp_path, {"swarm.yml": text})
    assert any(note in n for n in got.notes)


def test_the_earlier_gc_variables_configure_the_agents_garbage_collection(tmp_path: Path) -> None:
    env = {
        "GC_CRON": '"0 */4 * * *"',
        "GC_FORCE_IMAGE_REMOVAL": "0",
        "GC_MINIMUM_IMAGES_TO_SAVE": "2",
        "GC_FORCE_CONTAINER_REMOVAL": "1",
        "GC_GRACE_PERIOD_SECONDS": "600",
        "GC_DRY_RUN": "1",
        "GC_CLEAN_UP_VOLUMES": "0",
    }
    got = report(tmp_path, {}, env)
    assert got.legacy_summary is not None
    assert "not yet supported" not in got.legacy_summary
    gc = got.config.hygiene.gc
    assert (gc.schedule, gc.force_image_removal, gc.keep_per_repository) == ("0 */4 * * *", False, 2)
    assert (gc.remove_containers, gc.grace_period_seconds, gc.dry_run) == (True, 600.0, True)
    assert gc.remove_anonymous_volumes is False
