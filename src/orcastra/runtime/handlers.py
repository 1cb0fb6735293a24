"""What operator commands do to the running daemon: the ``CommandContext`` behind the command file, the
HTTP API and ``orcastra do``.

Every change still goes through the daemon's one executor (dry-run honoured, audit line per action, version
checks). Commands act only on the leader: a follower refuses them, so two instances never both act.
``pause`` / ``resume`` are kept in a label of the Swarm itself (``orcastra.paused``), so they survive a restart
and are shared by every instance. While paused, the commands that run the automatic machinery (sync, relabel,
rebalance, reboot) are refused with a clear error; the single explicit changes (restart, drain, activate,
bootstrap) still run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from orcastra.domain.actions import Action, SetNodeAvailability, UpdateService
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.errors import EngineNotFoundError, OrcastraError, PermanentError

if TYPE_CHECKING:
    from orcastra.runtime.daemon import Daemon

log = logging.getLogger(__name__)

PAUSED_LABEL = "orcastra.paused"
MAX_LISTED_ACTIONS = 10  # a sync result names at most this many actions (the audit log has them all)


class CommandRefused(PermanentError):
    """The command cannot run here and now (not the leader, a feature not available)."""


class DaemonCommands:
    """The daemon's implementation of ``orcastra.commands.CommandContext``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    # --- helpers --------------------------------------------------------------------------------------

    def _leader(self) -> None:
        if not self.daemon.is_leader:
            raise CommandRefused("this instance is a follower: send commands to the leader (see /healthz)")

    def _snapshot(self) -> Snapshot:
        return self.daemon.engine.snapshot()

    def apply_and_describe(self, actions: list[Action], snapshot: Snapshot) -> str:
        return self._apply(actions, snapshot)

    def _apply(self, actions: list[Action], snapshot: Snapshot) -> str:
        outcomes = self.daemon.executor.apply(actions, snapshot)
        failed = [o for o in outcomes if o.result in ("error", "conflict")]
        if failed:
            raise OrcastraError("; ".join(f"{o.action.target}: {o.result} {o.detail}" for o in failed))
        done = ", ".join(f"{o.action.target} {o.action.describe()}" for o in outcomes)
        return ("would: " if self.daemon.executor.dry_run else "") + done

    def _service(self, snapshot: Snapshot, name: str) -> Service:
        config = self.daemon.config
        for candidate in (name, config.service_name(name)):
            svc = snapshot.service(candidate)
            if svc is not None:
                return svc
        known = ", ".join(sorted(s.name for s in snapshot.services)[:20])
        raise EngineNotFoundError(f"no service {name!r} in the Swarm (services: {known})")

    # --- commands ---------------------------------------------------------------------------------------

    def _not_paused(self) -> None:
        if self.daemon.paused:
            raise CommandRefused("Orcastra is paused: resume first")

    def sync(self) -> str:
        self._leader()
        # A cycle while paused only plans: answering "reconciled" would claim what did not happen.
        self._not_paused()
        self.daemon.run_once()
        result = self.daemon.last_result
        outcomes = result.outcomes if result is not None else ()
        done = [f"{o.action.target} {o.action.describe()} ({o.result})" for o in outcomes]
        shown = "; ".join(done[:MAX_LISTED_ACTIONS]) + ("; ..." if len(done) > MAX_LISTED_ACTIONS else "")
        message = f"reconciled: {len(done)} action(s)" + (f": {shown}" if done else "")
        # A version conflict is routine (the Swarm changed meanwhile; the next cycle re-plans); an error is not.
        if any(o.result == "error" for o in outcomes):
            raise OrcastraError(message + "; some failed (see the audit log)")
        return message

    def relabel(self) -> str:
        # Labels are recomputed from what really runs every cycle; a cycle now is exactly a relabel.
        return self.sync()

    def restart_service(self, name: str) -> str:
        self._leader()
        snapshot = self._snapshot()
        svc = self._service(snapshot, name)
        action = UpdateService(
            service_id=svc.id,
            service_name=svc.name,
            service_version=svc.version,
            force=True,
            reason="operator command: restart",
            controller="command",
        )
        return self._apply([action], snapshot)

    def set_availability(self, node: str, availability: Literal["active", "drain"]) -> str:
        self._leader()
        snapshot = self._snapshot()
        target = snapshot.node_by_hostname(node) or snapshot.node(node)
        if target is None:
            known = ", ".join(sorted(n.hostname for n in snapshot.nodes))
            raise EngineNotFoundError(f"no node {node!r} in the Swarm (nodes: {known})")
        action = SetNodeAvailability(
            node_id=target.id,
            hostname=target.hostname,
            node_version=target.version,
            availability=availability,
            reason=f"operator command: {'drain' if availability == 'drain' else 'activate'}",
            controller="command",
        )
        return self._apply([action], snapshot)

    def rebalance(self) -> str:
        self._leader()
        self._not_paused()
        return self.daemon.rebalance_now()

    def pause(self) -> str:
        self._leader()
        self.daemon.set_paused(True)
        return "paused: no automatic actions until resume (kept across restarts)"

    def resume(self) -> str:
        self._leader()
        self.daemon.set_paused(False)
        self.daemon.trigger.fire("resumed")
        return "resumed"

    def reboot_node(self, node: str) -> str:
        """Drain, wait, run the node's reboot command, wait Ready, activate; one node at a time (Swarm lock).
        Blocks for minutes: it runs on the command thread, with its own Engine connection."""
        from orcastra.adapters.engine.connect import make_engine
        from orcastra.runtime.reboot import reboot_node

        self._leader()
        self._not_paused()
        with make_engine(self.daemon.config, self.daemon.env) as engine:
            return reboot_node(engine, self.daemon.executor, self.daemon.config, node)

    def bootstrap(self) -> str:
        self._leader()
        # Without inventory endpoints there is nothing to observe or join; the cycle would answer "nothing
        # to do", which reads as "all is well" rather than "not set up".
        if not any(n.endpoint for n in self.daemon.config.nodes.values()):
            raise CommandRefused(
                "no inventory: no node in the configuration has an endpoint (nodes.<host>.endpoint); nothing was done"
            )
        # The result is shown as "bootstrap: <message>"; the cycle's own summary starts with that too.
        return self.daemon.run_bootstrap_cycle().removeprefix("bootstrap: ")
