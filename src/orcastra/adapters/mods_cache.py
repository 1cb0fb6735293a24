"""The mod cache directory, written so that LinuxServer's consumer reads it as its own (docs/mods.md has the
contract and its sources).

- A mod is ``<dir>/<user>.<repo>[.<tag>][.<digest hex>].tar.xz`` holding the layer blob exactly as the registry
  serves it (gzip, despite the name): the consumer takes the file as current when its sha256 is the layer
  digest the registry names now, and uses it as it is when the registry cannot be reached.
- The lock is ``<name>.lock``, a plain file whose existence is the lock (the consumer ``touch``es it before it
  downloads into the cache, waits up to 75 s for someone else's to go, removes it when done). A write here
  creates it with ``O_CREAT|O_EXCL`` (never over a consumer's), writes the blob to a hidden temporary file in
  the same directory (``.orcastra-<name>.<random>.part``: no consumer pattern matches it), fsyncs it, makes it
  0644, renames it over ``<name>.tar.xz`` (atomic: a reader opens the old file or the new one, never a part),
  fsyncs the directory, and removes the lock if it is still the one it created.
- A prune removes ``<name>.tar.xz`` only while there is no lock; a lock is removed only when it is older than
  the stale age, looked at again just before.

``digest_of`` hashes a file once per (inode, size, mtime): a refresh of an unchanged cache reads nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from orcastra.errors import ModCacheError, ModCacheLockedError
from orcastra.features.mods.plan import CacheEntry, CacheListing
from orcastra.features.mods.reference import CACHE_SUFFIX, LOCK_SUFFIX

TEMP_PREFIX = ".orcastra-"
TEMP_SUFFIX = ".part"
FILE_MODE = 0o644
DIR_MODE = 0o755
HASH_CHUNK_BYTES = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


class ModCache:
    """One cache directory (``mods.cache_dir``, the host directory LinuxServer containers mount at /modcache)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._digests: dict[str, tuple[tuple[int, int, int], str]] = {}

    def path(self, name: str) -> Path:
        return self.directory / (name + CACHE_SUFFIX)

    def lock_path(self, name: str) -> Path:
        return self.directory / (name + LOCK_SUFFIX)

    def ensure(self) -> None:
        """The directory, created (0755) if missing; an existing one keeps its owner and mode."""
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as e:
            raise ModCacheError(f"cannot create the mod cache {self.directory}: {_reason(e)}") from e

    # --- reading ---

    def listing(self, now: float) -> CacheListing:
        """The mods, locks and our own temporary files in the directory (other files are not ours to judge)."""
        entries: dict[str, CacheEntry] = {}
        locks: dict[str, float] = {}
        temps: dict[str, float] = {}
        try:
            with os.scandir(self.directory) as it:
                found = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        except FileNotFoundError:
            return CacheListing({})
        except OSError as e:
            raise ModCacheError(f"cannot list the mod cache {self.directory}: {_reason(e)}") from e
        for name, st in found:
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            age = max(0.0, now - st.st_mtime)
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                temps[name] = age
            elif name.endswith(LOCK_SUFFIX) and len(name) > len(LOCK_SUFFIX):
                locks[name[: -len(LOCK_SUFFIX)]] = age
            elif name.endswith(CACHE_SUFFIX) and len(name) > len(CACHE_SUFFIX):
                entries[name[: -len(CACHE_SUFFIX)]] = CacheEntry(name[: -len(CACHE_SUFFIX)], st.st_size, st.st_mtime)
        entries = {n: CacheEntry(e.name, e.size, e.modified_at, locks.get(n)) for n, e in entries.items()}
        return CacheListing(entries, locks, temps)

    def digest_of(self, name: str) -> str | None:
        """``sha256:<hex>`` of ``<name>.tar.xz`` (what the consumer compares with the registry), None if absent."""
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = self._digests.get(name)
                if known is not None and known[0] == key:
                    return known[1]
                hasher = hashlib.sha256()
                while chunk := f.read(HASH_CHUNK_BYTES):
                    hasher.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ModCacheError(f"cannot read {path}: {_reason(e)}") from e
        digest = "sha256:" + hasher.hexdigest()
        self._digests[name] = (key, digest)
        return digest

    # --- writing ---

    def _lock(self, name: str) -> tuple[int, int]:
        path = self.lock_path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            raise ModCacheLockedError(f"{path} exists: a container is downloading or applying {name}") from None
        except OSError as e:
            raise ModCacheError(f"cannot create {path}: {_reason(e)}") from e
        try:
            os.write(fd, f"orcastra {socket.gethostname()} {os.getpid()}\n".encode())
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st.st_dev, st.st_ino

    def _unlock(self, name: str, mine: tuple[int, int]) -> None:
        path = self.lock_path(name)
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == mine:  # a consumer may have removed ours and made its own meanwhile
                os.unlink(path)
        except FileNotFoundError:
            pass

    def write(self, name: str, fill: Callable[[BinaryIO], object]) -> None:
        """``<name>.tar.xz`` replaced, atomically and under its lock, by what ``fill`` writes into the temporary
        file it is given. ``ModCacheLockedError`` when a consumer holds the lock; whatever ``fill`` raises
        leaves the old file as it was."""
        self.ensure()
        mine = self._lock(name)
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}.", suffix=TEMP_SUFFIX, dir=self.directory)
            with os.fdopen(fd, "w+b") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, self.path(name))
            tmp = None
            _fsync_dir(self.directory)
        except OSError as e:
            raise ModCacheError(f"cannot write {self.path(name)}: {_reason(e)}") from e
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._unlock(name, mine)

    def prune(self, name: str) -> bool:
        """Remove ``<name>.tar.xz`` unless a lock is on it (then False: left for the next refresh)."""
        if self.lock_path(name).exists():
            return False
        try:
            self.path(name).unlink(missing_ok=True)
        except OSError as e:
            raise ModCacheError(f"cannot remove {self.path(name)}: {_reason(e)}") from e
        self._digests.pop(name, None)
        return True

    def remove_stale_lock(self, name: str, older_than_seconds: float, now: float) -> bool:
        """Remove ``<name>.lock`` if it is still older than ``older_than_seconds`` (looked at again here)."""
        path = self.lock_path(name)
        try:
            if now - path.stat().st_mtime < older_than_seconds:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise ModCacheError(f"cannot remove {path}: {_reason(e)}") from e
        return True

    def remove_temp(self, file_name: str) -> None:
        if file_name.startswith(TEMP_PREFIX) and file_name.endswith(TEMP_SUFFIX) and "/" not in file_name:
            try:
                (self.directory / file_name).unlink(missing_ok=True)
            except OSError as e:
                raise ModCacheError(f"cannot remove {self.directory / file_name}: {_reason(e)}") from e
