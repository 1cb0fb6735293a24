"""Static node labels on the real lab Swarm: labels land, hand-set labels survive, dry-run and plan change
nothing, a config edit is applied without restart, conflicts are re-read, bad configs change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.config import load_config
from orcastra.domain.labels import OWNED_LABELS_KEY
from orcastra.runtime.controllers import StaticLabels
from orcastra.runtime.executor import AuditLog, EngineExecutor
from orcastra.runtime.reconcile import plan_all, run_cycle

from .util import (
    node_labels,
    node_versions,
    run_orcastra,
    set_node_labels,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

BAD_CONFIGS = Path(__file__).parent.parent / "data" / "bad_configs"


@pytest.fixture
def restore_labels(docker_api: docker.APIClient) -> Iterator[None]:
    """Put every node's labels back as they were, so tests do not leak labels into each other."""
    before = node_labels(docker_api)
    yield
    for hostname, labels in before.items():
        if node_labels(docker_api).get(hostname) != labels:
            set_node_labels(docker_api, hostname, labels)


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


CONFIG = """
nodes:
  node1:
    labels: [ssd, zone-a]
  node2:
    labels: {zone: b, tier: "2"}
labels:
  prune: true
audit:
  path: %s
"""


@pytest.mark.usefixtures("restore_labels")
def test_static_labels_land_and_hand_set_labels_survive(
    lab_env: Any, docker_api: docker.APIClient, tmp_path: Path
) -> None:
    set_node_labels(docker_api, "node2", {"rack": "r7"})  # set by hand: never removed
    audit = tmp_path / "audit.jsonl"
    cfg = write_config(tmp_path / "orcastra.yml", CONFIG % audit)

    result = run_orcastra(["--config", str(cfg), "run", "--once"], lab_env.docker_host)
    assert result.returncode == 0, result.stderr

    labels = node_labels(docker_api)
    assert labels["node1"]["ssd"] == "true"
    assert labels["node1"]["zone-a"] == "true"
    assert labels["node1"][OWNED_LABELS_KEY] == "ssd,zone-a"
    assert labels["node2"]["zone"] == "b"
    assert labels["node2"]["tier"] == "2"
    assert labels["node2"]["rack"] == "r7"
    assert "rack" not in labels["node2"][OWNED_LABELS_KEY].split(",")
    assert OWNED_LABELS_KEY not in labels["node3"]
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {line["target"] for line in lines} == {"node/node1", "node/node2"}
    assert all(line["result"] == "ok" and line["reason"] and line["time"] for line in lines)

    # A second run has nothing to do: node versions do not move.
    versions = node_versions(docker_api)
    result = run_orcastra(["--config", str(cfg), "run", "--once"], lab_env.docker_host)
    assert result.returncode == 0, result.stderr
    assert node_versions(docker_api) == versions

    # Drop zone-a from the config: with prune it goes, the hand-set rack label on node2 stays.
    write_config(cfg, (CONFIG % audit).replace("[ssd, zone-a]", "[ssd]"))
    result = run_orcastra(["--config", str(cfg), "run", "--once"], lab_env.docker_host)
    assert result.returncode == 0, result.stderr
    labels = node_labels(docker_api)
    assert "zone-a" not in labels["node1"]
    assert labels["node1"][OWNED_LABELS_KEY] == "ssd"
    assert labels["node2"]["rack"] == "r7"


@pytest.mark.usefixtures("restore_labels")
def test_dry_run_and_plan_change_nothing(lab_env: Any, docker_api: docker.APIClient, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "orcastra.yml", "nodes:\n  node3:\n    labels: {dry: run}\n")
    versions = node_versions(docker_api)

    planned = run_orcastra(["--config", str(cfg), "plan", "--json"], lab_env.docker_host)
    assert planned.returncode == 0, planned.stderr
    actions = json.loads(planned.stdout)["actions"]
    assert [(a["target"], a["set_labels"].get("dry")) for a in actions] == [("node/node3", "run")]
    assert actions[0]["reason"]

    dry = run_orcastra(["--config", str(cfg), "run", "--once", "--dry-run"], lab_env.docker_host)
    assert dry.returncode == 0, dry.stderr
    assert "would update-node-labels node/node3" in dry.stderr
    dry_env = run_orcastra(["--config", str(cfg), "run"], lab_env.docker_host, {"DRY_RUN": "true", "RUN_ONCE": "1"})
    assert dry_env.returncode == 0, dry_env.stderr

    assert node_versions(docker_api) == versions
    assert "dry" not in node_labels(docker_api)["node3"]


@pytest.mark.usefixtures("restore_labels")
def test_config_edit_applied_without_restart(lab_env: Any, docker_api: docker.APIClient, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "orcastra.yml", "nodes:\n  node3:\n    labels: {hot: one}\n")
    # A long resync proves the edit is picked up by the config watcher, not by the periodic resync.
    proc = start_orcastra(
        ["--config", str(cfg), "run"], lab_env.docker_host, tmp_path / "run.log", {"RELABEL_TIME": "600"}
    )
    try:
        wait_for("first label", lambda: node_labels(docker_api)["node3"].get("hot") == "one", timeout=30)
        write_config(cfg, "nodes:\n  node3:\n    labels: {hot: two, extra: 'yes'}\n")
        wait_for("edited label", lambda: node_labels(docker_api)["node3"].get("hot") == "two", timeout=15)
        assert node_labels(docker_api)["node3"]["extra"] == "yes"

        # An invalid edit is reported and the previous config stays in force (nothing half-applied).
        versions = node_versions(docker_api)
        write_config(cfg, "nodes:\n  node3:\n    labels: {hot: [not, a, string]}\n")
        wait_for("invalid config reported", lambda: "invalid" in (tmp_path / "run.log").read_text(), timeout=15)
        assert node_versions(docker_api) == versions
        assert proc.poll() is None, "orcastra must keep running on a bad config edit"
    finally:
        stop_process(proc)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()


@pytest.mark.usefixtures("restore_labels")
def test_stale_version_is_a_conflict_then_replanned(lab_env: Any, docker_api: docker.APIClient, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "orcastra.yml", "nodes:\n  node2:\n    labels: {occ: 'true'}\n")
    config = load_config(cfg, {})
    with EngineAdapter(EngineSettings(host=lab_env.docker_host)) as engine:
        snapshot = engine.snapshot()
        plan = plan_all(snapshot, config, [StaticLabels()])
        # Someone else changes node2 after our snapshot: our write at the old version must not win.
        set_node_labels(docker_api, "node2", {**node_labels(docker_api)["node2"], "other": "writer"})
        executor = EngineExecutor(engine, AuditLog(path=tmp_path / "audit.jsonl"))
        outcomes = executor.apply(plan.actions, snapshot)
        assert [o.result for o in outcomes] == ["conflict"]
        assert "occ" not in node_labels(docker_api)["node2"]

        # The cycle re-reads and re-plans: both changes survive.
        result = run_cycle(engine, executor, config, [StaticLabels()])
        assert not result.failed
        assert result.engine_calls == 4  # 3 list calls + 1 node update, whatever the number of services
    labels = node_labels(docker_api)["node2"]
    assert labels["occ"] == "true"
    assert labels["other"] == "writer"


def test_bad_configs_change_nothing(lab_env: Any, docker_api: docker.APIClient, tmp_path: Path) -> None:
    versions = node_versions(docker_api)
    files = sorted(BAD_CONFIGS.glob("*.yml"))
    assert len(files) >= 15
    for path in files:
        result = run_orcastra(["--config", str(path), "run", "--once"], lab_env.docker_host)
        assert result.returncode == 2, f"{path.name}: {result.stderr}"
        assert path.name in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert node_versions(docker_api) == versions


def test_status_shows_nodes_and_unreachable_daemon_is_clear(lab_env: Any, tmp_path: Path) -> None:
    result = run_orcastra(["status"], lab_env.docker_host)
    assert result.returncode == 0, result.stderr
    for host in ("node1", "node2", "node3"):
        assert host in result.stdout
    bad = run_orcastra(["status"], "unix:///nonexistent/docker.sock")
    assert bad.returncode == 1
    assert "cannot reach the Docker Engine at unix:///nonexistent/docker.sock" in bad.stderr
    assert "Traceback" not in bad.stderr
    worker = run_orcastra(["status"], lab_env.node_hosts["node3"])
    assert worker.returncode == 1
    assert "not a manager" in worker.stderr
