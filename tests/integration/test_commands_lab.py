"""Operator commands on the real lab Swarm: from the command file, `orcastra do` (CLI) and the HTTP API; each
runs once, results are written, pause survives a restart, and a command interrupted by a crash is not run
again after the restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.commands import CommandRunner, parse_command_file
from orcastra.domain.labels import PAUSED_LABEL
from orcastra.runtime.handlers import CommandHandlers
from orcastra_lab import LabEnv

from .util import free_port, run_orcastra, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

SERVICE = "cmdtest_app"
TOKEN = "test-token-3f9a"


@dataclass
class Cmd:
    env: LabEnv
    dir: Path
    config: Path
    commands: Path
    port: int

    @property
    def results(self) -> Path:
        return self.commands.parent / (self.commands.name + ".results.jsonl")

    def result_records(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        lines = [json.loads(x) for x in self.results.read_text().splitlines() if x.strip()]
        return [x for x in lines if x.get("result") in ("ok", "error")]

    def start(self, log: str) -> Any:
        proc = start_orcastra(["--config", str(self.config), "run"], self.env.docker_host, self.dir / log)
        wait_for("API up", lambda: healthz(self.port).get("role") == "leader", timeout=30)
        return proc


def healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except (OSError, ValueError):
        return {}


def force_update(api: docker.APIClient) -> int:
    return int(api.inspect_service(SERVICE)["Spec"]["TaskTemplate"].get("ForceUpdate") or 0)


def availability(api: docker.APIClient, hostname: str) -> str:
    node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
    return str(node["Spec"]["Availability"])


@pytest.fixture(scope="module")
def cmd(lab_env: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cmd]:
    d = tmp_path_factory.mktemp("cmd")
    api = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    api.create_service({"ContainerSpec": {"Image": lab_env.image}}, name=SERVICE)
    port = free_port()
    commands = d / "commands.yml"
    config = d / "orcastra.yml"
    config.write_text(
        f"commands:\n  file: {commands}\n"
        f"api:\n  listen: 127.0.0.1:{port}\n  token: {TOKEN}\n"
        "leader_election:\n  lease_name: cmdtest-lease\n  ttl_seconds: 5\n"
        f"audit:\n  path: {d / 'audit.jsonl'}\n",
        encoding="utf-8",
    )
    try:
        yield Cmd(lab_env, d, config, commands, port)
    finally:
        api.remove_service(SERVICE)
        for s in api.services(filters={"name": "cmdtest-lease"}):
            api.remove_service(s["ID"])
        for hostname in ("node2", "node3"):
            if availability(api, hostname) != "active":
                node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
                spec = dict(node["Spec"], Availability="active")
                api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
        swarm = api.inspect_swarm()
        if PAUSED_LABEL in (swarm["Spec"].get("Labels") or {}):
            run_orcastra(["--config", str(config), "do", "resume"], lab_env.docker_host)
        api.close()


def test_command_file_runs_each_command_once(cmd: Cmd, docker_api: docker.APIClient) -> None:
    before = force_update(docker_api)
    proc = cmd.start("run1.log")
    try:
        cmd.commands.write_text(f"- restart {SERVICE}\n- {{command: drain, node: node3}}\n- frobnicate now\n")
        wait_for("3 results", lambda: len(cmd.result_records()) >= 3, timeout=30)
        results = {r["command"]: r for r in cmd.result_records()}
        assert results[f"restart {SERVICE}"]["result"] == "ok"
        assert results["drain node3"]["result"] == "ok"
        bad = next(r for r in cmd.result_records() if "frobnicate" in r["command"])
        assert bad["result"] == "error"
        assert force_update(docker_api) == before + 1
        assert availability(docker_api, "node3") == "drain"
        # Taken commands are gone from the file: nothing runs twice.
        assert "restart" not in cmd.commands.read_text()

        # The same commands from the CLI (through the API) and the API itself.
        done = run_orcastra(["--config", str(cmd.config), "do", "activate", "node3"], cmd.env.docker_host)
        assert done.returncode == 0, done.stderr
        assert availability(docker_api, "node3") == "active"
        unknown = run_orcastra(["--config", str(cmd.config), "do", "restart", "no-such-svc"], cmd.env.docker_host)
        assert unknown.returncode == 1
        assert "no-such-svc" in unknown.stdout + unknown.stderr
        request = urllib.request.Request(
            f"http://127.0.0.1:{cmd.port}/v1/commands", data=b'{"command": "sync"}', method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert json.loads(r.read())["result"] == "ok"

        # pause is kept in the Swarm: it survives a restart of Orcastra.
        cmd.commands.write_text("- pause\n")
        wait_for("paused", lambda: docker_api.inspect_swarm()["Spec"]["Labels"].get(PAUSED_LABEL) == "true")
    finally:
        stop_process(proc)
    assert force_update(docker_api) == before + 1


def test_pause_survives_restart_and_interrupted_command_is_not_rerun(cmd: Cmd, docker_api: docker.APIClient) -> None:
    before = force_update(docker_api)
    # A crash right after a command was taken: its "started" record exists, no result, entry still in the file.
    cmd.commands.write_text(f"- restart {SERVICE}\n")
    # Step 1 of taking a command (journal "started"), then the process dies before anything else.
    runner = CommandRunner(cmd.commands, CommandHandlers.__new__(CommandHandlers))
    runner.start_entries(parse_command_file(cmd.commands.read_text(), str(cmd.commands)), 1)
    proc = cmd.start("run2.log")
    try:
        wait_for(
            "interrupted command reported",
            lambda: any("interrupted" in r.get("message", "") for r in cmd.result_records()),
            timeout=20,
        )
        assert "paused" in (cmd.dir / "run2.log").read_text()
        cmd.commands.write_text("- resume\n")
        wait_for("resumed", lambda: PAUSED_LABEL not in (docker_api.inspect_swarm()["Spec"].get("Labels") or {}))
    finally:
        stop_process(proc)
    assert force_update(docker_api) == before, "the interrupted restart must not run again"
