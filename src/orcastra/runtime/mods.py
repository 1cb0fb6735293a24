"""The mod manager's refresh: the wanted mods and the cache directory planned (``plan_cache``, pure), then
carried out against the registries (``ModRegistry``) and the directory (``ModCache``): stale locks removed,
then the fetches, then the prunes and our own leftovers.

For each planned fetch: resolve the mod's layer digest on its registry for the node's platform; a cache file
whose sha256 is already that digest is a hit (nothing written); otherwise the blob is streamed into a temporary
file, verified, and renamed over the cache file under the mod's lock (a miss, its bytes counted). A registry
that fails leaves the cache file as it was and is reported; one mod's failure never stops the others. Then the
plan's prunes, stale locks and leftovers are removed.

``ModRefresher`` keeps what a refresh must remember (since when each cache file is unreferenced, the last
result) and serialises runs; the agent's thread (schedule, the ``refresh-mods`` command, a new reference seen)
calls ``run``. It imports no pydantic: it reads the validated ``mods:`` section as the plain values the agent
process is handed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from orcastra import __version__
from orcastra.adapters.mods_cache import ModCache
from orcastra.adapters.mods_registry import ModRegistry
from orcastra.adapters.registry_http import Credential, HttpOptions, RegistryHttp
from orcastra.errors import ModCacheLockedError, OrcastraError, cut
from orcastra.features.mods.manifest import NodePlatform
from orcastra.features.mods.plan import CachePlan, Fetch, ModPolicy, WantedMods, plan_cache

log = logging.getLogger("orcastra.agent.mods")
audit = logging.getLogger("orcastra.agent.audit")

MAX_RESULT_ITEMS = 100
MAX_PASSWORD_FILE_BYTES = 64 * 1024


class ModOutcome(msgspec.Struct, frozen=True):
    """What one refresh did with one mod: hit, fetched, failed, locked, pruned, lock-removed."""

    name: str  # its cache name (user.repo.tag)
    result: str
    reference: str = ""
    digest: str = ""
    bytes: int = 0
    error: str = ""


class RefreshResult(msgspec.Struct, frozen=True, kw_only=True):
    trigger: str
    full: bool
    started_at: float
    finished_at: float
    hits: int = 0
    fetched: int = 0
    failed: int = 0
    pruned: int = 0
    bytes_fetched: int = 0
    items: tuple[ModOutcome, ...] = ()
    problems: tuple[str, ...] = ()  # DOCKER_MODS items that are not mods, naming the container or service
    notes: tuple[str, ...] = ()
    error: str = ""  # the whole refresh failed (the cache directory unusable)

    @property
    def ok(self) -> bool:
        return not self.error and self.failed == 0


@dataclass(frozen=True)
class ModOptions:
    """The ``mods:`` section as the refresh uses it (built from the agent's plain JSON by ``mod_options``)."""

    cache_dir: Path
    policy: ModPolicy
    http: HttpOptions
    attempts: int = 3
    max_mod_bytes: int = 512 * 1024 * 1024
    password_files: Mapping[str, tuple[str, Path]] = field(default_factory=dict)  # registry -> (user, file)


def mod_options(mods: Mapping[str, Any]) -> ModOptions:
    """The validated ``mods:`` section (plain JSON values, as handed to the agent) -> the refresh's options."""
    policy = ModPolicy(
        prune=mods["prune"],
        prune_grace_seconds=mods["prune_grace_seconds"],
        stale_lock_seconds=mods["stale_lock_seconds"],
    )
    http = HttpOptions(
        insecure=frozenset(mods["insecure_registries"]),
        connect_timeout_seconds=mods["connect_timeout_seconds"],
        read_timeout_seconds=mods["read_timeout_seconds"],
        user_agent=f"orcastra/{__version__} (mod manager)",
    )
    files = {host: (c["username"], Path(c["password_file"])) for host, c in mods["registries"].items()}
    return ModOptions(Path(mods["cache_dir"]), policy, http, mods["attempts"], mods["max_mod_bytes"], files)


def read_credentials(files: Mapping[str, tuple[str, Path]]) -> tuple[dict[str, Credential], list[str]]:
    """Each registry's password (the first line of its file, read now: a rotated secret is picked up), and a
    problem for each file that cannot be read (that registry is then tried anonymously)."""
    found: dict[str, Credential] = {}
    problems: list[str] = []
    for registry, (user, path) in sorted(files.items()):
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_PASSWORD_FILE_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{registry}: cannot read its password file {path}: {getattr(e, 'strerror', None) or e}")
            continue
        lines = text.splitlines()
        password = lines[0].strip() if lines else ""
        if not password:
            problems.append(f"{registry}: its password file {path} is empty")
            continue
        found[registry] = Credential(user, password)
    return found, problems


class ModRefresher:
    """Runs refreshes one at a time and remembers between them; ``on_result`` gets each result (metrics)."""

    def __init__(
        self,
        options: ModOptions,
        platform: NodePlatform,
        *,
        wait: Callable[[float], bool] = lambda seconds: False,
        on_result: Callable[[RefreshResult], None] = lambda result: None,
    ) -> None:
        self.options, self.platform, self.wait, self.on_result = options, platform, wait, on_result
        self.cache = ModCache(options.cache_dir)
        self.http = RegistryHttp(options.http)  # kept: its tokens and TLS contexts serve the next refreshes
        self._run_lock = threading.Lock()
        self.unreferenced_since: dict[str, float] = {}
        self.last: RefreshResult | None = None

    def _registry(self) -> tuple[ModRegistry, list[str]]:
        credentials, problems = read_credentials(self.options.password_files)
        self.http.set_credentials(credentials)
        registry = ModRegistry(
            self.http, attempts=self.options.attempts, max_blob_bytes=self.options.max_mod_bytes, wait=self.wait
        )
        return registry, problems

    def _fetch(self, registry: ModRegistry, fetch: Fetch) -> ModOutcome:
        ref = fetch.reference
        name = ref.cache_name
        try:
            mod = registry.resolve(ref, self.platform)
            if self.cache.digest_of(name) == mod.layer_digest:
                return ModOutcome(name, "hit", ref.text, mod.layer_digest)
            before = registry.bytes_fetched
            self.cache.write(name, lambda out: registry.fetch_blob(mod, out))
        except ModCacheLockedError as e:
            return ModOutcome(name, "locked", ref.text, error=cut(str(e), 200))
        except OrcastraError as e:
            log.warning("mods: %s: %s (the cached file, if any, is kept)", ref.text, e)
            return ModOutcome(name, "failed", ref.text, error=cut(str(e), 300))
        fetched = registry.bytes_fetched - before
        audit.info("mods: cached %s at %s (%d bytes): %s", ref.text, mod.layer_digest, fetched, fetch.reason)
        return ModOutcome(name, "fetched", ref.text, mod.layer_digest, fetched)

    def _unlock_stale(self, plan: CachePlan, now: float) -> list[ModOutcome]:
        """Stale locks first: a mod planned for fetching behind one would otherwise find it still there."""
        done: list[ModOutcome] = []
        for stale in plan.remove_locks:
            try:
                if self.cache.remove_stale_lock(stale.name, self.options.policy.stale_lock_seconds, now):
                    audit.info("mods: removed the lock of %s: %s", stale.name, stale.reason)
                    done.append(ModOutcome(stale.name, "lock-removed"))
            except OrcastraError as e:
                done.append(ModOutcome(stale.name, "failed", error=cut(str(e), 300)))
        return done

    def _tidy(self, plan: CachePlan) -> list[ModOutcome]:
        done: list[ModOutcome] = []
        for prune in plan.prune:
            try:
                if self.cache.prune(prune.name):
                    audit.info("mods: pruned %s: %s", prune.name, prune.reason)
                    done.append(ModOutcome(prune.name, "pruned"))
                    self.unreferenced_since.pop(prune.name, None)
            except OrcastraError as e:
                done.append(ModOutcome(prune.name, "failed", error=cut(str(e), 300)))
        for temp in plan.remove_temps:
            try:
                self.cache.remove_temp(temp)
            except OrcastraError as e:
                log.warning("mods: %s", e)
        return done

    def _plan(self, wanted: WantedMods, now: float, full: bool) -> CachePlan:
        self.cache.ensure()
        listing = self.cache.listing(now)
        plan = plan_cache(wanted, listing, self.options.policy, self.unreferenced_since, now=now, full=full)
        self.unreferenced_since = dict(plan.unreferenced_since)
        return plan

    def run(self, wanted: WantedMods, trigger: str, *, full: bool = True) -> RefreshResult:
        """One refresh (``full``: every wanted mod checked against its registry; else only missing ones); never
        raises: a failure is in the result."""
        with self._run_lock:
            started = time.time()
            items: list[ModOutcome] = []
            notes: list[str] = []
            error = ""
            try:
                plan = self._plan(wanted, started, full)
                notes.extend(plan.notes)
                registry, problems = self._registry()
                notes.extend(problems)
                items.extend(self._unlock_stale(plan, time.time()))
                items.extend(self._fetch(registry, fetch) for fetch in plan.fetch)
                items.extend(self._tidy(plan))
            except OrcastraError as e:  # the cache directory itself: nothing could be done
                log.warning("mods: refresh (%s): %s", trigger, e)
                error = cut(str(e), 300)
            result = _result(trigger, full, started, items, wanted=wanted, notes=notes, error=error)
            self.last = result
        log.info(
            "mods: refresh (%s): %d hit, %d fetched (%d bytes), %d failed, %d pruned",
            trigger,
            result.hits,
            result.fetched,
            result.bytes_fetched,
            result.failed,
            result.pruned,
        )
        self.on_result(result)
        return result


def _result(  # noqa: PLR0913 - the parts of one result
    trigger: str,
    full: bool,
    started: float,
    items: list[ModOutcome],
    *,
    wanted: WantedMods,
    notes: list[str],
    error: str,
) -> RefreshResult:
    def count(kind: str) -> int:
        return sum(1 for i in items if i.result == kind)

    return RefreshResult(
        trigger=trigger,
        full=full,
        started_at=started,
        finished_at=time.time(),
        hits=count("hit"),
        fetched=count("fetched"),
        failed=count("failed"),
        pruned=count("pruned"),
        bytes_fetched=sum(i.bytes for i in items),
        items=tuple(items[:MAX_RESULT_ITEMS]),
        problems=tuple(p[:300] for p in wanted.problems[:50]),
        notes=tuple(n[:300] for n in notes[:50]),
        error=error,
    )


class ModMetrics:
    """The mod manager's figures in the agent's registry: hits and misses by mod (its cache name), failures,
    bytes fetched, and the last refresh (when, and whether every mod was served)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter(
            "orcastra_agent_mods_cache_hits", "Refresh checks that found the mod current.", ["mod"], registry=registry
        )
        self.misses = Counter(
            "orcastra_agent_mods_cache_misses",
            "Mods fetched because the cache lacked the current digest.",
            ["mod"],
            registry=registry,
        )
        self.failures = Counter(
            "orcastra_agent_mods_failures",
            "Mods a refresh could not check or fetch (the cache kept).",
            ["mod"],
            registry=registry,
        )
        self.bytes = Counter("orcastra_agent_mods_fetched_bytes", "Bytes of mod layers fetched.", registry=registry)
        self.last = Gauge(
            "orcastra_agent_mods_last_refresh_timestamp_seconds", "When the last mod refresh ended.", registry=registry
        )
        self.last_ok = Gauge(
            "orcastra_agent_mods_last_refresh_success",
            "1 when the last refresh served every mod, else 0.",
            registry=registry,
        )

    def record(self, result: RefreshResult) -> None:
        for item in result.items:
            counter = {"hit": self.hits, "fetched": self.misses, "failed": self.failures}.get(item.result)
            if counter is not None:
                counter.labels(mod=item.name).inc()
        self.bytes.inc(result.bytes_fetched)
        self.last.set(result.finished_at)
        self.last_ok.set(1.0 if result.ok else 0.0)
