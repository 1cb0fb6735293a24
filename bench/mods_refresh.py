"""Mod manager refresh: a cold cache filled, then warm refreshes, against a real registry on loopback.

``docker-registry`` (Debian's distribution 2.8) is started on a free loopback port with its storage in a
temporary directory; ``--mods`` mods of ``--mib`` MiB of random (incompressible) data each are pushed to it
without a Docker daemon (``orcastra_lab.mod_images``). Then ``ModRefresher.run`` is timed: cold (every mod
resolved, streamed, verified and renamed into the cache), warm twice (every mod resolved, nothing written: its
file's digest is remembered), and warm in a fresh refresher (as after an agent restart: every file hashed once).
Also: the RSS the mod manager's modules and its TLS contexts add to the agent process.

Usage: python -m bench.mods_refresh [--mods 20] [--mib 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from orcastra.adapters.registry_http import HttpOptions, RegistryHttp
from orcastra.features.mods.manifest import NodePlatform
from orcastra.features.mods.plan import ModPolicy, wanted_mods
from orcastra.runtime.mods import ModOptions, ModRefresher
from orcastra_lab.auth_registry import LocalRegistry
from orcastra_lab.mod_images import Pusher


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run(mods: int, mib: int) -> dict[str, Any]:
    out: dict[str, Any] = {"mods": mods, "mib_each": mib}
    before = rss_kib()
    http = RegistryHttp(HttpOptions())
    http.tls_context(verified=True)  # made on the first HTTPS request in the agent; measured here
    http.tls_context(verified=False)
    out["tls_contexts_kib"] = rss_kib() - before
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        (where / "registry").mkdir()
        registry = LocalRegistry(where / "registry")
        started = time.perf_counter()
        registry.start()
        out["registry_start_seconds"] = round(time.perf_counter() - started, 3)
        try:
            pusher = Pusher(registry.base_url)
            for i in range(mods):
                pusher.push_mod(f"bench/mod{i}", "v1", {"blob": os.urandom(mib * 1024 * 1024)})
            value = "|".join(f"{registry.host}/bench/mod{i}:v1" for i in range(mods))
            wanted = wanted_mods([("bench", value)], [])
            options = ModOptions(where / "cache", ModPolicy(), HttpOptions(insecure=frozenset({registry.host})))
            refresher = ModRefresher(options, NodePlatform())
            for label in ("cold", "warm", "warm_again"):
                started = time.perf_counter()
                result = refresher.run(wanted, label)
                out[label] = {
                    "seconds": round(time.perf_counter() - started, 3),
                    "fetched": result.fetched,
                    "hits": result.hits,
                    "bytes": result.bytes_fetched,
                }
            started = time.perf_counter()
            result = ModRefresher(options, NodePlatform()).run(wanted, "restart")
            out["after_restart"] = {"seconds": round(time.perf_counter() - started, 3), "hits": result.hits}
        finally:
            registry.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mods", type=int, default=20)
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = run(args.mods, args.mib)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
