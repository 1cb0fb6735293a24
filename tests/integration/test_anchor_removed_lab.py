"""When a service stops being an anchor (its follower's ``orcastra.follow`` label removed, the anchor dropped from
the config, or a ``stack`` typo), Orcastra removes its ``orcastra.anchor.S`` node labels, and must then also
remove the placement constraint it added to the dependents, or their tasks could never be scheduled again.
A constraint the user wrote is reported instead (a warning in the log and in ``plan``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orcastra.domain.labels import ADDED_CONSTRAINT_LABEL
from orcastra.features.colocation.plan import anchor_constraint, anchor_label_key
from orcastra_lab import LabEnv

from .test_colocation_lab import docker_cli, service_spec
from .util import (
    deployed_stack,
    free_port,
    node_labels,
    run_orcastra,
    running_nodes,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

STACK = "an"
ANCHOR = f"{STACK}_db"
APP = f"{STACK}_app"
HAND = f"{STACK}_hand"
KEY = anchor_label_key(ANCHOR)

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
  app:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      labels:
        orcastra.follow: db          # no constraint in the file: Orcastra adds it, and records that it did
  hand:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.labels.orcastra.anchor.an_db == true]   # written by hand, follows nothing declared
"""

CONFIG = """
stack: an
reconcile:
  resync_interval_seconds: 5
leader_election:
  enabled: false
api:
  listen: 127.0.0.1:{port}
"""


def constraints(api: docker.APIClient, name: str) -> list[str]:
    return list((service_spec(api, name)["TaskTemplate"].get("Placement") or {}).get("Constraints") or [])


@pytest.fixture
def stack(lab_env: LabEnv, tmp_path: Path, docker_api: docker.APIClient) -> Iterator[Path]:
    with deployed_stack(lab_env, docker_api, STACK, STACK_FILE, tmp_path):
        yield tmp_path


def test_the_constraint_orcastra_added_goes_with_the_anchor(
    lab_env: LabEnv, stack: Path, docker_api: docker.APIClient
) -> None:
    config = stack / "orcastra.yml"
    config.write_text(CONFIG.format(port=free_port()), encoding="utf-8")
    log = stack / "run.log"
    proc = start_orcastra(["--config", str(config), "run"], lab_env.docker_host, log)
    try:
        wait_for(
            "the app beside its anchor, with the constraint Orcastra added",
            lambda: (
                anchor_constraint(ANCHOR) in constraints(docker_api, APP)
                and service_spec(docker_api, APP)["Labels"].get(ADDED_CONSTRAINT_LABEL) == ANCHOR
                and running_nodes(docker_api, APP) == running_nodes(docker_api, ANCHOR) != []
            ),
            timeout=90,
        )
        # db stops being an anchor: its only follower no longer follows it.
        docker_cli(lab_env, "service", "update", "--detach", "--label-rm", "orcastra.follow", APP)
        wait_for(
            "the anchor label gone from every node",
            lambda: not any(KEY in labels for labels in node_labels(docker_api).values()),
            timeout=30,
        )
        wait_for(
            "the constraint Orcastra added removed again, and its record",
            lambda: (
                anchor_constraint(ANCHOR) not in constraints(docker_api, APP)
                and ADDED_CONSTRAINT_LABEL not in service_spec(docker_api, APP)["Labels"]
            ),
            timeout=30,
        )
        wait_for("the app running (anywhere)", lambda: len(running_nodes(docker_api, APP)) == 1, timeout=60)
        # The constraint the user wrote stays (it is theirs) and is reported: nothing can run there any more.
        assert constraints(docker_api, HAND) == ["node.labels.orcastra.anchor.an_db == true"]
        wait_for("the warning in the log", lambda: f"{HAND}: placement constraint" in log.read_text(), timeout=30)
        plan = run_orcastra(["--config", str(config), "plan"], lab_env.docker_host)
        assert plan.returncode == 0, plan.stderr
        assert f"warning: {HAND}: placement constraint {anchor_constraint(ANCHOR)} names {ANCHOR}" in plan.stdout
    finally:
        stop_process(proc)
