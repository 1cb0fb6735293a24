"""``orcastra health``: exit 0 when the running Orcastra's /healthz answers 200, else 1 (a container's
HEALTHCHECK runs it)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orcastra.adapters.http import ApiServer
from orcastra.cli import cli
from orcastra.runtime.observe import HealthState, Metrics, status_routes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_health(tmp_path: Path, port: int) -> tuple[int, str]:
    config = tmp_path / "orcastra.yml"
    config.write_text(f"api:\n  listen: 127.0.0.1:{port}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["health", "--config", str(config)], catch_exceptions=False)
    return result.exit_code, result.output + result.stderr


@pytest.mark.parametrize(
    ("role", "fresh", "code", "said"),
    [
        ("leader", True, 0, "status ok, role leader"),
        ("follower", False, 0, "role follower"),
        ("leader", False, 1, "503"),
    ],
    ids=["leader-ok", "follower", "leader-stale"],
)
def test_health_follows_healthz(tmp_path: Path, role: str, fresh: bool, code: int, said: str) -> None:
    health = HealthState(60.0)
    health.set_role(role)  # type: ignore[arg-type]
    if fresh:
        health.cycle_ok(time.time())
    port = free_port()
    with ApiServer(f"127.0.0.1:{port}", builtin=status_routes(Metrics(), health)):
        exit_code, output = run_health(tmp_path, port)
    assert exit_code == code
    assert said in output


def test_health_when_nothing_listens(tmp_path: Path) -> None:
    exit_code, output = run_health(tmp_path, free_port())
    assert exit_code == 1
    assert "no answer from Orcastra" in output
    assert "Traceback" not in output
