"""Fixtures for integration tests: the shared lab Swarm (session) and a manager API client (per test).

The lab is brought up once per session, or reused when it is already up; it is torn down at the end
only if this session brought it up and ``ORCASTRA_LAB_KEEP`` is not ``1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from orcastra_lab import Lab, LabEnv
from orcastra_lab.errors import LabError

LAB_NODES = 3
LAB_MANAGERS = 1
KEEP_ENV = "ORCASTRA_LAB_KEEP"


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The shared lab (default name); tests that break nodes use it to mend them."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, a bridge, iptables, dockerd)")
    return Lab()


@pytest.fixture(scope="session")
def lab_env(lab: Lab) -> Iterator[LabEnv]:
    """The shared 3-node lab Swarm (1 manager), up and Ready for the whole session."""
    try:
        lab.env()
        brought_up = False
    except LabError:
        brought_up = True
    # Even when it is up, ``up`` is cheap and mends a node someone left killed.
    env = lab.up(nodes=LAB_NODES, managers=LAB_MANAGERS, swarm=True)
    yield env
    if brought_up and os.environ.get(KEEP_ENV) != "1":
        lab.down()


@pytest.fixture
def docker_api(lab_env: LabEnv) -> Iterator[docker.APIClient]:
    """A Docker API client to the lab's manager (node1), closed after the test."""
    client = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    try:
        yield client
    finally:
        client.close()
