"""What operator commands do: ``CommandHandlers``, the ``CommandContext`` behind the command file, the HTTP API
and ``orcastra do``.

Handlers see the runtime only through the narrow ``Operations`` protocol (which the loop implements). Every
command that changes something runs on the loop's thread (``ops.call``), so a command never overlaps a cycle;
a reboot and a bootstrap cycle do their waiting on the command's thread and hand each write to the loop.
Commands act only on the leader: a follower refuses them, so two instances never both act (a follower's API
forwards its commands to the leader through the Swarm instead: ``runtime.command_queue``). ``pause`` /
``resume`` are kept in a label of the Swarm itself (``orcastra.paused``), so they survive a restart and are
shared by every instance. While paused, the commands that run the automatic machinery (sync, relabel,
rebalance, reboot) are refused with a clear error; the single explicit changes (restart, drain, activate,
bootstrap) still run. ``remove_all_labels`` pauses Orcastra itself before it removes the labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar

from orcastra.config import Config
from orcastra.domain.actions import Action, SetNodeAvailability, UpdateNodeLabels, UpdateService
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.errors import EngineNotFoundError, OrcastraError, PermanentError
from orcastra.features.colocation.plan import plan_colocation
from orcastra.features.label_removal.plan import plan_remove_all_labels
from orcastra.runtime.controllers import colocation_settings
from orcastra.runtime.executor import Outcome
from orcastra.runtime.reconcile import CycleResult

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_LISTED_ACTIONS = 10  # a sync result names at most this many actions (the audit log has them all)
# A label update meets a conflict when the node changed since it was read; read again and retry this often.
REMOVE_LABELS_ATTEMPTS = 3


class CommandRefused(PermanentError):
    """The command cannot run here and now (not the leader, paused, a feature not set up)."""


class Operations(Protocol):
    """The runtime as command handlers see it (implemented by ``orcastra.runtime.loop.Loop``).

    ``call`` runs a function on the loop's thread and waits for it; the methods marked "loop" may only be used
    inside such a function, the others from the command's own thread."""

    @property
    def config(self) -> Config: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def paused(self) -> bool: ...

    def call(self, fn: Callable[[], T], what: str) -> T: ...

    def read_swarm(self) -> Snapshot:
        """loop: a fresh snapshot."""
        ...

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[Outcome]:
        """loop: the executor."""
        ...

    def run_cycle(self) -> CycleResult:
        """loop: one reconcile cycle."""
        ...

    def set_paused(self, paused: bool) -> None:
        """loop: write the pause flag."""
        ...

    def rebalance_now(self) -> tuple[str, list[Outcome]]:
        """loop: one rebalancing cycle now; why nothing moved, or the outcomes."""
        ...

    def bootstrap(self) -> str:
        """own thread: one bootstrap/heal cycle."""
        ...

    def reboot(self, node: str) -> str:
        """own thread: reboot one node."""
        ...


def describe_outcomes(outcomes: Sequence[Outcome]) -> str:
    """``node/node3 labels zone=a, ...``; raises when an action failed (its target and why)."""
    failed = [o for o in outcomes if o.failed]
    if failed:
        raise OrcastraError("; ".join(f"{o.action.target}: {o.result} {o.detail}" for o in failed))
    done = ", ".join(f"{o.action.target} {o.action.describe()}" for o in outcomes)
    return ("would: " if any(o.result == "dry-run" for o in outcomes) else "") + done


class CommandHandlers:
    """The runtime's implementation of ``orcastra.commands.CommandContext``."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    # --- checks (on the loop, so they see the state the command then acts on) ---------------------------

    def _leader(self) -> None:
        if not self.ops.is_leader:
            raise CommandRefused("this instance is a follower: send commands to the leader (see /healthz)")

    def _not_paused(self) -> None:
        if self.ops.paused:
            raise CommandRefused("Orcastra is paused: resume first")

    def _service(self, snapshot: Snapshot, name: str) -> Service:
        config = self.ops.config
        for candidate in (name, config.service_name(name)):
            svc = snapshot.service(candidate)
            if svc is not None:
                return svc
        known = ", ".join(sorted(s.name for s in snapshot.services)[:20])
        raise EngineNotFoundError(f"no service {name!r} in the Swarm (services: {known})")

    # --- commands ---------------------------------------------------------------------------------------

    def sync(self) -> str:
        return self.ops.call(self._sync, "sync")

    def _sync(self) -> str:
        self._leader()
        # A cycle while paused only plans: answering "reconciled" would claim what did not happen.
        self._not_paused()
        outcomes = self.ops.run_cycle().outcomes
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
        def restart() -> str:
            self._leader()
            snapshot = self.ops.read_swarm()
            svc = self._service(snapshot, name)
            action = UpdateService(
                service_id=svc.id,
                service_name=svc.name,
                service_version=svc.version,
                force=True,
                reason="operator command: restart",
                controller="command",
            )
            return describe_outcomes(self.ops.apply([action], snapshot))

        return self.ops.call(restart, f"restart {name}")

    def set_availability(self, node: str, availability: Literal["active", "drain"]) -> str:
        def set_it() -> str:
            self._leader()
            snapshot = self.ops.read_swarm()
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
            return describe_outcomes(self.ops.apply([action], snapshot))

        return self.ops.call(set_it, f"{availability} {node}")

    def rebalance(self) -> str:
        def rebalance() -> str:
            self._leader()
            self._not_paused()
            why_not, outcomes = self.ops.rebalance_now()
            return why_not or describe_outcomes(outcomes)

        return self.ops.call(rebalance, "rebalance")

    def pause(self) -> str:
        def pause() -> str:
            self._leader()
            self.ops.set_paused(True)
            return "paused: no automatic actions until resume (kept across restarts)"

        return self.ops.call(pause, "pause")

    def resume(self) -> str:
        def resume() -> str:
            self._leader()
            self.ops.set_paused(False)
            return "resumed"

        return self.ops.call(resume, "resume")

    def reboot_node(self, node: str) -> str:
        """Drain, wait, run the node's reboot command, wait Ready, activate; one node at a time (Swarm lock).
        Waits for minutes on the command's thread; each write is made by the loop."""

        def check() -> None:
            self._leader()
            self._not_paused()

        self.ops.call(check, f"reboot {node}")
        return self.ops.reboot(node)

    def update_dependents(self) -> str:
        """The earlier Orcastra's ``update_dependents``: a forced update of every dependent of an anchor group
        that is not colocated (Swarm places them again, beside their anchor)."""

        def update() -> str:
            self._leader()
            self._not_paused()
            snapshot = self.ops.read_swarm()
            settings = colocation_settings(self.ops.config)
            groups = plan_colocation(snapshot, settings, snapshot.taken_at).groups
            actions: list[Action] = []
            for group in groups:
                if group.colocated:
                    continue
                for dep in group.dependents:
                    svc = snapshot.service(dep.name)
                    if svc is not None and not dep.colocated:
                        actions.append(
                            UpdateService(
                                service_id=svc.id,
                                service_name=svc.name,
                                service_version=svc.version,
                                force=True,
                                reason=f"operator command: update_dependents ({group.anchor} not colocated)",
                                controller="command",
                            )
                        )
            if not actions:
                return "every anchor group is colocated: nothing to update"
            return describe_outcomes(self.ops.apply(actions, snapshot))

        return self.ops.call(update, "update_dependents")

    def remove_all_labels(self, force: bool = False) -> str:
        """The earlier Orcastra's clean-up before an uninstall: remove every node label Orcastra owns (see
        ``features.label_removal``). Refused while an anchor runs (its label places its dependents) unless
        ``force``. Pauses Orcastra first: otherwise the next cycle would put the labels back."""

        def remove() -> str:
            self._leader()
            done: list[Outcome] = []
            for _ in range(REMOVE_LABELS_ATTEMPTS):
                snapshot = self.ops.read_swarm()
                plan = plan_remove_all_labels(snapshot)
                if plan.running_anchors and not force:
                    raise CommandRefused(
                        f"anchors run ({', '.join(plan.running_anchors)}): their labels place their dependents,"
                        " which would lose every node; stop them first, or give remove_all_labels --force"
                    )
                paused = "already paused" if self.ops.paused else "paused first"
                self.ops.set_paused(True)
                if not plan.actions and not done:
                    return f"{paused}; no node carries a label Orcastra owns"
                outcomes = self.ops.apply(plan.actions, snapshot)
                done += [o for o in outcomes if o.result != "conflict"]
                if any(o.result == "conflict" for o in outcomes):
                    continue  # a node changed meanwhile: read it again (what was removed is not planned again)
                labels = sum(len(o.action.remove_labels) for o in done if isinstance(o.action, UpdateNodeLabels))
                return (
                    f"{paused} (resume would put the labels back); removed {labels} label(s) from {len(done)}"
                    f" node(s): {describe_outcomes(done)}"
                )
            raise OrcastraError(f"nodes kept changing: tried {REMOVE_LABELS_ATTEMPTS} times; give it again")

        return self.ops.call(remove, "remove_all_labels --force" if force else "remove_all_labels")

    def bootstrap(self) -> str:
        self.ops.call(self._leader, "bootstrap")
        # Without inventory endpoints there is nothing to observe or join; the cycle would answer "nothing
        # to do", which reads as "all is well" rather than "not set up".
        if not any(n.endpoint for n in self.ops.config.nodes.values()):
            raise CommandRefused(
                "no inventory: no node in the configuration has an endpoint (nodes.<host>.endpoint); nothing was done"
            )
        # The result is shown as "bootstrap: <message>"; the cycle's own summary starts with that too.
        return self.ops.bootstrap().removeprefix("bootstrap: ")

    def refresh_mods(self) -> str:
        """Every agent refreshes its node's mod cache now (``POST /v1/mods/refresh``, with the API token), at
        most 8 at a time; the message has each node's figures. Fails naming the nodes whose refresh failed."""
        from orcastra.runtime.agent_calls import refresh_mods_everywhere

        self._leader()
        snapshot = self.ops.call(self.ops.read_swarm, "refresh_mods")
        return refresh_mods_everywhere(self.ops.config, snapshot)
