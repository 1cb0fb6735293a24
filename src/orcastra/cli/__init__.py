"""The ``orcastra`` command line: run, agent, plan, status, validate, do, and the command groups of plugins
(``lab`` from the ``orcastra_lab`` package)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from orcastra import __version__
from orcastra.errors import OrcastraError

if TYPE_CHECKING:
    from orcastra.config import Config, LoadReport
    from orcastra.domain.snapshot import Snapshot
    from orcastra.features.rebalance import RebalancePlan


CONFIG_HELP = (
    "Configuration file (default: $ORCASTRA_CONFIG or /etc/orcastra/orcastra.yml). Accepted before or after "
    "the command (orcastra --config F run, orcastra run --config F); given more than once, the one given "
    "last wins."
)


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Store ``--config`` where every command reads it; a later one (after the command) replaces an earlier."""
    del param
    if value is not None:
        ctx.ensure_object(dict)["config_path"] = value
    return value


_F = TypeVar("_F", bound=Callable[..., Any])


def _config_option(command: _F) -> _F:
    """``--config`` on a command, with the same meaning as on the group (click options belong to one level)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        expose_value=False,
        callback=_remember_config,
        help=CONFIG_HELP,
    )(command)


def _fail(err: OrcastraError) -> NoReturn:
    click.echo(f"orcastra: {err}", err=True)
    sys.exit(err.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orcastra")
@_config_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Orcastra: anchor-following, node labels and rebalancing for Docker Swarm."""
    ctx.ensure_object(dict).setdefault("config_path", None)


def _load(ctx: click.Context) -> tuple[Config, Path]:
    """The configuration for run/plan/status. A file named explicitly must exist; the default may not."""
    report, path = _load_report(ctx)
    return report.config, path


def _load_report(ctx: click.Context) -> tuple[LoadReport, Path]:
    """The configuration with the loader's notes and its legacy-mode summary (the earlier tool's files)."""
    from orcastra.config import load_config_report, resolve_config_path

    explicit: Path | None = ctx.obj["config_path"]
    path = resolve_config_path(explicit, os.environ)
    required = explicit is not None or bool(os.environ.get("ORCASTRA_CONFIG"))
    try:
        return load_config_report(path, os.environ, required=required), path
    except OrcastraError as err:
        _fail(err)


def _read_swarm(ctx: click.Context) -> tuple[Config, Snapshot]:
    """The configuration and one snapshot of the Swarm, for the read-only commands."""
    from orcastra.adapters.engine.connect import make_engine

    config, _ = _load(ctx)
    try:
        with make_engine(config) as engine:
            return config, engine.snapshot()
    except OrcastraError as err:
        _fail(err)


@cli.command()
@_config_option
@click.option("--once", is_flag=True, default=None, help="Run one cycle and exit (RUN_ONCE).")
@click.option("--dry-run", is_flag=True, default=None, help="Log what would change; change nothing (DRY_RUN).")
@click.pass_context
def run(ctx: click.Context, once: bool | None, dry_run: bool | None) -> None:
    """Run the controllers: at start, on Engine events, on config change and every resync."""
    from orcastra.runtime.daemon import Daemon
    from orcastra.runtime.wiring import setup_logging

    report, path = _load_report(ctx)
    config = report.config
    setup_logging(config)
    log = logging.getLogger("orcastra")
    if report.legacy_summary:  # once, at start: what an earlier-tool user meets (docs/migrating.md)
        log.warning("%s", report.legacy_summary)
    for note in report.notes:
        log.warning("config: %s", note)
    once = bool(once) or config.run.once
    dry = bool(dry_run) or config.run.dry_run
    daemon = Daemon(config, path if path.exists() else None, os.environ, dry_run=dry)
    try:
        if once:
            ok = daemon.run_single_cycle()
            daemon.shutdown()
            sys.exit(0 if ok else 1)
        daemon.run_forever()
    except OrcastraError as err:
        daemon.shutdown()
        _fail(err)


@cli.command()
@_config_option
@click.pass_context
def agent(ctx: click.Context) -> None:
    """Run the node agent (one task per node, its node's Docker socket; docs/agent.md): reports its node to
    the controller on agent.listen. Validates the configuration, then runs as a small process of its own."""
    from orcastra.commands.api import load_token
    from orcastra.runtime.agent import exec_agent, options_from

    config, _ = _load(ctx)
    try:
        token = load_token(config.api)
    except OrcastraError as err:
        _fail(err)
    exec_agent(options_from(config, os.environ), token)


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, as_json: bool) -> None:
    """Print what the next cycle would do, and why. Changes nothing."""
    from orcastra.cli.render import render_plan
    from orcastra.runtime.controllers import registry
    from orcastra.runtime.reconcile import plan_all

    config, snapshot = _read_swarm(ctx)
    result = plan_all(snapshot, config, [f() for f in registry().values()])
    rebalance = _plan_rebalance_once(config, snapshot) if config.rebalance.enabled else None
    click.echo(render_plan(result, rebalance, as_json=as_json))
    _echo_migration_hint(config, snapshot, as_json)


def _plan_rebalance_once(config: Config, snapshot: Snapshot) -> RebalancePlan:
    from orcastra.runtime.rebalancer import plan_now

    return plan_now(config, snapshot, time.time()).plan


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the leader (who holds the lease), nodes (state, role, labels; * = set by Orcastra) and anchor
    groups (colocated or why not)."""
    from orcastra.cli.render import leader_json, render_status
    from orcastra.features.colocation.plan import plan_colocation
    from orcastra.runtime.controllers import colocation_settings

    config, snapshot = _read_swarm(ctx)
    groups = plan_colocation(snapshot, colocation_settings(config), snapshot.taken_at).groups
    election = config.leader_election
    leader = leader_json(snapshot, election.lease_name, election.ttl_seconds) if election.enabled else None
    agents = _agent_rows(config, snapshot)
    click.echo(render_status(snapshot, groups, as_json=as_json, leader=leader, agents=agents))
    _echo_migration_hint(config, snapshot, as_json)


def _echo_migration_hint(config: Config, snapshot: Snapshot, as_json: bool) -> None:
    """One line while the earlier tool's anchor labels or constraints remain (on stderr beside JSON)."""
    from orcastra.runtime.migrate import migration_hint

    hint = migration_hint(snapshot, config)
    if hint is not None:
        click.echo(hint, err=as_json)


@cli.command()
@_config_option
@click.option("--node", "nodes", multiple=True, help="Only this node (hostname); repeat for several. Default: all.")
@click.option("--dry-run/--apply", "dry_run", default=None, help="List only / remove (default: hygiene.gc.dry_run).")
@click.pass_context
def gc(ctx: click.Context, nodes: tuple[str, ...], dry_run: bool | None) -> None:
    """Run the garbage collection now on every node's agent (or --node ones) and show what each removed or
    would remove (docs/hygiene.md). Run where the agents are reachable: in a controller's container."""
    from orcastra.adapters.agent_client import request_gc
    from orcastra.adapters.http import parse_listen_address
    from orcastra.cli.render import render_gc
    from orcastra.commands.api import load_token
    from orcastra.features.agents.view import agent_targets

    config, snapshot = _read_swarm(ctx)
    targets = agent_targets(snapshot)
    unknown = sorted(set(nodes) - {t.hostname for t in targets})
    if not targets or unknown:
        what = f"no node named {', '.join(map(repr, unknown))}" if unknown and targets else "no agent service"
        _fail(OrcastraError(f"orcastra gc: {what} (agents run on: {', '.join(t.hostname for t in targets) or '-'})"))
    try:
        token = load_token(config.api) or ""
    except OrcastraError as err:
        _fail(err)
    port = parse_listen_address(config.agent.listen)[1]
    failed = False
    for t in targets:
        if nodes and t.hostname not in nodes:
            continue
        try:
            if not t.address:
                raise OrcastraError(f"its agent task is {t.task_state or 'missing'}")
            click.echo(render_gc(t.hostname, request_gc(t.address, port, dry_run, token)))
        except OrcastraError as err:
            failed = True
            click.echo(f"{t.hostname}: {err}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@_config_option
@click.option("--apply", "apply_", is_flag=True, help="Run every step (default: show the next step only).")
@click.pass_context
def migrate(ctx: click.Context, apply_: bool) -> None:
    """Move the earlier tool's anchor labels (<anchor>=true) and node.labels.<anchor>==true constraints to
    Orcastra's, never leaving a dependent without a node (docs/migrating.md). A dry run unless --apply."""
    from orcastra.adapters.engine.connect import make_engine
    from orcastra.runtime.executor import AuditLog
    from orcastra.runtime.migrate import Migration, old_anchors
    from orcastra.runtime.wiring import make_executor

    config, _ = _load(ctx)
    try:
        with make_engine(config) as engine:
            executor = make_executor(config, engine, dry_run=not apply_, audit=AuditLog(path=config.audit.path))
            migration = Migration(engine, executor, old_anchors(config), click.echo)
            if apply_:
                migration.apply()
            else:
                migration.preview()
    except OrcastraError as err:
        _fail(err)


def _agent_rows(config: Config, snapshot: Snapshot) -> list[tuple[Any, Any]]:
    """The agent's task on each node (from the Swarm), with the running controller's last report of it when
    its API answers (only the running controller polls the agents)."""
    from orcastra.runtime.agents import agent_rows

    return agent_rows(snapshot, config.api.listen)


@cli.command(name="do", context_settings={"ignore_unknown_options": True})
@_config_option
@click.option(
    "--swarm",
    is_flag=True,
    help="Send it through the Swarm (a command request the leader takes, wherever it runs), through the "
    "configured Engine of a manager (DOCKER_HOST); no API token needed.",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="With --swarm: seconds to wait.")
@click.argument("words", nargs=-1, required=True)
@click.pass_context
def do(ctx: click.Context, swarm: bool, timeout: float, words: tuple[str, ...]) -> None:
    """Run an operator command on the running Orcastra (its HTTP API): sync, restart SERVICE, rebalance,
    drain NODE, activate NODE, reboot NODE, pause, resume, relabel, bootstrap, update_dependents,
    remove_all_labels [--force]. Needs api.token (or --swarm)."""
    from orcastra.commands import do_command, load_token

    config, _ = _load(ctx)
    if swarm:
        code, text = _do_through_swarm(config, list(words), timeout)
    else:
        try:
            token = load_token(config.api)
        except OrcastraError as err:
            _fail(err)
        code, text = do_command(config.api.listen, token, list(words))
    click.echo(text, err=code != 0)
    sys.exit(code)


def _do_through_swarm(config: Config, words: list[str], timeout: float) -> tuple[int, str]:
    from orcastra.adapters.engine.connect import make_engine
    from orcastra.commands.model import Malformed, parse_words
    from orcastra.commands.swarm_queue import send_command

    cmd = parse_words(words)
    if isinstance(cmd, Malformed):
        return 2, cmd.message
    try:
        with make_engine(config) as engine:
            result = send_command(engine, cmd, timeout=timeout)
    except OrcastraError as err:
        return 1, f"could not send the command through the Swarm: {err}"
    text = f"{result.command}: {result.message}"
    return (0, text) if result.ok else (1, f"{text} (failed)")


@cli.command()
@_config_option
@click.option("--agent", is_flag=True, help="Ask the node agent (agent.listen) instead of the controller.")
@click.pass_context
def health(ctx: click.Context, agent: bool) -> None:
    """Ask the running Orcastra (its /healthz on api.listen) whether it is healthy: exit 0 if so, else 1.
    For a container's HEALTHCHECK or any probe. (The script answers a plain `orcastra health [--agent]
    [--config F]` itself, without loading the CLI: see orcastra/entry.py; this is the same check.)"""
    from orcastra.commands.api import check_health

    config, _ = _load(ctx)
    code, text = check_health(config.agent.listen if agent else config.api.listen)
    click.echo(text, err=code != 0)
    sys.exit(code)


@cli.command()
@_config_option
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, file: Path | None) -> None:
    """Check a configuration FILE (default: --config / ORCASTRA_CONFIG; FILE wins over both); report every
    problem at once."""
    from orcastra.config import load_config, resolve_config_path

    path = file if file is not None else resolve_config_path(ctx.obj["config_path"], os.environ)
    # As `run`: the default path may be missing (legacy files and the environment alone are a configuration).
    required = file is not None or ctx.obj["config_path"] is not None or bool(os.environ.get("ORCASTRA_CONFIG"))
    try:
        config = load_config(path, os.environ, required=required)
    except OrcastraError as err:
        _fail(err)
    where = path if path.exists() else "configuration (no main file; legacy files and environment)"
    click.echo(f"{where}: valid ({len(config.nodes)} nodes, {len(config.anchors)} anchors)")


def _register_plugins() -> None:
    """Add the command groups other installed packages declare under the ``orcastra.cli`` entry point
    group (``orcastra lab`` comes from the ``orcastra_lab`` package this way: the product never imports
    the lab). A plugin that fails to load is reported on stderr and skipped; the product's commands work."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="orcastra.cli"):
        try:
            command = ep.load()
        except Exception as e:  # a broken plugin must not take the product's own commands down
            click.echo(f"orcastra: plugin {ep.name!r} ({ep.value}) could not be loaded: {e}", err=True)
            continue
        if isinstance(command, click.Command):
            cli.add_command(command, ep.name)


_register_plugins()


def main() -> None:
    """Entry point of the ``orcastra`` script."""
    cli(prog_name="orcastra")
