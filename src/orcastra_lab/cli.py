"""``orcastra lab ...``: bring the local multi-node Swarm up, inspect it, break and mend nodes, tear it down.

Every command prints ``orcastra lab: <message>`` on stderr and exits 1 on an OrcastraError, never a
traceback. Progress goes to stderr; ``env`` (and the end of ``up``) print export lines on stdout, so
``eval "$(orcastra lab env)"`` works.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from orcastra.errors import OrcastraError
from orcastra_lab import stack as lab_stack
from orcastra_lab.core import DEFAULT_TIMEOUT_SECONDS, Lab
from orcastra_lab.errors import LabError
from orcastra_lab.layout import DEFAULT_NAME
from orcastra_lab.memory import parse_size

P = ParamSpec("P")
R = TypeVar("R")

name_option = click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="Lab name; labs with different names coexist.",
)
timeout_option = click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for daemons and Swarm readiness.",
)


def _progress(message: str) -> None:
    click.echo(f"lab: {message}", err=True)


def _lab(name: str) -> Lab:
    return Lab(name=name, progress=_progress)


def _reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an OrcastraError into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OrcastraError as err:
            click.echo(f"orcastra lab: {err}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
def lab() -> None:
    """A real N-node Docker Swarm on this box (root): one dockerd per network namespace."""


@lab.command()
@click.option("--nodes", type=click.IntRange(1), default=3, show_default=True, help="Number of nodes.")
@click.option("--managers", type=click.IntRange(1), default=1, show_default=True, help="How many are managers.")
@click.option("--no-swarm", is_flag=True, help="Start bare daemons; do not init or join a Swarm.")
@click.option(
    "--node-memory",
    metavar="SIZE",
    help="Memory limit of every node (e.g. 512m, 2g, none); default: keep each node's current limit.",
)
@click.option(
    "--with-orcastra",
    is_flag=True,
    help="Then build Orcastra's image, push it to the lab registry and deploy deploy/stack.yml onto the lab "
    "(controller on the managers, agent on every node), as `docker stack deploy` on a real Swarm.",
)
@click.option(
    "--orcastra-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --with-orcastra: the configuration to deploy (default: a minimal one, see orcastra_lab/stack.py).",
)
@name_option
@timeout_option
@_reports_errors
def up(  # noqa: PLR0913 - one parameter per click option of 'lab up'
    *,
    nodes: int,
    managers: int,
    no_swarm: bool,
    node_memory: str | None,
    with_orcastra: bool,
    orcastra_config: Path | None,
    name: str,
    timeout: float,
) -> None:
    """Bring the lab up (idempotent): adds missing nodes, restarts dead daemons, forms the Swarm."""
    started = time.monotonic()
    lab_ = _lab(name)
    limit = parse_size(node_memory) if node_memory is not None else None
    env = lab_.up(nodes=nodes, managers=managers, swarm=not no_swarm, timeout=timeout, node_memory=limit)
    if node_memory is not None and limit is None:
        # "none" on up means: make every node unlimited (up's own None means: keep what is recorded).
        for node in env.node_hosts:
            lab_.set_node_memory(node, None)
    if with_orcastra:
        if no_swarm:
            raise LabError("--with-orcastra deploys a stack: it needs the Swarm (leave out --no-swarm)")
        built = lab_.build_orcastra_image()
        env = lab_.env()
        text = orcastra_config.read_text() if orcastra_config is not None else lab_stack.LAB_CONFIG
        lab_stack.deploy(lab_.layout, env.docker_host, built.ref, text, container_socket=env.container_socket)
        lab_stack.wait_until_leading(lab_.layout, env.docker_host, say=_progress)
    _progress(f'done in {time.monotonic() - started:.1f} s; to use it: eval "$(orcastra lab env --name {name})"')
    click.echo(env.exports())


@lab.command()
@name_option
@_reports_errors
def env(name: str) -> None:
    """Print export lines for DOCKER_HOST, the registry, the image and each node's endpoint."""
    click.echo(_lab(name).env().exports())


@lab.command()
@click.option(
    "--node-exporter",
    is_flag=True,
    help="Also build the node_exporter image of deploy/node-exporter.yml (Debian's binary on the same base) and "
    "print its ref on a second line.",
)
@name_option
@_reports_errors
def image(node_exporter: bool, name: str) -> None:
    """Build Orcastra's image by the repository's Dockerfile on node1 (offline) and push it to the lab
    registry; print its ref. The lab must be up (``orcastra lab up``)."""
    lab_ = _lab(name)
    click.echo(lab_.build_orcastra_image().ref)
    if node_exporter:
        click.echo(lab_.build_node_exporter_image().ref)


@lab.command()
@name_option
@_reports_errors
def status(name: str) -> None:
    """Each node: address, dockerd pid and liveness, Swarm state/availability/role."""
    rows = [("NODE", "ADDRESS", "DOCKERD", "STATE", "AVAILABILITY", "ROLE")]
    for node in _lab(name).status():
        daemon = f"{node.pid} {'up' if node.daemon_alive else 'dead'}" if node.pid else "-"
        role = (node.role or "-") + (" (leader)" if node.leader else "")
        rows.append((node.name, node.address, daemon, node.swarm_state or "-", node.availability or "-", role))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@lab.command()
@click.argument("node")
@name_option
@_reports_errors
def kill(node: str, name: str) -> None:
    """SIGKILL NODE's dockerd (a power loss: its containers and shims stay)."""
    _lab(name).kill(node)


@lab.command()
@click.argument("node")
@name_option
@_reports_errors
def partition(node: str, name: str) -> None:
    """Cut NODE off the lab network (link down): a partition; its daemon and containers keep running."""
    _lab(name).partition(node)


@lab.command()
@click.argument("node")
@name_option
@_reports_errors
def heal(node: str, name: str) -> None:
    """End NODE's partition (link up)."""
    _lab(name).heal(node)


@lab.command()
@click.argument("node")
@name_option
@timeout_option
@_reports_errors
def start(node: str, name: str, timeout: float) -> None:
    """Bring a killed NODE back and wait until it is Ready."""
    _lab(name).start(node, timeout=timeout)


@lab.command()
@click.argument("node")
@name_option
@timeout_option
@_reports_errors
def restart(node: str, name: str, timeout: float) -> None:
    """Gracefully restart NODE's dockerd (its "reboot") and wait until it is Ready."""
    _lab(name).restart(node, timeout=timeout)


@lab.command()
@click.argument("node")
@click.argument("size")
@name_option
@_reports_errors
def memory(node: str, size: str, name: str) -> None:
    """Set NODE's memory limit to SIZE (512m, 2g, ...; none = unlimited): its containers' cgroup parent."""
    _lab(name).set_node_memory(node, parse_size(size))


@lab.command()
@name_option
@_reports_errors
def down(name: str) -> None:
    """Remove everything this lab created: processes, namespaces, bridge, iptables rule, cgroups, files."""
    _lab(name).down()
