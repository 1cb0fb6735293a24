"""Table tests of configuration loading: good files, environment overrides, bad files through the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from orcastra.cli import cli
from orcastra.config import (
    DEFAULT_CONFIG_PATH,
    LABEL_KEY_RE,
    ORCASTRA_LABEL_PREFIX,
    Config,
    check_label_key,
    check_label_value,
    load_config,
    resolve_config_path,
)
from orcastra.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
GOOD = DATA / "good_configs"
BAD = DATA / "bad_configs"
EXAMPLE = REPO / "examples" / "orcastra.yml"

# Variables that would change what the CLI reads; the CLI tests (in process or not) must not inherit them.
CONFIG_ENV_VARS = {
    "ORCASTRA_CONFIG",
    "NODES_FILE",
    "DEPENDENCIES_FILE",
    "STACK_NAME",
    "RELABEL_TIME",
    "EVENT_MODE",
    "POLLING_MODE",
    "RESTART_DEPENDENTS",
    "DRY_RUN",
    "RUN_ONCE",
    "DEBUG",
    "LOG_TO_FILE",
    "PRUNE_UNKNOWN_LABELS",
    "BOOTSTRAP_MODE",
    "LOOP_INTERVAL",
    "COMMAND_FILE",
    "REBALANCE_MONITOR_INTERVAL_SECONDS",
    "REBALANCE_GLOBAL_COOLDOWN_MINUTES",
    "REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT",
}


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "orcastra.yml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env or {})


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return str(info.value)


# --- good files ----------------------------------------------------------------------------------


def check_defaults(c: Config) -> None:
    assert c.stack is None
    assert c.docker.host is None
    assert c.docker.tls is None
    assert c.docker.timeout_seconds == 30
    assert c.nodes == {}
    assert c.anchors == {}
    assert c.labels.prune is False
    assert c.reconcile.resync_interval_seconds == 60
    assert c.reconcile.event_mode is True
    assert c.reconcile.polling_mode is True
    assert c.reconcile.restart_dependents is True
    assert c.reconcile.debounce_seconds == 0.1
    assert c.reconcile.task_poll_interval_seconds == 0.5
    assert c.rebalance.enabled is False
    assert (c.rebalance.high_percent, c.rebalance.target_percent) == (85, 70)
    assert c.rebalance.global_cooldown_seconds == 600
    assert c.rebalance.max_moves_per_cycle == 1
    assert c.bootstrap.mode == "off"
    assert c.bootstrap.loop_interval_seconds == 300
    assert c.bootstrap.manager_target == 3
    assert c.commands.file == Path("/etc/orcastra/commands.yml")
    assert c.api.listen == "127.0.0.1:9180"
    assert c.api.token is None
    assert c.api.token_file is None
    assert (c.run.dry_run, c.run.once) == (False, False)
    assert (c.logging.debug, c.logging.file, c.logging.format) == (False, None, "text")
    assert c.audit.path is None


def check_labels(c: Config) -> None:
    assert c.nodes["node1"].labels == {"ssd": "true", "zone-a": "true", "1st-floor": "true"}
    assert c.nodes["node1"].role == "manager"
    assert c.nodes["node1"].ip == "10.0.0.11"
    assert c.nodes["node2"].labels == {
        "zone": "b",
        "rack": "3",
        "gpu": "true",
        "weight": "1.5",
        "path": "/data/x",
    }
    assert c.nodes["node2"].ip == "fd00::12"
    assert c.nodes["node2"].endpoint == "ssh://admin@node2"
    assert c.nodes["node3.example.com"].labels == {}


def check_anchors(c: Config) -> None:
    db, queue, cache = c.anchors["db"], c.anchors["queue"], c.anchors["cache"]
    assert db.dependents == ["web", "worker"]
    assert db.restart_dependents is False
    assert db.retry_intervals == [1, 1, 5]
    assert queue.dependents == ["consumer"], "the legacy key `services` is read as dependents"
    assert queue.restart_dependents is None
    assert queue.retry_intervals == [2, 10, 60, 300, 900]
    assert c.service_name("web") == "shop_web"
    assert c.service_name("consumer", queue.stack) == "infra_consumer"
    assert c.service_name("web", cache.stack) == "other_web"
    assert c.reconcile.event_mode is False
    assert c.reconcile.polling_mode is True


def check_all_sections(c: Config) -> None:
    assert c.docker.host == "tcp://manager1:2376"
    assert c.docker.tls is not None
    assert c.docker.tls.client_key == Path("/etc/orcastra/tls/key.pem")
    assert c.docker.timeout_seconds == 10
    assert c.labels.prune is True
    assert c.reconcile.resync_interval_seconds == 120
    assert c.reconcile.debounce_seconds == 0
    assert c.rebalance.enabled is True
    assert c.rebalance.max_moves_per_cycle == 2
    assert c.bootstrap.mode == "loop"
    assert c.bootstrap.manager_target == 5
    assert c.commands.file == Path("/srv/orcastra/commands.yml")
    assert c.api.listen == "[::1]:9180"
    assert c.api.token_file == Path("/run/secrets/orcastra_token")
    assert (c.run.dry_run, c.run.once) == (True, True)
    assert c.logging.format == "json"
    assert c.audit.path == Path("/var/log/orcastra-audit.log")


def check_example(c: Config) -> None:
    assert c.stack == "shop"
    assert c.nodes["manager1"].labels == {"ssd": "true", "zone-a": "true"}
    assert c.nodes["worker1"].labels["rack"] == "3"
    assert c.anchors["queue"].stack == "infra"
    assert c.bootstrap.mode == "off"


@pytest.mark.parametrize(
    ("path", "check"),
    [
        (GOOD / "empty.yml", check_defaults),
        (GOOD / "comments_only.yml", check_defaults),
        (GOOD / "labels_list_and_map.yml", check_labels),
        (GOOD / "anchors.yml", check_anchors),
        (GOOD / "all_sections.yml", check_all_sections),
        (EXAMPLE, check_example),
    ],
    ids=["empty", "comments-only", "label-forms", "anchors", "all-sections", "example"],
)
def test_good_file_loads(path: Path, check: Callable[[Config], None]) -> None:
    check(load_config(path, {}))


def test_no_file_means_defaults() -> None:
    check_defaults(load_config(None, {}))


def test_missing_file_is_fine_when_not_required(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.yml", {"DRY_RUN": "1"}, required=False)
    assert config.run.dry_run is True


def test_missing_file_is_a_problem_when_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yml", {})
    assert [(p.source, p.message) for p in info.value.problems] == [(str(tmp_path / "absent.yml"), "file not found")]


def test_not_required_still_reports_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, {}, required=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bootstrap:\n  mode: off\n", "off"),
        ("bootstrap:\n  mode: once\n", "once"),
        ("bootstrap:\n  mode: loop\n", "loop"),
    ],
    ids=["bare-off-is-false-in-yaml", "once", "loop"],
)
def test_bootstrap_mode_words(tmp_path: Path, text: str, expected: str) -> None:
    assert load_text(tmp_path, text).bootstrap.mode == expected


def test_yaml_merge_keys_work(tmp_path: Path) -> None:
    text = "nodes:\n  a: &node {role: worker, labels: [ssd]}\n  b:\n    <<: *node\n    role: manager\n"
    config = load_text(tmp_path, text)
    assert config.nodes["b"].role == "manager"
    assert config.nodes["b"].labels == {"ssd": "true"}


# --- environment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "read"),
    [
        ("STACK_NAME", "shop", lambda c: c.stack == "shop"),
        ("RELABEL_TIME", "15", lambda c: c.reconcile.resync_interval_seconds == 15),
        ("EVENT_MODE", "off", lambda c: c.reconcile.event_mode is False),
        ("POLLING_MODE", "No", lambda c: c.reconcile.polling_mode is False),
        ("RESTART_DEPENDENTS", "0", lambda c: c.reconcile.restart_dependents is False),
        ("DRY_RUN", "TRUE", lambda c: c.run.dry_run is True),
        ("RUN_ONCE", "yes", lambda c: c.run.once is True),
        ("DEBUG", "on", lambda c: c.logging.debug is True),
        ("LOG_TO_FILE", "true", lambda c: c.logging.file == Path("/var/log/orcastra/orcastra.log")),
        ("LOG_TO_FILE", "false", lambda c: c.logging.file is None),
        ("LOG_TO_FILE", "/tmp/o.log", lambda c: c.logging.file == Path("/tmp/o.log")),
        ("PRUNE_UNKNOWN_LABELS", "1", lambda c: c.labels.prune is True),
        ("BOOTSTRAP_MODE", "LOOP", lambda c: c.bootstrap.mode == "loop"),
        ("LOOP_INTERVAL", "45", lambda c: c.bootstrap.loop_interval_seconds == 45),
        ("COMMAND_FILE", "/srv/cmd.yml", lambda c: c.commands.file == Path("/srv/cmd.yml")),
        ("REBALANCE_MONITOR_INTERVAL_SECONDS", "5", lambda c: c.rebalance.monitor_interval_seconds == 5),
        ("REBALANCE_GLOBAL_COOLDOWN_MINUTES", "2.5", lambda c: c.rebalance.global_cooldown_seconds == 150),
        ("REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT", "95", lambda c: c.rebalance.high_percent == 95),
        ("DRY_RUN", "", lambda c: c.run.dry_run is False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_env_override(tmp_path: Path, var: str, value: str, read: Callable[[Config], bool]) -> None:
    # The file sets a different value wherever it can, so the test shows the environment wins.
    text = "logging:\n  file: /var/log/from-file.log\nreconcile:\n  resync_interval_seconds: 99\n"
    config = load_text(tmp_path, text, {var: value})
    assert read(config)


def test_env_wins_over_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, "stack: a\nrun: {dry_run: false}\n", {"STACK_NAME": "b", "DRY_RUN": "1"})
    assert (config.stack, config.run.dry_run) == ("b", True)


def test_docker_host_env_is_not_an_override(tmp_path: Path) -> None:
    config = load_text(tmp_path, "", {"DOCKER_HOST": "tcp://elsewhere:2375"})
    assert config.docker.host is None, "the adapter reads DOCKER_HOST itself when docker.host is unset"


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"RELABEL_TIME": "abc"}, ["environment: RELABEL_TIME: expected a number, found 'abc'"]),
        ({"RELABEL_TIME": "nan"}, ["environment: RELABEL_TIME: expected a finite number"]),
        ({"RELABEL_TIME": "-3"}, ["environment: RELABEL_TIME: must be at least 1 second", "resync_interval"]),
        ({"DRY_RUN": "maybe"}, ["environment: DRY_RUN: expected true or false", "found 'maybe'"]),
        ({"LOG_TO_FILE": "orcastra.log"}, ["environment: LOG_TO_FILE: expected true", "absolute file path"]),
        (
            {"REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "150"},
            ["REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT: must be at most 100"],
        ),
        ({"STACK_NAME": "my stack"}, ["environment: STACK_NAME: 'my stack' is not a valid Swarm service"]),
        (
            {"EVENT_MODE": "false", "POLLING_MODE": "off"},
            ["event_mode and polling_mode are both false", "EVENT_MODE=false, POLLING_MODE=off"],
        ),
        (
            {"RELABEL_TIME": "x", "DEBUG": "2", "LOOP_INTERVAL": "soon"},
            ["3 problems", "RELABEL_TIME", "DEBUG", "LOOP_INTERVAL"],
        ),
    ],
    ids=[
        "not-a-number",
        "nan",
        "negative",
        "bad-bool",
        "relative-log-file",
        "percent-over-100",
        "bad-stack",
        "no-trigger",
        "all-reported",
    ],
)
def test_bad_env(tmp_path: Path, env: dict[str, str], fragments: list[str]) -> None:
    message = problems_of(tmp_path, "", env)
    for fragment in fragments:
        assert fragment in message


def test_env_problem_inside_a_section_reported_with_the_file_problems(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "reconcile:\n  debounce_seconds: -1\n", {"RELABEL_TIME": "0"})
    assert "reconcile.debounce_seconds: must be at least 0" in message
    assert "environment: RELABEL_TIME: must be at least 1 second" in message


@pytest.mark.parametrize(
    ("cli_value", "env", "expected"),
    [
        (Path("/a.yml"), {"ORCASTRA_CONFIG": "/b.yml"}, Path("/a.yml")),
        (None, {"ORCASTRA_CONFIG": "/b.yml"}, Path("/b.yml")),
        (None, {"ORCASTRA_CONFIG": ""}, DEFAULT_CONFIG_PATH),
        (None, {}, DEFAULT_CONFIG_PATH),
    ],
    ids=["cli-wins", "env", "empty-env", "default"],
)
def test_resolve_config_path(cli_value: Path | None, env: dict[str, str], expected: Path) -> None:
    assert resolve_config_path(cli_value, env) == expected


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("zone", None),
        ("com.example.zone", None),
        ("1st-floor", None),  # node.labels.1st-floor matches swarmkit's key pattern
        ("_x", None),
        ("", "must not be empty"),
        ("a b", "whitespace"),
        ("zone=a", "'='"),
        ("zone/a", "'/'"),
        ("zöne", "'ö'"),
        ("orcastra.zone", "reserved"),
        ("Orcastra.zone", "reserved"),
    ],
    ids=repr,
)
def test_check_label_key(key: str, fragment: str | None) -> None:
    problem = check_label_key(key)
    if fragment is None:
        assert problem is None
        assert LABEL_KEY_RE.match(key)
    else:
        assert problem is not None
        assert fragment in problem


@pytest.mark.parametrize(
    ("value", "ok"),
    [("true", True), ("a b", True), ("/data/x:1", True), ("", False), (" a", False), ("x@y", False)],
    ids=["word", "inner-space", "path", "empty", "leading-space", "at-sign"],
)
def test_check_label_value(value: str, ok: bool) -> None:
    assert (check_label_value(value) is None) == ok


def test_reserved_prefix_constant() -> None:
    assert ORCASTRA_LABEL_PREFIX == "orcastra."


# --- the model itself ------------------------------------------------------------------------------


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.stack = "x"  # type: ignore[misc]


def test_direct_construction_still_checks_everything() -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"anchors": {"db": {"dependents": ["db"]}}, "bogus": 1})
    text = str(info.value)
    assert "cannot be its own dependent" in text
    assert "bogus" in text


def test_fingerprint_is_stable_and_sees_secrets(tmp_path: Path) -> None:
    a = load_text(tmp_path, "api: {token: one}\nnodes: {n1: {labels: [a, b]}}\n")
    b = load_text(tmp_path, "nodes: {n1: {labels: {b: 'true', a: 'true'}}}\napi: {token: one}\n")
    c = load_text(tmp_path, "api: {token: two}\nnodes: {n1: {labels: [a, b]}}\n")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint(), "a changed token must count as a change for hot reload"
    assert re.fullmatch(r"[0-9a-f]{64}", a.fingerprint())


def test_service_name_without_stack() -> None:
    assert Config().service_name("web") == "web"
    assert Config().service_name("web", "infra") == "infra_web"


# --- reading files -------------------------------------------------------------------------------


def test_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes("stack: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text: byte 0xe9 at line 1"):
        load_config(path, {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "secret.yml"
    path.write_text("stack: x\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(path, {})


def test_unreadable_path_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "file.yml").write_text("")
    with pytest.raises(ConfigError, match="cannot be read: Not a directory"):
        load_config(tmp_path / "file.yml" / "inner.yml", {})


def test_yaml_tags_are_refused_not_executed(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "stack: !!python/object/apply:os.system ['true']\n")
    assert "YAML error at line 1" in message
    assert "python/object/apply" in message


def test_non_text_keys_are_explained(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "nodes:\n  n1:\n    labels:\n      yes: a\n")
    assert "nodes.n1.labels: a key was read as the boolean true, not as text; quote it" in message
    assert "(line 4)" in message


# --- the CLI ------------------------------------------------------------------------------------------
# In process through click's CliRunner (a subprocess per case cost half a second each); one smoke test at the
# end runs the real ``python -m orcastra`` entry point.


@pytest.fixture
def run_validate(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``orcastra validate ARGS`` in process; ``env`` is set for the call only, on top of an isolated environment."""
    for var in CONFIG_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(cli, ["validate", *args], env=env, prog_name="orcastra")

    return run


def assert_no_traceback(result: Result) -> None:
    # An exception escaping the CLI would have printed a traceback; CliRunner catches it into result.exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
        traceback.format_exception(*result.exc_info) if result.exc_info else []
    )
    assert "Traceback" not in result.stderr + result.stdout


def check_bad_config_report(path: Path, exit_code: int, stdout: str, stderr: str) -> None:
    expected = re.findall(r"^# expect: (.+)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert expected, f"{path.name} needs at least one '# expect: <fragment>' line"
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr + stdout
    assert path.name in stderr
    for fragment in expected:
        assert fragment in stderr, f"missing {fragment!r} in:\n{stderr}"


BAD_FILES = sorted(BAD.glob("*.yml"))
SMOKE_BAD_FILE = BAD / "bad_ip.yml"


def test_enough_bad_configs() -> None:
    assert len(BAD_FILES) >= 18
    assert SMOKE_BAD_FILE in BAD_FILES


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_config_is_reported(path: Path, run_validate: Callable[..., Result]) -> None:
    result = run_validate(str(path))
    assert_no_traceback(result)
    check_bad_config_report(path, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("path", [GOOD / "anchors.yml", EXAMPLE], ids=["good-file", "example"])
def test_good_config_validates(path: Path, run_validate: Callable[..., Result]) -> None:
    result = run_validate(str(path))
    assert result.exit_code == 0, result.stderr
    assert result.exception is None
    assert "valid" in result.stdout


def test_missing_file_exits_2(tmp_path: Path, run_validate: Callable[..., Result]) -> None:
    missing = tmp_path / "nope.yml"
    result = run_validate(str(missing))
    assert result.exit_code == 2
    assert f"{missing}: file not found" in result.stderr
    assert_no_traceback(result)


def test_bad_env_exits_2(run_validate: Callable[..., Result]) -> None:
    result = run_validate(str(GOOD / "empty.yml"), env={"RELABEL_TIME": "abc"})
    assert result.exit_code == 2
    assert "RELABEL_TIME" in result.stderr
    assert_no_traceback(result)


def test_env_is_isolated_and_only_set_for_the_call(
    monkeypatch: pytest.MonkeyPatch, run_validate: Callable[..., Result]
) -> None:
    # The fixture clears what the CLI would read even if the caller's environment sets it ...
    assert not CONFIG_ENV_VARS & os.environ.keys()
    assert run_validate(str(GOOD / "empty.yml")).exit_code == 0
    # ... and an ``env`` given to one call does not leak into the next.
    assert run_validate(str(GOOD / "empty.yml"), env={"RELABEL_TIME": "abc"}).exit_code == 2
    assert "RELABEL_TIME" not in os.environ
    assert run_validate(str(GOOD / "empty.yml")).exit_code == 0


def test_entry_point_smoke() -> None:
    """The packaging path: the real ``python -m orcastra validate`` on one good and one bad file."""
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_VARS}

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orcastra", "validate", str(path)],
            capture_output=True,
            text=True,
            env=clean,
            cwd=REPO,
            timeout=60,
            check=False,
        )

    good = run(GOOD / "anchors.yml")
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout
    bad = run(SMOKE_BAD_FILE)
    check_bad_config_report(SMOKE_BAD_FILE, bad.returncode, bad.stdout, bad.stderr)


# --- --config before or after the command ------------------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``orcastra ARGS`` in process, with the environment isolated as for ``run_validate``."""
    for var in CONFIG_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), prog_name="orcastra")


@pytest.mark.parametrize(
    ("args", "used"),
    [
        (["validate", "--config", "{good}"], "good"),
        (["--config", "{good}", "validate"], "good"),
        (["--config", "{bad}", "validate", "--config", "{good}"], "good"),
        (["--config", "{good}", "validate", "--config", "{bad}"], "bad"),
        (["validate", "--config", "{good}", "--config", "{bad}"], "bad"),
        (["--config", "{bad}", "validate", "{good}"], "good"),
    ],
    ids=["after", "before", "after-wins", "after-wins-2", "last-of-two", "file-argument-wins"],
)
def test_config_option_before_or_after_the_command(run_cli: Callable[..., Result], args: list[str], used: str) -> None:
    files = {"good": str(GOOD / "anchors.yml"), "bad": str(SMOKE_BAD_FILE)}
    result = run_cli(*(a.format(**files) for a in args))
    assert_no_traceback(result)
    assert "No such option" not in result.stderr
    assert result.exit_code == (0 if used == "good" else 2), result.stderr
    assert files[used] in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [["run", "--once"], ["plan"], ["status", "--json"], ["do", "sync"], ["do", "restart", "web"]],
    ids=["run", "plan", "status", "do", "do-with-words"],
)
def test_every_command_takes_config_after_it(run_cli: Callable[..., Result], args: list[str]) -> None:
    # A bad file makes each command stop at loading, before it reaches an Engine or a daemon.
    bad = str(SMOKE_BAD_FILE)
    for where in ([args[0], "--config", bad, *args[1:]], [*args, "--config", bad]):
        result = run_cli(*where)
        assert_no_traceback(result)
        assert result.exit_code == 2, f"{where}: {result.stderr}"
        assert f"{bad}: nodes.node1.ip" in result.stderr


def test_help_says_the_last_config_wins(run_cli: Callable[..., Result]) -> None:
    for args in (["--help"], ["run", "--help"], ["validate", "--help"]):
        text = " ".join(run_cli(*args).stdout.split())
        assert "--config" in text
        assert "the one given last wins" in text
