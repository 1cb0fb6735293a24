"""What a node's mod cache should hold, and what one refresh does about it: pure functions, no I/O, no clock.

- ``wanted_mods``: the mods named by the ``DOCKER_MODS`` of the node's containers and of every Swarm service
  (a service not running here yet may start here next), one per cache file, with who names each one and a
  problem for every item that is not a mod reference;
- ``plan_cache``: from the wanted mods and the cache directory as listed, the fetches (every wanted mod on a
  full refresh; only those with no file on a quick one, when a new reference appeared), the prunes (a file
  nothing names for ``prune_grace_seconds``; never one with a lock: a consumer is downloading or applying it),
  the stale locks and our own leftover temporary files to remove;
- ``next_refresh_at``: the refresh schedule, each node at its own phase of the interval.

A prune needs the whole picture: while the services' mods are unknown (no Swarm facts from a controller) or
the containers could not be listed, nothing is pruned and the plan says so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orcastra.features.mods.reference import ModReference, parse_mods

MAX_WANTED_MODS = 256


@dataclass(frozen=True)
class WantedMods:
    """The mods a node's cache should hold, keyed by cache name (``user.repo.tag``)."""

    mods: Mapping[str, ModReference]
    users: Mapping[str, tuple[str, ...]]  # cache name -> "container x", "service y"
    problems: tuple[str, ...] = ()
    complete: bool = True  # both the containers and the services' mods were known


def wanted_mods(containers: Iterable[tuple[str, str]], services: Iterable[tuple[str, str]] | None) -> WantedMods:
    """``(name, DOCKER_MODS value)`` of the node's containers and of the Swarm's services (None: unknown)."""
    sources = sorted((f"container {n}", v) for n, v in containers if v)
    sources += sorted((f"service {n}", v) for n, v in services or () if v)
    mods: dict[str, ModReference] = {}
    users: dict[str, list[str]] = {}
    problems: list[str] = []
    for source, value in sources:
        parsed = parse_mods(value, source)
        problems.extend(parsed.problems)
        for ref in parsed.references:
            name = ref.cache_name
            known = mods.get(name)
            if known is None and len(mods) >= MAX_WANTED_MODS:
                problems.append(f"{source}: {ref.text}: more than {MAX_WANTED_MODS} mods on this node; not cached")
                continue
            if known is not None and (known.registry, known.repository) != (ref.registry, ref.repository):
                problems.append(
                    f"{source}: {ref.text} and {known.text} share the cache file {ref.cache_file} "
                    f"(LinuxServer's naming leaves the registry out); {known.text} is cached"
                )
            mods.setdefault(name, ref)
            users.setdefault(name, []).append(source)
    return WantedMods(
        mods=mods,
        users={k: tuple(dict.fromkeys(v)) for k, v in users.items()},
        problems=tuple(problems),
        complete=services is not None,
    )


@dataclass(frozen=True)
class CacheEntry:
    """A ``<name>.tar.xz`` in the cache directory, and its lock when there is one."""

    name: str
    size: int
    modified_at: float
    lock_age_seconds: float | None = None  # None: no ``<name>.lock``


@dataclass(frozen=True)
class CacheListing:
    entries: Mapping[str, CacheEntry]
    locks: Mapping[str, float] = field(default_factory=dict)  # every ``<name>.lock`` -> its age in seconds
    temp_files: Mapping[str, float] = field(default_factory=dict)  # our own temporary files -> age


@dataclass(frozen=True)
class ModPolicy:
    prune: bool = True
    prune_grace_seconds: float = 86400.0
    # A lock older than this is left over by a consumer that died mid-download (the consumer itself waits at
    # most 75 s for one, then skips the mod): it is removed.
    stale_lock_seconds: float = 3600.0
    temp_max_age_seconds: float = 3600.0


@dataclass(frozen=True)
class Fetch:
    reference: ModReference
    reason: str


@dataclass(frozen=True)
class Prune:
    name: str
    reason: str


@dataclass(frozen=True)
class CachePlan:
    fetch: tuple[Fetch, ...] = ()
    prune: tuple[Prune, ...] = ()
    remove_locks: tuple[Prune, ...] = ()  # stale locks, by cache name
    remove_temps: tuple[str, ...] = ()  # file names of our own leftovers
    notes: tuple[str, ...] = ()
    # cache name -> since when nothing names it (the memory the next plan is given: level-based, rebuilt as
    # the grace again after a restart, so a restart delays a prune, never hastens one).
    unreferenced_since: Mapping[str, float] = field(default_factory=dict)


def _locked(listing: CacheListing, name: str, policy: ModPolicy) -> bool:
    age = listing.locks.get(name)
    return age is not None and age < policy.stale_lock_seconds


def _fetches(wanted: WantedMods, listing: CacheListing, policy: ModPolicy, full: bool) -> list[Fetch]:
    out: list[Fetch] = []
    for name, ref in sorted(wanted.mods.items()):
        if _locked(listing, name, policy):
            continue  # a consumer is writing it; the next refresh looks again
        if name not in listing.entries:
            out.append(Fetch(ref, f"named by {', '.join(wanted.users.get(name, ()))[:200]}; not in the cache"))
        elif full:
            out.append(Fetch(ref, "refresh: the tag may point to a new digest"))
    return out


def _prunes(
    wanted: WantedMods, listing: CacheListing, policy: ModPolicy, since: Mapping[str, float], now: float
) -> tuple[list[Prune], dict[str, float]]:
    unreferenced: dict[str, float] = {}
    prunes: list[Prune] = []
    for name in sorted(listing.entries):
        if name in wanted.mods:
            continue
        first = since.get(name, now)
        unreferenced[name] = first
        if not policy.prune or now - first < policy.prune_grace_seconds:
            continue
        if _locked(listing, name, policy):
            continue  # in use: a consumer holds its lock
        prunes.append(Prune(name, f"named by no container or service for {now - first:.0f} s"))
    return prunes, unreferenced


def plan_cache(  # noqa: PLR0913 - the wanted mods, the cache, the policy, the memory, the clock, the kind
    wanted: WantedMods,
    listing: CacheListing,
    policy: ModPolicy,
    unreferenced_since: Mapping[str, float],
    *,
    now: float,
    full: bool,
) -> CachePlan:
    """One refresh: ``full`` checks every wanted mod against its registry; otherwise only missing ones."""
    notes: list[str] = []
    fetch = _fetches(wanted, listing, policy, full)
    for name in sorted(set(wanted.mods) & set(listing.locks)):
        if _locked(listing, name, policy):
            notes.append(f"{name}: locked by a consumer ({listing.locks[name]:.0f} s ago); left alone this time")
    if wanted.complete:
        prune, unreferenced = _prunes(wanted, listing, policy, unreferenced_since, now)
    else:
        prune, unreferenced = [], dict(unreferenced_since)
        notes.append("the Swarm services' mods are unknown (no facts from a controller yet): nothing is pruned")
    stale = tuple(
        Prune(name, f"stale lock ({age:.0f} s old): its writer is gone")
        for name, age in sorted(listing.locks.items())
        if age >= policy.stale_lock_seconds
    )
    temps = tuple(sorted(n for n, age in listing.temp_files.items() if age >= policy.temp_max_age_seconds))
    return CachePlan(
        fetch=tuple(fetch),
        prune=tuple(prune),
        remove_locks=stale,
        remove_temps=temps,
        notes=tuple(notes),
        unreferenced_since=unreferenced,
    )


def node_offset(seed: str, jitter_seconds: float) -> float:
    """A node's fixed place in ``[0, jitter_seconds)``, from its node ID: nodes spread over the jitter, and each
    keeps its place across restarts."""
    if jitter_seconds <= 0:
        return 0.0
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64
    return fraction * jitter_seconds


def next_refresh_at(now: float, interval_seconds: float, jitter_seconds: float, seed: str) -> float:
    """The next full refresh after ``now``: on a grid of ``interval_seconds`` (epoch-aligned) moved by the node's
    offset, so each node refreshes at its own phase, whenever it started."""
    phase = node_offset(seed, min(jitter_seconds, interval_seconds))
    return (math.floor((now - phase) / interval_seconds) + 1) * interval_seconds + phase
