"""The mod manager in the agent: when the node's mod cache is refreshed, and from which references.

``ModManager`` (a thread; built only when ``mods.enabled``, so the agent imports none of this otherwise):
- at start, a quick refresh (only the mods missing from the cache are fetched): a node that just joined, or a
  cache directory just mounted, gets its files before its containers ask for them;
- every ``refresh_interval_seconds`` a full one (each mod's digest checked against its registry), at a phase of
  the interval of its own (from the node's ID: ``jitter_seconds`` spread the nodes' registry traffic);
- when a new reference appears: a container created on the node with ``DOCKER_MODS`` (the event stream hands
  its ID here), or a service spec in the controllers' facts naming a mod the last refresh did not know: a quick
  refresh;
- when asked (``POST /v1/mods/refresh``, the ``refresh_mods`` command): a full one, its result in the answer.
The wanted mods are the ``DOCKER_MODS`` of every container on the node (read once per container: its
environment never changes) and of every service spec (from the facts; unknown while the agent has no recent
facts, and then nothing is pruned).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from orcastra.adapters.local_engine import LocalEngine
from orcastra.adapters.node_engine import NodeEngine
from orcastra.errors import EngineNotFoundError, OrcastraError
from orcastra.features.mods.manifest import NodePlatform, node_platform, parse_platform
from orcastra.features.mods.plan import WantedMods, next_refresh_at, wanted_mods
from orcastra.runtime.mods import ModRefresher, RefreshResult, mod_options

log = logging.getLogger("orcastra.agent.mods")

# A burst of new containers (a stack deploy) is one quick refresh, not one each.
SETTLE_SECONDS = 2.0


class ModManager(threading.Thread):
    """Refreshes the node's mod cache (see the module docstring); ``refresh_now`` serves the command."""

    def __init__(  # noqa: PLR0913 - the Engine (twice: identity and lists), the section, the facts, the stop
        self,
        engine: LocalEngine,
        node: NodeEngine,
        mods: Mapping[str, Any],
        service_mods: Callable[[float], dict[str, str] | None],
        stop: threading.Event,
        *,
        on_result: Callable[[RefreshResult], None] = lambda result: None,
    ) -> None:
        super().__init__(name="orcastra-agent-mods", daemon=True)
        self.engine, self.node, self.settings, self.service_mods, self.stop = engine, node, mods, service_mods, stop
        self.refresher = ModRefresher(mod_options(mods), NodePlatform(), wait=stop.wait, on_result=on_result)
        self._env: dict[str, tuple[str, str]] = {}  # container ID -> (name, DOCKER_MODS)
        self.known: frozenset[str] = frozenset()  # the cache names the last refresh wanted
        self._asked: queue.Queue[str] = queue.Queue()
        self._node_id = ""

    # --- what the node wants ---

    def _containers(self) -> list[tuple[str, str]]:
        live = {row.Id: row.name for row in self.node.containers()}
        for cid in [c for c in self._env if c not in live]:
            del self._env[cid]
        for cid, name in live.items():
            if cid not in self._env:
                try:
                    self._env[cid] = (name, self.node.inspect(cid).docker_mods)
                except EngineNotFoundError:
                    continue
        return [pair for pair in self._env.values() if pair[1]]

    def wanted(self, now: float) -> WantedMods:
        services = self.service_mods(now)
        return wanted_mods(self._containers(), sorted(services.items()) if services is not None else None)

    def container_seen(self, container_id: str) -> None:
        """A container was created: if it names a mod not cached yet, a quick refresh soon (events thread)."""
        self._asked.put(f"container:{container_id}")

    # --- refreshes ---

    def _platform(self) -> None:
        configured = self.settings.get("platform")
        if configured:
            self.refresher.platform = parse_platform(configured)
            return
        try:
            identity = self.engine.identity()
        except OrcastraError as e:
            log.warning("mods: the Engine does not say its platform (%s): assuming %s", e, self.refresher.platform)
            return
        self._node_id = identity.node_id
        if identity.architecture:
            self.refresher.platform = node_platform(identity.architecture, identity.os_type or "linux")

    def refresh(self, trigger: str, full: bool) -> RefreshResult:
        try:
            wanted = self.wanted(time.time())
        except OrcastraError as e:  # the Engine did not list the containers: nothing to plan from
            log.warning("mods: refresh (%s): cannot list the node's containers: %s", trigger, e)
            now = time.time()
            return RefreshResult(trigger=trigger, full=full, started_at=now, finished_at=now, error=str(e)[:300])
        self.known = frozenset(wanted.mods)
        return self.refresher.run(wanted, trigger, full=full)

    def refresh_now(self) -> RefreshResult:
        return self.refresh("command", full=True)

    def _new_reference(self, now: float) -> bool:
        """Whether the services' or the new containers' mods name one the last refresh did not want."""
        try:
            return not frozenset(self.wanted(now).mods) <= self.known
        except OrcastraError:
            return False

    def run(self) -> None:
        interval = float(self.settings["refresh_interval_seconds"])
        jitter = float(self.settings["jitter_seconds"])
        self._platform()
        self.refresh("start", full=False)
        next_full = next_refresh_at(time.time(), interval, jitter, self._node_id or self.engine.host)
        while not self.stop.is_set():
            try:
                timeout = max(0.5, min(next_full - time.time(), 30.0))
                try:
                    self._asked.get(timeout=timeout)
                    self.stop.wait(SETTLE_SECONDS)
                    while not self._asked.empty():
                        self._asked.get_nowait()
                except queue.Empty:
                    pass
                now = time.time()
                if now >= next_full:
                    self.refresh("schedule", full=True)
                    next_full = next_refresh_at(time.time(), interval, jitter, self._node_id or self.engine.host)
                elif self._new_reference(now):
                    self.refresh("new-reference", full=False)
            except Exception:  # a bug must not end the mod manager: logged, and the loop goes on
                log.exception("mods: unexpected error")
                self.stop.wait(5.0)
