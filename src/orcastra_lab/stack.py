"""Orcastra deployed on the lab the way users deploy it: ``docker stack deploy -c deploy/stack.yml``.

The stack file is the repository's own (deploy/stack.yml), unchanged; the lab only fills its variables: the
image it built and pushed (ORCASTRA_IMAGE), the path every node's containers see their Engine socket at
(ORCASTRA_DOCKER_SOCKET, see layout.NodeLayout.container_socket), and the names of the Swarm config and secret
it creates. A config's content cannot change in the Swarm, so each content gets its own config, named after
its digest: deploying a changed file is a rolling update of the controller, as an operator would do it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orcastra_lab.errors import LabError
from orcastra_lab.host import run
from orcastra_lab.image import docker_host_env
from orcastra_lab.layout import LabLayout

STACK_NAME = "orcastra"
CONFIG_PREFIX = "orcastra-config-"
TOKEN_SECRET = "orcastra-api-token"
DEPLOY_TIMEOUT_SECONDS = 180.0
# The repository's deploy/ directory (the lab runs from a checkout; a wheel has no deploy/).
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
LAB_CONFIG = """\
# Orcastra's configuration on the lab (deployed by `orcastra lab up --with-orcastra`); see deploy/config.yml.
stack: demo
api:
  listen: 0.0.0.0:9180
  token_file: /run/secrets/orcastra-api-token
commands:
  file: /var/lib/orcastra/commands.yml
logging:
  format: json
anchors:
  db:
    dependents: [app, cache]
"""


@dataclass(frozen=True)
class Deployed:
    """What was deployed: the stack, its config's name, and the API token (kept in the lab's state dir)."""

    stack: str
    config_name: str
    token: str


def stack_file(name: str = "stack.yml") -> Path:
    """A compose file of the repository's deploy/ (``node-exporter.yml``: the optional node_exporter)."""
    path = DEPLOY_DIR / name
    if not path.is_file():
        raise LabError(f"{path} not found: the lab deploys the stack file of a checkout of the repository")
    return path


def config_name(text: str) -> str:
    return CONFIG_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


def _docker(layout: LabLayout, docker_host: str, argv: list[str], env: Mapping[str, str] | None = None) -> str:
    full = docker_host_env(layout, docker_host) | dict(env or {})
    return run(["docker", *argv], env=full, timeout=DEPLOY_TIMEOUT_SECONDS).stdout


def _names(layout: LabLayout, docker_host: str, kind: str) -> set[str]:
    return set(_docker(layout, docker_host, [kind, "ls", "--format", "{{.Name}}"]).split())


def ensure_config(layout: LabLayout, docker_host: str, text: str) -> str:
    """The Swarm config holding ``text`` (created once per content); its name."""
    name = config_name(text)
    if name not in _names(layout, docker_host, "config"):
        source = layout.state_dir / f"{name}.yml"
        source.write_text(text)
        _docker(layout, docker_host, ["config", "create", name, str(source)])
    return name


def ensure_token(layout: LabLayout, docker_host: str) -> str:
    """The API token secret (created once per lab); the token is kept in the lab's state dir for clients."""
    path = layout.state_dir / "api-token"
    if not path.exists():
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    token = path.read_text().strip()
    if TOKEN_SECRET not in _names(layout, docker_host, "secret"):
        _docker(layout, docker_host, ["secret", "create", TOKEN_SECRET, str(path)])
    return token


def deploy(  # noqa: PLR0913 - the stack's variables, each a parameter
    layout: LabLayout,
    docker_host: str,
    image_ref: str,
    config_text: str = LAB_CONFIG,
    *,
    container_socket: str,
    extra_files: Sequence[Path] = (),
    extra_variables: Mapping[str, str] | None = None,
) -> Deployed:
    """``docker stack deploy`` of deploy/stack.yml with the lab's image, socket path, config and token.

    ``extra_files`` are deployed into the same stack (``-c stack.yml -c FILE ...``, e.g. deploy/node-exporter.yml)
    with ``extra_variables`` added to the environment (e.g. NODE_EXPORTER_IMAGE, NODE_EXPORTER_PORT)."""
    name = ensure_config(layout, docker_host, config_text)
    token = ensure_token(layout, docker_host)
    variables = {
        **(extra_variables or {}),
        "ORCASTRA_IMAGE": image_ref,
        "ORCASTRA_DOCKER_SOCKET": container_socket,
        "ORCASTRA_CONFIG_NAME": name,
        "ORCASTRA_TOKEN_NAME": TOKEN_SECRET,
    }
    files = [arg for path in (stack_file(), *extra_files) for arg in ("-c", str(path))]
    _docker(
        layout,
        docker_host,
        ["stack", "deploy", "--with-registry-auth=false", *files, STACK_NAME],
        env=variables,
    )
    return Deployed(stack=STACK_NAME, config_name=name, token=token)


def lease_holder(layout: LabLayout, docker_host: str, lease: str = "orcastra-leader") -> str | None:
    """The leader lease's holder, read from its service's labels (None while there is none)."""
    out = run(
        ["docker", "service", "inspect", lease, "--format", "{{json .Spec.Labels}}"],
        env=docker_host_env(layout, docker_host),
        check=False,
    )
    if out.returncode != 0:
        return None
    holder = json.loads(out.stdout or "{}").get("orcastra.lease.holder") or None
    return str(holder) if holder else None


def wait_until_leading(
    layout: LabLayout, docker_host: str, timeout: float = DEPLOY_TIMEOUT_SECONDS, say: Callable[[str], None] = print
) -> str:
    """Wait until a controller replica holds the lease; its holder id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lease_holder(layout, docker_host)
        if holder:
            say(f"orcastra is deployed; the leader is {holder}")
            return holder
        time.sleep(1.0)
    raise LabError(
        f"no controller replica took the leader lease within {timeout:.0f} s;"
        f" see: docker service ps {STACK_NAME}_controller"
    )
