"""examples/legacy: the earlier tool's compose service (only the image changed) and its ./config, read by the
legacy loader as Orcastra would at /etc/swarm-orchestration: no problems, legacy mode, the seed's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orcastra.cli import cli
from orcastra.config import load_config_report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy"
# The earlier README's compose service, as it was.
SEED_ENVIRONMENT = ["STACK_NAME=swarm-dev", "DEBUG=true", "EVENT_MODE=false", "POLLING_MODE=true"]
SEED_VOLUMES = ["/var/run/docker.sock:/var/run/docker.sock", "./config:/etc/swarm-orchestration:ro"]


def test_the_config_directory_loads_without_problems_in_legacy_mode() -> None:
    compose = yaml.safe_load((EXAMPLE / "docker-compose.yml").read_text())
    env = dict(item.split("=", 1) for item in compose["services"]["orcastra"]["environment"])
    report = load_config_report(None, {**env, "ORCASTRA_LEGACY_DIR": str(EXAMPLE / "config")}, required=False)
    c = report.config
    assert report.legacy_summary is not None
    assert report.legacy_summary.startswith("legacy mode: found ")
    assert c.stack == "swarm-dev"
    assert c.logging.debug is True
    assert c.nodes["core-1"].role == "manager"
    assert c.nodes["node-2"].labels == {"homelab": "true", "zfs": "true"}
    assert c.anchors["gitea_db"].dependents == ["gitea", "gitea_redis"]
    assert c.anchors["couchdb"].dependents == ["influxdbv1", "swarmpit"]


def test_only_the_image_differs_from_the_earlier_compose_service() -> None:
    service = yaml.safe_load((EXAMPLE / "docker-compose.yml").read_text())["services"]["orcastra"]
    assert set(service) == {"image", "environment", "volumes"}
    assert service["environment"] == SEED_ENVIRONMENT
    assert service["volumes"] == SEED_VOLUMES
    assert "orcastra" in service["image"]


def test_orcastra_validate_accepts_the_example_without_a_main_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ORCASTRA_CONFIG", "NODES_FILE", "DEPENDENCIES_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("orcastra.config.load.DEFAULT_CONFIG_PATH", EXAMPLE / "no-orcastra.yml", raising=False)
    env = {"ORCASTRA_LEGACY_DIR": str(EXAMPLE / "config"), "ORCASTRA_CONFIG": ""}
    result = CliRunner().invoke(cli, ["validate"], env=env, prog_name="orcastra")
    assert result.exit_code == 0, result.output
    assert "valid (2 nodes, 2 anchors)" in result.output
