"""The lab itself, on real daemons: nodes Ready with the right hostnames, the image runs as a service,
a killed node goes Down and comes back, a restart gives a new dockerd, and ``down`` leaves nothing."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner

from orcastra.cli import cli
from orcastra_lab import Lab, LabEnv
from orcastra_lab.host import is_alive, mounts_under, pids_with_path_in_cmdline
from orcastra_lab.network import link_exists, netns_exists
from orcastra_lab.state import ProcessRecord, load_state

from .util import nodes_by_hostname, wait_for

pytestmark = pytest.mark.lab

NODE_NAMES = ("node1", "node2", "node3")
# Swarm marks a node whose dockerd was SIGKILLed Down after ~10-15 s (missed heartbeats).
DOWN_TIMEOUT_SECONDS = 40.0
TASK_TIMEOUT_SECONDS = 60.0
LAB_PROGRAMS = ("dockerd", "containerd", "containerd-shim-runc-v2", "docker-registry")


def node_state(api: docker.APIClient, hostname: str) -> str:
    return str(nodes_by_hostname(api)[hostname]["Status"]["State"])


def running_tasks(api: docker.APIClient, service_id: str) -> list[dict[str, Any]]:
    tasks = api.tasks(filters={"service": service_id, "desired-state": "running"})
    return [t for t in tasks if t["Status"]["State"] == "running"]


def create_sleep_service(api: docker.APIClient, image: str, replicas: int = 1) -> str:
    spec = docker.types.TaskTemplate(container_spec=docker.types.ContainerSpec(image=image))
    service = api.create_service(
        spec,
        name=f"labtest-{uuid.uuid4().hex[:8]}",
        mode=docker.types.ServiceMode("replicated", replicas=replicas),
    )
    return str(service["ID"])


def parse_exports(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = shlex.split(value)[0]
    return values


def test_nodes_ready_hostnames_exports_and_image_runs_as_service(lab_env: LabEnv, docker_api: docker.APIClient) -> None:
    nodes = nodes_by_hostname(docker_api)
    for name in NODE_NAMES:
        assert nodes[name]["Status"]["State"] == "ready", name
    assert nodes["node1"]["Spec"]["Role"] == "manager"

    # Each node's own endpoint is a different daemon whose hostname is the node name.
    for name in NODE_NAMES:
        with docker.APIClient(base_url=lab_env.node_hosts[name], version="auto") as api:
            assert api.info()["Name"] == name

    exports = parse_exports(lab_env.exports())
    assert exports["DOCKER_HOST"] == lab_env.docker_host == lab_env.node_hosts["node1"]
    assert exports["ORCASTRA_LAB_REGISTRY"] == lab_env.registry == "192.168.213.1:5000"
    assert exports["ORCASTRA_LAB_IMAGE"] == lab_env.image
    assert lab_env.image.startswith(lab_env.registry + "/")
    for name in NODE_NAMES:
        assert exports[f"ORCASTRA_LAB_NODE_{name.upper()}_HOST"] == lab_env.node_hosts[name]

    # `orcastra lab env` prints exactly those lines, for eval.
    result = CliRunner().invoke(cli, ["lab", "env"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == lab_env.exports()

    service_id = create_sleep_service(docker_api, lab_env.image)
    try:
        tasks = wait_for("the lab image's task to run", lambda: running_tasks(docker_api, service_id), 60)
        node_ids = {n["ID"]: h for h, n in nodes.items()}
        assert node_ids[tasks[0]["NodeID"]] in NODE_NAMES
    finally:
        docker_api.remove_service(service_id)


def test_unknown_node_is_a_clear_error(lab_env: LabEnv) -> None:
    result = CliRunner().invoke(cli, ["lab", "kill", "node99"])
    assert result.exit_code == 1
    assert "unknown node 'node99'" in result.output
    assert "node1, node2, node3" in result.output
    assert "Traceback" not in result.output


def test_killed_node_goes_down_and_start_brings_it_back(
    lab: Lab, lab_env: LabEnv, docker_api: docker.APIClient
) -> None:
    try:
        lab.kill("node3")
        assert not next(s for s in lab.status() if s.name == "node3").daemon_alive
        wait_for("node3 to be Down", lambda: node_state(docker_api, "node3") == "down", DOWN_TIMEOUT_SECONDS)
    finally:
        lab.start("node3")
    assert node_state(docker_api, "node3") == "ready"
    assert next(s for s in lab.status() if s.name == "node3").daemon_alive


def test_restart_gives_a_new_dockerd_and_the_node_is_ready_again(
    lab: Lab, lab_env: LabEnv, docker_api: docker.APIClient
) -> None:
    before = next(s for s in lab.status() if s.name == "node2")
    assert before.daemon_alive
    lab.restart("node2")
    after = next(s for s in lab.status() if s.name == "node2")
    assert after.daemon_alive
    assert after.pid != before.pid
    assert node_state(docker_api, "node2") == "ready"
    with docker.APIClient(base_url=lab_env.node_hosts["node2"], version="auto") as api:
        assert api.ping()


def test_separate_lab_up_then_down_leaves_nothing(lab_env: LabEnv) -> None:
    small = Lab(name="orcatest")
    small.down()  # a previous failed run may have left it
    env = small.up(nodes=2, managers=1, swarm=True)
    state_dir = small.state_dir
    assert env.registry != lab_env.registry, "two labs must not share a subnet"

    # Give it containers (shims, mounts), then SIGKILL a dockerd so its shims are orphaned: the hard case.
    with docker.APIClient(base_url=env.docker_host, version="auto") as api:
        service_id = create_sleep_service(api, env.image, replicas=2)
        wait_for("2 tasks to run", lambda: len(running_tasks(api, service_id)) == 2, TASK_TIMEOUT_SECONDS)
    small.kill("node2")

    state = load_state(small.layout.state_file)
    assert state is not None
    processes: list[ProcessRecord] = [r.dockerd for r in state.nodes.values() if r.dockerd is not None]
    processes += [state.registry] if state.registry else []
    processes += pids_with_path_in_cmdline(state_dir, LAB_PROGRAMS)
    netns = [r.netns for r in state.nodes.values() if r.netns]
    links = [r.veth_host for r in state.nodes.values() if r.veth_host] + [small.layout.bridge]
    assert any(is_alive(p) for p in processes)
    # dockerd's mounts (overlays, netns files) live in its node's own mount namespace: none shows here, and
    # none may be left here after down either (checked below).

    small.down()

    assert [p.pid for p in processes if is_alive(p)] == []
    assert pids_with_path_in_cmdline(state_dir, LAB_PROGRAMS) == []
    assert [n for n in netns if netns_exists(n)] == []
    assert [link for link in links if link_exists(link)] == []
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    assert small.layout.bridge not in forward
    assert not state_dir.exists()
    assert mounts_under(state_dir) == []
    assert list(Path("/sys/fs/cgroup").glob(f"*/{small.layout.cgroup_root}")) == []

    small.down()  # twice is fine
