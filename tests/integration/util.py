"""Helpers for integration tests: bounded waits, running the real CLI, reading node labels."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def orcastra_env(docker_host: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEGACY_ENV}
    env["DOCKER_HOST"] = docker_host
    env.update(extra or {})
    return env


LEGACY_ENV = [
    "STACK_NAME",
    "RELABEL_TIME",
    "EVENT_MODE",
    "POLLING_MODE",
    "RESTART_DEPENDENTS",
    "DRY_RUN",
    "RUN_ONCE",
    "DEBUG",
    "LOG_TO_FILE",
    "NODES_FILE",
    "DEPENDENCIES_FILE",
    "ORCASTRA_CONFIG",
]


def run_orcastra(
    args: list[str], docker_host: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orcastra", *args],
        env=orcastra_env(docker_host, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_orcastra(
    args: list[str], docker_host: str, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "orcastra", *args],
            env=orcastra_env(docker_host, env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_nodes(api: docker.APIClient, service: str) -> list[str]:
    """Hostnames where the service's tasks really run (desired running, running, on a Ready node)."""
    nodes = {n["ID"]: n for n in api.nodes()}
    out = []
    for t in api.tasks(filters={"service": service, "desired-state": "running"}):
        node = nodes.get(t.get("NodeID", ""))
        if t["Status"]["State"] == "running" and node and node["Status"]["State"] == "ready":
            out.append(node["Description"]["Hostname"])
    return sorted(out)


def nodes_by_hostname(api: docker.APIClient) -> dict[str, dict[str, Any]]:
    return {n["Description"]["Hostname"]: n for n in api.nodes()}


def node_labels(api: docker.APIClient) -> dict[str, dict[str, str]]:
    return {h: dict(n["Spec"].get("Labels") or {}) for h, n in nodes_by_hostname(api).items()}


def node_versions(api: docker.APIClient) -> dict[str, int]:
    return {h: int(n["Version"]["Index"]) for h, n in nodes_by_hostname(api).items()}


def set_node_labels(api: docker.APIClient, hostname: str, labels: Mapping[str, str]) -> None:
    """Replace a node's labels (test set-up/clean-up), re-reading on a version conflict."""
    for _ in range(5):
        node = nodes_by_hostname(api)[hostname]
        spec = dict(node["Spec"])
        spec["Labels"] = dict(labels)
        try:
            api.update_node(node["ID"], node["Version"]["Index"], node_spec=spec)
            return
        except docker.errors.APIError as e:
            if "out of sequence" not in str(e) and e.status_code != 409:
                raise
    raise AssertionError(f"could not set labels on {hostname}")


@contextmanager
def deployed_stack(env: Any, api: docker.APIClient, name: str, text: str, workdir: Path) -> Iterator[Path]:
    """``docker stack deploy`` of ``text`` as stack ``name`` (the file is ``workdir/stack.yml``); at the end the
    stack is removed (waited for), with the leader lease of a test's Orcastra, and every node's labels are put
    back as they were. ``env`` is the lab's ``LabEnv``."""
    labels_before = node_labels(api)
    docker_env = {**os.environ, "DOCKER_HOST": env.docker_host, "ORCASTRA_LAB_IMAGE": env.image}
    stack_file = workdir / "stack.yml"
    stack_file.write_text(text, encoding="utf-8")
    deployed = subprocess.run(
        ["docker", "stack", "deploy", "-c", str(stack_file), name],
        env=docker_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr
    try:
        yield stack_file
    finally:
        subprocess.run(["docker", "stack", "rm", name], env=docker_env, capture_output=True, check=False)
        wait_for("stack removed", lambda: not api.services(filters={"label": f"com.docker.stack.namespace={name}"}))
        for lease in api.services(filters={"name": "orcastra-leader"}):
            if lease["Spec"]["Name"] == "orcastra-leader":
                api.remove_service(lease["ID"])
        for hostname, labels in labels_before.items():
            current = node_labels(api).get(hostname)
            if current is not None and current != labels:
                set_node_labels(api, hostname, labels)


def group_node(api: docker.APIClient, anchor: str, dependents: Mapping[str, int]) -> str | None:
    """The node where the anchor's one task runs with every dependent's tasks (``dependents``: name -> task
    count), and the only node carrying the anchor's label; None while that is not so."""
    where = running_nodes(api, anchor)
    if len(where) != 1:
        return None
    if any(running_nodes(api, name) != where * count for name, count in dependents.items()):
        return None
    key = f"orcastra.anchor.{anchor}"
    return where[0] if [h for h, labels in node_labels(api).items() if key in labels] == where else None


def do_through_swarm(docker_host: str, config: Path, *words: str) -> subprocess.CompletedProcess[str]:
    """``orcastra --config CONFIG do --swarm --timeout 120 WORDS`` against a manager, as an operator runs it."""
    argv = [sys.executable, "-m", "orcastra", "--config", str(config), "do", "--swarm", "--timeout", "120"]
    return subprocess.run(
        [*argv, *words],
        env={**os.environ, "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
