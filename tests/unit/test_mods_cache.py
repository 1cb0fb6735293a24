"""The mod cache as written and as read: the writer (atomic, under the consumer's lock, 0644), readers that run
while it replaces a file, and the refresh end to end against a real registry (``docker-registry`` on loopback):
the cache holds exactly the wanted mods, byte-identical to the registry's blobs; a moved tag brings its new
digest; an unreferenced mod goes after the grace, never while locked; a registry that is down leaves the cache
as it was and says so; and a consumer written from docs/mods.md (tests/data/mods/consumer.sh) takes the cached
mods online (digest match) and offline, and applies them."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from prometheus_client import CollectorRegistry

from orcastra.adapters.mods_cache import ModCache
from orcastra.adapters.registry_http import HttpOptions
from orcastra.errors import ModCacheLockedError, RegistryServerError
from orcastra.features.mods.manifest import NodePlatform
from orcastra.features.mods.plan import ModPolicy, wanted_mods
from orcastra.runtime.mods import ModMetrics, ModOptions, ModRefresher, mod_options, read_credentials
from orcastra_lab.auth_registry import LocalRegistry
from orcastra_lab.mod_images import Pusher, digest_of

CONSUMER = Path(__file__).resolve().parents[1] / "data" / "mods" / "consumer.sh"


def sha(path: Path) -> str:
    return digest_of(path.read_bytes())


def write_bytes(data: bytes) -> object:
    def fill(out: BinaryIO) -> None:
        out.write(data)

    return fill


# --- the writer ----------------------------------------------------------------------------------


def test_a_write_is_the_bytes_given_0644_with_no_lock_or_temporary_file_left(tmp_path: Path) -> None:
    cache = ModCache(tmp_path / "modcache")
    cache.write("user.mod.v1", write_bytes(b"layer"))
    path = tmp_path / "modcache" / "user.mod.v1.tar.xz"
    assert path.read_bytes() == b"layer"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path / "modcache")) == ["user.mod.v1.tar.xz"]
    assert cache.digest_of("user.mod.v1") == digest_of(b"layer")


def test_a_failed_write_leaves_the_old_file_and_no_leftovers(tmp_path: Path) -> None:
    cache = ModCache(tmp_path)
    cache.write("user.mod.v1", write_bytes(b"old"))

    def broken(out: BinaryIO) -> None:
        out.write(b"half of the new")
        raise RegistryServerError("cut")

    with pytest.raises(RegistryServerError):
        cache.write("user.mod.v1", broken)
    assert (tmp_path / "user.mod.v1.tar.xz").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["user.mod.v1.tar.xz"]


def test_a_consumers_lock_is_respected_and_never_removed_by_a_write(tmp_path: Path) -> None:
    cache = ModCache(tmp_path)
    cache.write("user.mod.v1", write_bytes(b"old"))
    (tmp_path / "user.mod.v1.lock").touch()  # what the consumer does before it downloads into the cache
    with pytest.raises(ModCacheLockedError, match=r"a container is downloading or applying user\.mod\.v1"):
        cache.write("user.mod.v1", write_bytes(b"new"))
    assert (tmp_path / "user.mod.v1.tar.xz").read_bytes() == b"old"
    assert (tmp_path / "user.mod.v1.lock").exists()
    assert cache.prune("user.mod.v1") is False
    assert (tmp_path / "user.mod.v1.tar.xz").exists()


def test_the_lock_is_held_while_writing_and_a_waiting_consumer_finds_the_new_file(tmp_path: Path) -> None:
    cache = ModCache(tmp_path)
    seen: list[bool] = []

    def fill(out: BinaryIO) -> None:
        seen.append((tmp_path / "user.mod.v1.lock").exists())
        out.write(b"new")

    cache.write("user.mod.v1", fill)
    assert seen == [True]
    assert not (tmp_path / "user.mod.v1.lock").exists()


def test_only_a_stale_lock_is_removed(tmp_path: Path) -> None:
    cache = ModCache(tmp_path)
    lock = tmp_path / "user.mod.v1.lock"
    lock.touch()
    now = lock.stat().st_mtime
    assert cache.remove_stale_lock("user.mod.v1", 3600, now + 10) is False
    assert cache.remove_stale_lock("user.mod.v1", 3600, now + 3601) is True
    assert not lock.exists()


def test_readers_never_see_a_partial_file_while_it_is_replaced(tmp_path: Path) -> None:
    cache = ModCache(tmp_path)
    versions = [os.urandom(512 * 1024) for _ in range(2)]
    allowed = {hashlib.sha256(v).hexdigest() for v in versions}
    cache.write("user.mod.v1", write_bytes(versions[0]))
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(hashlib.sha256((tmp_path / "user.mod.v1.tar.xz").read_bytes()).hexdigest())

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    for i in range(40):
        cache.write("user.mod.v1", write_bytes(versions[i % 2]))
    stop.set()
    for r in readers:
        r.join()
    assert len(seen) > 40
    assert set(seen) <= allowed


def test_the_listing_sees_mods_locks_and_our_leftovers_only(tmp_path: Path) -> None:
    for name in ("user.a.v1.tar.xz", "user.a.v1.lock", "user.b.latest.tar.xz", ".orcastra-user.c.x1.part", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tar.xz").mkdir()
    listing = ModCache(tmp_path).listing(now=os.stat(tmp_path).st_mtime + 5)
    assert sorted(listing.entries) == ["user.a.v1", "user.b.latest"]
    assert listing.entries["user.a.v1"].lock_age_seconds is not None
    assert list(listing.locks) == ["user.a.v1"]
    assert list(listing.temp_files) == [".orcastra-user.c.x1.part"]


# --- the refresh, end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


def refresher(cache_dir: Path, host: str, grace: float = 3600.0) -> ModRefresher:
    options = ModOptions(
        cache_dir=cache_dir,
        policy=ModPolicy(prune=True, prune_grace_seconds=grace, stale_lock_seconds=3600.0),
        http=HttpOptions(insecure=frozenset({host}), connect_timeout_seconds=2, read_timeout_seconds=5),
        attempts=2,
    )
    return ModRefresher(options, NodePlatform(), wait=lambda seconds: False)


def consume(cache: Path, root: Path, mods: str, digests: dict[str, str] | None = None) -> list[str]:
    table = root.parent / f"{root.name}.digests"
    table.write_text("".join(f"{name} {digest}\n" for name, digest in (digests or {}).items()))
    root.mkdir(exist_ok=True)
    out = subprocess.run(
        ["bash", str(CONSUMER), str(cache), str(root), str(table)],
        env={"DOCKER_MODS": mods, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_a_refresh_fills_the_cache_exactly_and_the_consumer_applies_it(registry: LocalRegistry, tmp_path: Path) -> None:
    pusher = Pusher(registry.base_url)
    a = pusher.push_mod("e2e/mod-a", "v1", {"etc/s6-overlay/s6-rc.d/init-mod-a/run": b"#!/bin/sh\necho a\n"})
    b = pusher.push_mod("e2e/mod-b", "latest", {"usr/local/bin/mod-b": b"#!/bin/sh\necho b\n"})
    pusher.push_mod("e2e/mod-unused", "v1", {"x": b"never named"})
    host = registry.host
    cache_dir = tmp_path / "modcache"
    wanted = wanted_mods([("swag", f"{host}/e2e/mod-a:v1")], [("shop_web", f"{host}/e2e/mod-b|{host}/e2e/mod-a:v1")])
    metrics_registry = CollectorRegistry()
    metrics = ModMetrics(metrics_registry)
    mods = refresher(cache_dir, host)
    mods.on_result = metrics.record
    result = mods.run(wanted, "start")
    assert (result.fetched, result.hits, result.failed, result.ok) == (2, 0, 0, True)
    assert sorted(os.listdir(cache_dir)) == ["e2e.mod-a.v1.tar.xz", "e2e.mod-b.latest.tar.xz"]
    assert (cache_dir / "e2e.mod-a.v1.tar.xz").read_bytes() == pusher.fetch_blob("e2e/mod-a", a.layer_digest)
    assert (cache_dir / "e2e.mod-b.latest.tar.xz").read_bytes() == pusher.fetch_blob("e2e/mod-b", b.layer_digest)
    assert result.bytes_fetched == len(a.layer) + len(b.layer)
    assert metrics_registry.get_sample_value("orcastra_agent_mods_cache_misses_total", {"mod": "e2e.mod-a.v1"}) == 1

    again = mods.run(wanted, "schedule")
    assert (again.fetched, again.hits) == (0, 2)
    assert metrics_registry.get_sample_value("orcastra_agent_mods_cache_hits_total", {"mod": "e2e.mod-b.latest"}) == 1

    root = tmp_path / "container-root"
    online = consume(
        cache_dir,
        root,
        f"{host}/e2e/mod-a:v1|{host}/e2e/mod-b",
        {"e2e.mod-a.v1": a.layer_digest, "e2e.mod-b.latest": b.layer_digest},
    )
    assert online == [
        "e2e.mod-a.v1 found-in-modcache",
        "e2e.mod-a.v1 applied",
        "e2e.mod-b.latest found-in-modcache",
        "e2e.mod-b.latest applied",
    ]
    assert (root / "etc/s6-overlay/s6-rc.d/init-mod-a/run").read_bytes() == b"#!/bin/sh\necho a\n"
    assert (root / "usr/local/bin/mod-b").read_bytes() == b"#!/bin/sh\necho b\n"


def test_a_moved_tag_brings_the_new_digest_and_the_consumer_takes_only_the_current_one(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    pusher = Pusher(registry.base_url)
    host = registry.host
    old = pusher.push_mod("e2e/moving", "stable", {"version": b"1"})
    wanted = wanted_mods([("c", f"{host}/e2e/moving:stable")], [])
    mods = refresher(tmp_path, host)
    mods.run(wanted, "start")
    assert sha(tmp_path / "e2e.moving.stable.tar.xz") == old.layer_digest
    new = pusher.push_mod("e2e/moving", "stable", {"version": b"2"})
    root = tmp_path / "root"
    assert consume(tmp_path, root, f"{host}/e2e/moving:stable", {"e2e.moving.stable": new.layer_digest}) == [
        "e2e.moving.stable would-download"  # stale cache: the consumer would fetch it itself
    ]
    quick = mods.run(wanted, "new-reference", full=False)
    assert quick.fetched == 0  # a quick refresh only fills what is missing
    result = mods.run(wanted, "schedule")
    assert (result.fetched, result.items[0].digest) == (1, new.layer_digest)
    assert sha(tmp_path / "e2e.moving.stable.tar.xz") == new.layer_digest
    assert consume(tmp_path, root, f"{host}/e2e/moving:stable", {"e2e.moving.stable": new.layer_digest}) == [
        "e2e.moving.stable found-in-modcache",
        "e2e.moving.stable applied",
    ]
    assert (root / "version").read_bytes() == b"2"


def test_an_unreferenced_mod_is_pruned_after_the_grace_never_while_locked(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    pusher = Pusher(registry.base_url)
    host = registry.host
    pusher.push_mod("e2e/keep", "v1", {"k": b"k"})
    pusher.push_mod("e2e/drop", "v1", {"d": b"d"})
    mods = refresher(tmp_path, host, grace=0.0)
    mods.run(wanted_mods([("c", f"{host}/e2e/keep:v1|{host}/e2e/drop:v1")], []), "start")
    only_keep = wanted_mods([("c", f"{host}/e2e/keep:v1")], [])
    (tmp_path / "e2e.drop.v1.lock").touch()  # a consumer is applying it
    locked = mods.run(only_keep, "schedule")
    assert locked.pruned == 0
    assert (tmp_path / "e2e.drop.v1.tar.xz").exists()
    (tmp_path / "e2e.drop.v1.lock").unlink()
    unknown_services = mods.run(wanted_mods([("c", f"{host}/e2e/keep:v1")], None), "schedule")
    assert unknown_services.pruned == 0  # the services' mods are unknown: nothing goes
    pruned = mods.run(only_keep, "schedule")
    assert [(i.name, i.result) for i in pruned.items if i.result == "pruned"] == [("e2e.drop.v1", "pruned")]
    assert sorted(os.listdir(tmp_path)) == ["e2e.keep.v1.tar.xz"]


def test_a_registry_that_is_down_leaves_the_cache_and_the_consumer_works_offline(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "registry")
    (tmp_path / "registry").mkdir()
    reg.start()
    pushed = Pusher(reg.base_url).push_mod("e2e/offline", "v1", {"etc/offline": b"still here"})
    cache_dir = tmp_path / "modcache"
    wanted = wanted_mods([("c", f"{reg.host}/e2e/offline:v1")], [])
    mods = refresher(cache_dir, reg.host)
    assert mods.run(wanted, "start").fetched == 1
    before = (cache_dir / "e2e.offline.v1.tar.xz").stat()
    reg.stop()
    down = mods.run(wanted, "schedule")
    assert (down.failed, down.ok) == (1, False)
    assert down.items[0].result == "failed"
    assert "Connection" in down.items[0].error
    after = (cache_dir / "e2e.offline.v1.tar.xz").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sha(cache_dir / "e2e.offline.v1.tar.xz") == pushed.layer_digest
    root = tmp_path / "root"
    assert consume(cache_dir, root, f"{reg.host}/e2e/offline:v1") == [
        "e2e.offline.v1 offline-from-modcache",
        "e2e.offline.v1 applied",
    ]
    assert (root / "etc/offline").read_bytes() == b"still here"


def test_a_locked_mod_is_left_for_the_next_refresh(registry: LocalRegistry, tmp_path: Path) -> None:
    Pusher(registry.base_url).push_mod("e2e/busy", "v1", {"b": b"b"})
    (tmp_path / "e2e.busy.v1.lock").touch()
    result = refresher(tmp_path, registry.host).run(wanted_mods([("c", f"{registry.host}/e2e/busy:v1")], []), "start")
    assert result.fetched == 0
    assert any("locked by a consumer" in n for n in result.notes)
    assert not (tmp_path / "e2e.busy.v1.tar.xz").exists()


def test_a_stale_lock_is_removed_before_its_mod_is_fetched(registry: LocalRegistry, tmp_path: Path) -> None:
    pushed = Pusher(registry.base_url).push_mod("e2e/orphan-lock", "v1", {"o": b"o"})
    lock = tmp_path / "e2e.orphan-lock.v1.lock"  # left by a container killed mid-download, two hours ago
    lock.touch()
    os.utime(lock, (lock.stat().st_atime - 7200, lock.stat().st_mtime - 7200))
    wanted = wanted_mods([("c", f"{registry.host}/e2e/orphan-lock:v1")], [])
    result = refresher(tmp_path, registry.host).run(wanted, "start")
    assert [i.result for i in result.items] == ["lock-removed", "fetched"]
    assert sorted(os.listdir(tmp_path)) == ["e2e.orphan-lock.v1.tar.xz"]
    assert sha(tmp_path / "e2e.orphan-lock.v1.tar.xz") == pushed.layer_digest


def test_an_unusable_cache_directory_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = refresher(tmp_path / "file" / "modcache", "127.0.0.1:1").run(wanted_mods([], []), "start")
    assert "cannot create the mod cache" in result.error


def test_options_and_credentials_from_the_agents_plain_settings(tmp_path: Path) -> None:
    secret = tmp_path / "hub"
    secret.write_text("s3cret\n")
    settings = {
        "cache_dir": "/modcache",
        "prune": True,
        "prune_grace_seconds": 10.0,
        "stale_lock_seconds": 600.0,
        "insecure_registries": ["10.0.0.1:5000"],
        "connect_timeout_seconds": 1.0,
        "read_timeout_seconds": 2.0,
        "attempts": 2,
        "max_mod_bytes": 1000,
        "registries": {
            "registry-1.docker.io": {"username": "me", "password_file": str(secret)},
            "ghcr.io": {"username": "me", "password_file": str(tmp_path / "missing")},
        },
    }
    options = mod_options(settings)
    assert (options.cache_dir, options.policy.prune_grace_seconds, options.http.insecure) == (
        Path("/modcache"),
        10.0,
        frozenset({"10.0.0.1:5000"}),
    )
    found, problems = read_credentials(options.password_files)
    assert found["registry-1.docker.io"].password == "s3cret"
    assert problems == [f"ghcr.io: cannot read its password file {tmp_path / 'missing'}: No such file or directory"]
