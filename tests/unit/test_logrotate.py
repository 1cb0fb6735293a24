"""Log rotation in the agent: the generated configuration, the reading of logrotate's verbose account (real
output of Debian 12's logrotate 3.21, tests/data/logrotate), the json-file max-size rule, the settings, and
the runner driving the real ``logrotate`` binary on a temporary directory (scripts/setup.sh installs it)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from orcastra.adapters.node_engine import ContainerDetail, ContainerRow
from orcastra.cli.render import render_agents
from orcastra.config import Config, load_config
from orcastra.errors import ConfigError, EngineNotFoundError, EngineUnreachableError
from orcastra.features.agents.report import AgentEntry, AgentReport, LogrotateSummary, decode_report, encode
from orcastra.features.agents.view import AgentTarget
from orcastra.features.hygiene.logrotate import (
    is_unbounded_json_log,
    main_config,
    parse_verbose,
    unsafe_path_reason,
)
from orcastra.features.hygiene.settings import HygieneSettings
from orcastra.runtime.agent import options_from
from orcastra.runtime.node_logrotate import LogrotateResult, LogrotateRunner, UnboundedLogs

DATA = Path(__file__).resolve().parents[1] / "data" / "logrotate"
DAY_SECONDS = 86400


@pytest.fixture(scope="module", autouse=True)
def _logrotate_installed() -> None:
    if shutil.which("logrotate", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        pytest.fail("logrotate is not installed: apt-get install logrotate (scripts/setup.sh installs it)")


# --- the configuration ----------------------------------------------------------------------------------


def test_main_config_includes_each_directory_then_the_own_files_stanza() -> None:
    text = main_config(["/etc/orcastra/logrotate.d", "/etc/swarm-orchestration/logrotate.d"], ["/l/o.log"], "10M", 5)
    assert text.splitlines()[1:] == [
        "include /etc/orcastra/logrotate.d",
        "include /etc/swarm-orchestration/logrotate.d",
        '"/l/o.log" {',
        "    size 10M",
        "    rotate 5",
        "    compress",
        "    copytruncate",
        "    missingok",
        "    notifempty",
        "}",
    ]
    assert text.startswith("#")


def test_main_config_without_own_files_has_no_stanza() -> None:
    assert "{" not in main_config(["/d"], [], "10M", 5)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/var/log/orcastra/orcastra.log", None),
        ("/etc/swarm-orchestration/logrotate.d", None),
        ("relative/dir", "absolute"),
        ("/with space", "' '"),
        ('/with"quote', "'\"'"),
        ("/new\nline", "'\\n'"),
        ("/glob/*.log", "'*'"),
        ("/brace{", "'{'"),
    ],
    ids=["log", "legacy-dir", "relative", "space", "quote", "newline", "glob", "brace"],
)
def test_a_path_that_would_break_the_config_is_refused_with_its_reason(path: str, problem: str | None) -> None:
    reason = unsafe_path_reason(path)
    if problem is None:
        assert reason is None
    else:
        assert reason is not None
        assert problem in reason


# --- logrotate's account --------------------------------------------------------------------------------


def test_the_verbose_account_of_logrotate_3_21_gives_the_rotated_logs_and_the_errors() -> None:
    # Captured on Debian 12: a daily log due (compressed), a missing log without missingok, a config file
    # left group/world writable (skipped; logrotate exited 1 for the missing log), the own-files stanza.
    output = parse_verbose((DATA / "verbose-3.21.stderr").read_text())
    assert output.rotated == ("/tmp/lrcap/logs/app.log", "/tmp/lrcap/logs/own.log")
    assert output.errors == (
        "Ignoring loose because it is writable by group or others.",
        "stat of /tmp/lrcap/logs/gone.log failed: No such file or directory",
    )
    assert output.warnings == ("Potentially dangerous mode on loose: 0666",)


def test_an_account_with_nothing_due_has_nothing_rotated() -> None:
    text = "considering log /x.log\n  log does not need rotating (log has already been rotated)\n"
    assert parse_verbose(text).rotated == ()
    assert parse_verbose(text).errors == ()


# --- json-file logs without max-size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "options", "unbounded"),
    [
        ("json-file", {}, True),
        ("json-file", {"max-file": "3"}, True),
        ("json-file", {"max-size": "-1"}, True),
        ("json-file", {"max-size": ""}, True),
        ("", {}, True),
        ("json-file", {"max-size": "10m", "max-file": "3"}, False),
        ("local", {}, False),
        ("journald", {}, False),
        ("none", {}, False),
    ],
    ids=["bare", "max-file-only", "minus-one", "empty", "pre-1.12-default", "bounded", "local", "journald", "none"],
)
def test_json_file_without_max_size_is_unbounded(driver: str, options: dict[str, str], unbounded: bool) -> None:
    assert is_unbounded_json_log(driver, options) is unbounded


class FakeNode:
    """The two calls UnboundedLogs makes, counted."""

    def __init__(self) -> None:
        self.running: list[ContainerRow] = []
        self.details: dict[str, ContainerDetail] = {}
        self.inspected: list[str] = []
        self.fail = False

    def add(self, cid: str, name: str, max_size: str | None, service: str = "") -> None:
        labels = {"com.docker.swarm.service.name": service} if service else {}
        self.running.append(ContainerRow(Id=cid, Names=[f"/{name}"], State="running", Labels=labels))
        config = {"max-size": max_size} if max_size else {}
        body = {"Id": cid, "HostConfig": {"LogConfig": {"Type": "json-file", "Config": config}}}
        self.details[cid] = msgspec.json.decode(json.dumps(body), type=ContainerDetail)

    def running_containers(self) -> list[ContainerRow]:
        if self.fail:
            raise EngineUnreachableError("engine down")
        return list(self.running)

    def inspect(self, cid: str) -> ContainerDetail:
        self.inspected.append(cid)
        if cid not in self.details:
            raise EngineNotFoundError("gone")
        return self.details[cid]


def test_each_container_is_inspected_once_and_forgotten_once_gone() -> None:
    node = FakeNode()
    node.add("a", "plain", None)
    node.add("b", "app_db.1.y", "10m", service="app_db")
    checker = UnboundedLogs(node)  # type: ignore[arg-type]
    assert checker.check() == (1, ["plain"])
    assert checker.check() == (1, ["plain"])
    assert node.inspected == ["a", "b"]
    node.running = [r for r in node.running if r.Id != "a"]
    node.running.append(ContainerRow(Id="c", Names=["/removed-meanwhile"], State="running"))
    assert checker.check() == (0, [])
    node.add("a", "plain", None)  # started again (the same ID): inspected again
    assert checker.check() == (1, ["plain"])
    assert node.inspected == ["a", "b", "c", "c", "a"]


def test_swarm_tasks_are_named_by_their_service_once() -> None:
    node = FakeNode()
    node.add("a", "app_web.1.x", None, service="app_web")
    node.add("b", "app_web.2.y", None, service="app_web")
    node.add("c", "zz-plain", None)
    assert UnboundedLogs(node).check() == (3, ["app_web", "zz-plain"])  # type: ignore[arg-type]


# --- settings -------------------------------------------------------------------------------------------


def test_defaults_are_off_hourly_with_both_config_dirs() -> None:
    lr = HygieneSettings().logrotate
    assert (lr.enabled, lr.schedule, lr.run_at_start, lr.own_logs) == (False, "17 * * * *", True, True)
    assert [str(p) for p in lr.config_dirs] == ["/etc/orcastra/logrotate.d", "/etc/swarm-orchestration/logrotate.d"]
    assert str(lr.state_file) == "/var/lib/orcastra/logrotate.status"
    assert (lr.own_max_size, lr.own_keep) == ("10M", 5)


def test_every_problem_of_the_section_is_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "orcastra.yml"
    config.write_text(
        "hygiene:\n  logrotate:\n    enabled: true\n    schedule: every hour\n    timezone: Mars/Olympus\n"
        "    config_dirs: [relative/dir, '/with space']\n    state_file: state\n    own_max_size: 10MB\n"
        "    own_keep: 0\n    logrotate_binary: bin/logrotate\n    timeout_seconds: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(config, {})
    text = str(err.value)
    for field in (
        "schedule",
        "timezone",
        "config_dirs[0]",
        "config_dirs",
        "state_file",
        "own_max_size",
        "own_keep",
        "logrotate_binary",
        "timeout_seconds",
    ):
        assert f"hygiene.logrotate.{field}" in text, field
    assert "not a cron expression" in text
    assert "10M, 500k, 1G" in text


def test_the_agent_gets_the_section_and_orcastras_own_files() -> None:
    config = Config.model_validate(
        {
            "hygiene": {"logrotate": {"enabled": True}},
            "logging": {"file": "/var/log/orcastra/orcastra.log"},
            "audit": {"path": "/var/log/orcastra/audit.log"},
        }
    )
    options = options_from(config, {})
    assert options.hygiene["logrotate"]["enabled"] is True
    assert options.hygiene["logrotate"]["config_dirs"] == [
        "/etc/orcastra/logrotate.d",
        "/etc/swarm-orchestration/logrotate.d",
    ]
    assert (options.log_file, options.audit_file) == ("/var/log/orcastra/orcastra.log", "/var/log/orcastra/audit.log")


# --- the runner, with the real logrotate ----------------------------------------------------------------


def _settings(tmp: Path, **overrides: Any) -> dict[str, Any]:
    section = {"enabled": True, "config_dirs": [str(tmp / "conf.d"), str(tmp / "absent.d")]}
    section |= {"state_file": str(tmp / "state" / "logrotate.status")} | overrides
    dumped: dict[str, dict[str, Any]] = HygieneSettings.model_validate({"logrotate": section}).model_dump(mode="json")
    return dumped["logrotate"]


def _state_line(path: Path, at: float) -> str:
    t = time.localtime(at)
    return f'"{path}" {t.tm_year}-{t.tm_mon}-{t.tm_mday}-{t.tm_hour}:{t.tm_min}:{t.tm_sec}\n'


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A log rotated daily (3 kept, compressed) whose state says it was last rotated two days ago."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "logs" / "app.log").write_text("line\n" * 100)
    (tmp_path / "conf.d" / "app").write_text(
        f"{tmp_path}/logs/app.log {{\n  daily\n  rotate 3\n  missingok\n  compress\n}}\n"
    )
    (tmp_path / "state").mkdir()
    seeded = _state_line(tmp_path / "logs" / "app.log", time.time() - 2 * DAY_SECONDS)
    (tmp_path / "state" / "logrotate.status").write_text("logrotate state -- version 2\n" + seeded)
    return tmp_path


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_a_due_log_is_rotated_once_per_period_and_the_state_survives_a_new_runner(
    node_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings, stop = _settings(node_dir), threading.Event()
    first = LogrotateRunner(settings, (), stop)
    result = first.run_now("start")
    assert result.rotated == (f"{node_dir}/logs/app.log",)
    assert (result.rotated_count, result.exit_code, result.error) == (1, 0, "")
    assert result.included == (str(node_dir / "conf.d"),)
    assert _listing(node_dir / "logs") == ["app.log.1.gz"]
    assert f"logrotate: rotated {node_dir}/logs/app.log" in caplog.text  # the audit line
    assert any(r.name == "orcastra.agent.audit" for r in caplog.records)
    (node_dir / "logs" / "app.log").write_text("written since\n")  # the application goes on writing
    assert first.run_now("schedule").rotated_count == 0
    # A restarted agent: a new runner, the same state file; its start run rotates nothing again.
    again = LogrotateRunner(settings, (), stop).run_now("start")
    assert (again.rotated_count, again.error) == (0, "")
    assert _listing(node_dir / "logs") == ["app.log", "app.log.1.gz"]
    state = (node_dir / "state" / "logrotate.status").read_text()
    assert f'"{node_dir}/logs/app.log" {time.localtime().tm_year}-' in state
    assert oct((node_dir / "state" / "logrotate.status").stat().st_mode & 0o777) == "0o600"


def test_a_missing_config_dir_is_skipped_and_said_once(node_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    runner = LogrotateRunner(_settings(node_dir), (), threading.Event())
    runner.run_now("start")
    runner.run_now("schedule")
    assert caplog.text.count(f"{node_dir}/absent.d does not exist") == 1


def test_nothing_to_rotate_runs_nothing(tmp_path: Path) -> None:
    result = LogrotateRunner(_settings(tmp_path), (), threading.Event()).run_now("start")
    assert (result.included, result.exit_code, result.rotated_count, result.error) == ((), None, 0, "")
    assert not (tmp_path / "state").exists()


def test_orcastras_own_file_rotates_by_size_and_the_open_handler_writes_on(tmp_path: Path) -> None:
    own = tmp_path / "own" / "orcastra.log"
    own.parent.mkdir()
    handler = logging.FileHandler(own, encoding="utf-8")  # appends, as the agent's and controller's do
    logger = logging.getLogger("test.own")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(60):
            logger.warning("x" * 40)
        handler.flush()
        settings = _settings(tmp_path, own_max_size="1k", own_keep=2)
        runner = LogrotateRunner(settings, (str(own), str(own)), threading.Event())
        result = runner.run_now("schedule")
        assert result.rotated == (str(own),)
        assert own.stat().st_size == 0  # copytruncate: the same file, emptied
        logger.warning("after")
        handler.flush()
        assert own.read_text() == "after\n"  # appended at the start of the emptied file, no hole
        assert _listing(own.parent) == ["orcastra.log", "orcastra.log.1.gz"]
        assert runner.run_now("schedule").rotated_count == 0  # under the size now
        off = LogrotateRunner(_settings(tmp_path, own_logs=False), (str(own),), threading.Event())
        assert off.run_now("schedule").exit_code is None  # nothing to do: logrotate not even run
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_a_broken_operator_config_is_reported_and_the_next_run_tries_again(
    node_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = node_dir / "conf.d" / "bad"
    bad.write_text(f"{node_dir}/logs/other.log {{\n  daily\n  frobnicate\n}}\n")
    runner = LogrotateRunner(_settings(node_dir), (), threading.Event())
    result = runner.run_now("start")
    assert result.rotated_count == 1  # the good file's log still rotates
    assert result.exit_code == 1
    assert "unknown option 'frobnicate'" in result.error
    assert "logrotate (start): 1 rotated;" in caplog.text
    # A config file others may write is skipped by logrotate (exit status 0, an error line): reported too.
    bad.write_text(f"{node_dir}/logs/other.log {{\n  daily\n  missingok\n}}\n")
    bad.chmod(0o666)
    assert "Ignoring bad because it is writable by group or others" in runner.run_now("schedule").error
    bad.chmod(0o644)
    assert runner.run_now("schedule").error == ""


def test_a_missing_binary_or_a_hung_run_is_an_error_in_the_result(node_dir: Path) -> None:
    missing = LogrotateRunner(_settings(node_dir, logrotate_binary="/nonexistent/logrotate"), (), threading.Event())
    assert "not found" in missing.run_now("start").error
    hang = node_dir / "hang"
    hang.write_text("#!/bin/sh\nsleep 5\n")
    hang.chmod(0o755)
    settings = _settings(node_dir, logrotate_binary=str(hang)) | {"timeout_seconds": 0.3}
    started = time.monotonic()
    result = LogrotateRunner(settings, (), threading.Event()).run_now("schedule")
    assert "did not finish within" in result.error
    assert time.monotonic() - started < 3


def test_the_thread_runs_at_start_survives_a_bug_and_stops(
    node_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    runner = LogrotateRunner(_settings(node_dir), (), stop)
    runner.start()
    deadline = time.monotonic() + 10
    while runner.last is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.last is not None
    assert (runner.last.trigger, runner.last.rotated_count) == ("start", 1)
    stop.set()
    runner.join(timeout=5)
    assert not runner.is_alive()

    broken = LogrotateRunner(_settings(node_dir), (), threading.Event())

    def explode(trigger: str) -> LogrotateResult:
        raise ZeroDivisionError(trigger)

    monkeypatch.setattr(broken, "run_now", explode)
    broken.start()
    time.sleep(0.3)
    assert broken.is_alive()
    assert "logrotate: unexpected error" in caplog.text
    broken.stop.set()
    broken.join(timeout=5)


def test_the_unbounded_logs_are_in_the_result_and_warned_once_per_change(
    node_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = FakeNode()
    for n in range(12):
        node.add(f"c{n:02d}", f"svc{n:02d}", None)
    node.add("ok", "bounded", "10m")
    runner = LogrotateRunner(_settings(node_dir), (), threading.Event(), node=node)  # type: ignore[arg-type]
    result = runner.run_now("start")
    assert result.unbounded_count == 12
    assert result.unbounded == tuple(f"svc{n:02d}" for n in range(10))
    runner.run_now("schedule")
    assert caplog.text.count("12 running container(s) log to json-file without max-size") == 1
    node.fail = True
    failed = runner.run_now("schedule")
    assert failed.unbounded_error == "engine down"
    assert failed.rotated_count == 0  # the rotation does not depend on the Engine


def test_the_report_and_status_show_the_last_run() -> None:
    summary = LogrotateSummary(
        trigger="schedule", finished_at=990.0, rotated=2, unbounded_logs=4, unbounded_examples=("a", "b", "c", "d")
    )
    report = decode_report(encode(AgentReport(node_id="n1", hostname="node1", logrotate=summary)))
    assert report.logrotate == summary
    entry = AgentEntry(node_id="n1", hostname="node1", up=True, report=report)
    target = AgentTarget(node_id="n1", hostname="node1", node_state="ready", task_state="running", address="10.0.0.2")
    out = render_agents([(target, entry)], 1000.0)
    assert "logrotate 10s ago: 2 rotated" in out
    assert "4 json-file log(s) without max-size (a, b, c, ...)" in out
    failed = msgspec.structs.replace(summary, error="exit 1: unknown option 'x'", unbounded_logs=0)
    out = render_agents([(target, msgspec.structs.replace(entry, report=AgentReport(logrotate=failed)))], 1000.0)
    assert "logrotate 10s ago: ERROR exit 1: unknown option 'x'" in out
