"""Secrets stay secret: the API token and a secret inside the reboot command appear in no log line (at DEBUG),
no audit line, no command result, no page (/healthz, /metrics), and not in ``orcastra status`` or ``plan``, also
when a wrong token is tried and when the reboot command fails with the secret in its output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from orcastra.domain.labels import REBOOT_LOCK_LABEL
from orcastra_lab import LabEnv

from .util import free_port, run_orcastra, start_orcastra, stop_process, wait_for

pytestmark = pytest.mark.lab

TOKEN = "t0ken-Zq83-secret"
WRONG = "wr0ng-Pp41-secret"
IPMI = "ipmi-Xk27-secret"

CONFIG = """
nodes:
{nodes}
reboot:
  command: "echo access denied for {ipmi}; false {ipmi} {{node}}"
  command_timeout_seconds: 10
  drain_timeout_seconds: 30
reconcile:
  resync_interval_seconds: 5
leader_election:
  enabled: false
api:
  listen: 127.0.0.1:{port}
  token: {token}
audit:
  path: {audit}
logging:
  debug: true
"""


def set_availability(api: docker.APIClient, hostname: str, availability: str) -> None:
    for _ in range(5):
        node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
        spec = {**node["Spec"], "Availability": availability}
        try:
            api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
            return
        except docker.errors.APIError:
            continue


@pytest.fixture
def restore(docker_api: docker.APIClient) -> Iterator[None]:
    yield
    set_availability(docker_api, "node3", "active")
    swarm = docker_api.inspect_swarm()
    labels = dict(swarm["Spec"].get("Labels") or {})
    if labels.pop(REBOOT_LOCK_LABEL, None) is not None:
        spec = {**swarm["Spec"], "Labels": labels}
        docker_api.update_swarm(version=swarm["Version"]["Index"], swarm_spec=spec)


@pytest.mark.usefixtures("restore")
def test_no_secret_in_any_log_audit_result_page_or_output(lab_env: LabEnv, tmp_path: Path) -> None:
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    nodes = "\n".join(f"  {n}:\n    endpoint: {h}" for n, h in sorted(lab_env.node_hosts.items()))
    config = tmp_path / "orcastra.yml"
    config.write_text(CONFIG.format(nodes=nodes, ipmi=IPMI, port=port, token=TOKEN, audit=audit), encoding="utf-8")
    config.chmod(0o600)
    log = tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_orcastra(["--config", str(config), "run"], lab_env.docker_host, log)
    outputs: list[str] = []
    try:
        wait_for("the API", lambda: _get(base + "/healthz") is not None, timeout=30)
        wrong = httpx.post(base + "/v1/commands", json={"command": "sync"}, headers=_auth(WRONG), timeout=10)
        assert wrong.status_code == 401
        outputs.append(wrong.text)
        reboot = httpx.post(
            base + "/v1/commands", json={"command": "reboot", "node": "node3"}, headers=_auth(TOKEN), timeout=120
        )
        assert reboot.status_code == 200
        body = reboot.json()
        assert body["result"] == "error"
        assert "reboot-command" in body["message"]
        outputs.append(reboot.text)
        results = httpx.get(base + "/v1/commands/results", headers=_auth(TOKEN), timeout=10)
        assert results.status_code == 200
        outputs += [results.text, _get(base + "/healthz") or "", _get(base + "/metrics") or ""]
        for command in (["status"], ["plan"], ["status", "--json"], ["plan", "--json"], ["validate"]):
            done = run_orcastra(["--config", str(config), *command], lab_env.docker_host)
            outputs += [done.stdout, done.stderr]
    finally:
        stop_process(proc)
    results_files = [p.read_text() for p in tmp_path.glob("*.results.jsonl*")]
    everything = "\n".join([*outputs, log.read_text(), audit.read_text() if audit.exists() else "", *results_files])
    assert "reboot" in everything  # the reboot was reported...
    for secret in (TOKEN, WRONG, IPMI):
        assert secret not in everything, f"{secret} leaked"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _get(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return None
