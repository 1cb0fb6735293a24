"""The ``mods:`` section: the mod manager, which keeps every node's LinuxServer.io mod cache (``/modcache``)
filled with the mods its containers and the Swarm's services name (docs/mods.md).

A section of its own, not under ``hygiene:``: hygiene removes what a node no longer needs, the mod manager
fetches what its containers will need; it has its own family of settings (registries, credentials, the
cache's place), and the earlier tool's ``MOD_MANAGER_*`` variables map onto it (``orcastra.config.env``).
Off until ``enabled`` (any ``MOD_MANAGER_*`` variable turns it on, as it did for the earlier tool).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from orcastra.domain.fields import DAY_SECONDS, HOUR_SECONDS, MINUTE_SECONDS, AbsolutePath, Section, fail
from orcastra.features.mods.manifest import parse_platform
from orcastra.features.mods.reference import API_HOSTS

DEFAULT_CACHE_DIR = Path("/modcache")
MIB = 1024 * 1024
_REGISTRY = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?\Z")
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?\Z")


def check_registry(name: str) -> str:
    if not _REGISTRY.match(name):
        raise fail(f"expected a registry host[:port] (ghcr.io, lscr.io, 10.0.0.1:5000), found {name[:100]!r}")
    return API_HOSTS.get(name, name)


RegistryHost = Annotated[str, AfterValidator(check_registry)]


class RegistryCredentials(Section):
    """How the agent logs in to one registry (HTTP basic to its token service, or to the registry itself)."""

    username: Annotated[str, Field(min_length=1, max_length=256)]
    # Read by the agent at each refresh (mount a Swarm secret there); its first line is the password or token.
    password_file: AbsolutePath


class ModsSettings(Section):
    """The mod manager in the agent on every node."""

    enabled: bool = False
    # Where the cache is, as mounted in the agent's container (the same host directory every LinuxServer
    # container mounts at /modcache). MOD_MANAGER_DEST.
    cache_dir: AbsolutePath = DEFAULT_CACHE_DIR
    # Every mod is checked against its registry this often (MOD_MANAGER_REFRESH_INTERVAL_MINUTES, 720).
    refresh_interval_seconds: Annotated[float, Field(ge=MINUTE_SECONDS, le=30 * DAY_SECONDS)] = 720 * 60.0
    # Nodes refresh at different phases of the interval, up to this apart (from each node's ID; at most the
    # interval: a longer jitter is read as the interval).
    jitter_seconds: Annotated[float, Field(ge=0, le=DAY_SECONDS)] = HOUR_SECONDS
    # A cached mod nothing names any more is removed after this (never while a consumer's lock is on it).
    prune: bool = True
    prune_grace_seconds: Annotated[float, Field(ge=0, le=365 * DAY_SECONDS)] = DAY_SECONDS
    # A consumer's lock older than this was left by a container that died mid-download: removed.
    stale_lock_seconds: Annotated[float, Field(ge=5 * MINUTE_SECONDS, le=7 * DAY_SECONDS)] = HOUR_SECONDS
    # Credentials by registry host[:port] (the registry a reference is fetched from: lscr.io for linuxserver/...).
    registries: dict[RegistryHost, RegistryCredentials] = Field(default_factory=dict)
    # Registries spoken to over plain HTTP, or HTTPS without verifying the certificate (dockerd's
    # --insecure-registry): HTTPS is tried first, then HTTP.
    insecure_registries: list[RegistryHost] = Field(default_factory=list)
    # The platform mods are picked for from a multi-platform index; None: the node's (its Engine's /info).
    platform: str | None = None
    max_mod_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * MIB)] = 512 * MIB
    connect_timeout_seconds: Annotated[float, Field(ge=0.1, le=300)] = 10.0
    read_timeout_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    # Tries per registry call (connection failures, 5xx, 429, a cut download), with 1, 2, 4... s between.
    attempts: Annotated[int, Field(ge=1, le=10)] = 3

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        if value is not None and not _PLATFORM.match(value):
            raise fail(f"expected os/architecture[/variant] such as linux/arm64/v8, found {value[:100]!r}")
        return str(parse_platform(value)) if value is not None else None
