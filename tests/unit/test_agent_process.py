"""``orcastra agent`` as a process against the fake Engine: it starts, reports its node, goes unhealthy when its
Engine goes away and recovers when it comes back (as after a dockerd restart), and idles small (VmRSS).

The process is the one ``orcastra agent`` execs into (``python -m orcastra.runtime.agent --options``), started
directly: the CLI's own start (click, its plugins, the config's models) would triple the test's time. The
CLI's side of the exec is tested in-process, with ``os.execv`` replaced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from orcastra.cli import cli
from orcastra.runtime.agent import AgentOptions, rss_bytes
from orcastra_lab.fake_engine import Cluster, FakeEngine

RSS_LIMIT_BYTES = 30 * 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    engine_port, agent_port = _free_port(), _free_port()
    options = AgentOptions(
        listen=f"127.0.0.1:{agent_port}",
        docker_host=f"tcp://127.0.0.1:{engine_port}",
        engine_check_interval_seconds=0.1,
        engine_unreachable_after_seconds=0.25,
        log_file=str(tmp_path / "agent.log"),
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orcastra.runtime.agent", "--options", msgspec.json.encode(options).decode()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, engine_port, agent_port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()


def test_the_agent_reports_and_survives_its_engine_going_away(agent: tuple[subprocess.Popen[bytes], int, int]) -> None:
    proc, engine_port, port = agent
    with FakeEngine(Cluster(nodes=2, services=1, groups=0), port=engine_port):
        _wait_for("healthz 200 with the Engine up", lambda: _get(port, "/healthz")[0] == 200)
        _wait_for("a report with the node", lambda: bool(_get(port, "/v1/report")[1]["node_id"]))
        status, report = _get(port, "/v1/report")
        assert (status, report["hostname"], report["features"]) == (200, "node1", [])
        engine = report["engine"]
        assert isinstance(engine, dict)
        assert engine["reachable"]
        assert engine["api_version"] == "1.41"
    _wait_for("healthz 503 once the Engine is gone", lambda: _get(port, "/healthz")[0] == 503)
    with FakeEngine(Cluster(nodes=2, services=1, groups=0), port=engine_port):
        _wait_for("healthz 200 again", lambda: _get(port, "/healthz")[0] == 200)
    assert proc.poll() is None  # never crashed
    rss = rss_bytes(proc.pid)
    print(f"agent VmRSS: {rss / 2**20:.1f} MiB")
    assert 0 < rss < RSS_LIMIT_BYTES


def test_the_cli_validates_the_config_then_execs_the_small_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "orcastra.yml"
    config.write_text("agent:\n  listen: 0.0.0.0:9999\n  engine_check_interval_seconds: 3\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append(argv))
    result = CliRunner().invoke(cli, ["--config", str(config), "agent"], env={"DOCKER_HOST": "unix:///d.sock"})
    assert result.exit_code == 0, result.output
    assert calls[0][1:4] == ["-m", "orcastra.runtime.agent", "--options"]
    options = msgspec.json.decode(calls[0][4], type=AgentOptions)
    assert (options.listen, options.docker_host, options.engine_check_interval_seconds) == (
        "0.0.0.0:9999",
        "unix:///d.sock",
        3.0,
    )
    config.write_text("agent:\n  listen: nowhere\n  report_timeout_seconds: 0\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "agent"])
    assert result.exit_code != 0
    assert "agent.listen" in result.output
    assert "agent.report_timeout_seconds" in result.output
    assert len(calls) == 1
