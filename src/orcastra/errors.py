"""Orcastra's error types: one root, Engine statuses mapped to subclasses, retry semantics in the type.

Every error that can reach a user is an ``OrcastraError``; the CLI prints its message and exits non-zero,
never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

BODY_LIMIT_CHARS = 300


def cut(text: str, limit: int = BODY_LIMIT_CHARS) -> str:
    """Cut an Engine response body (or any message part) to a fixed length for messages and logs."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


class OrcastraError(Exception):
    """Root of every error Orcastra raises on purpose."""

    exit_code = 1


class TemporaryError(OrcastraError):
    """Worth retrying later: the same call may succeed after ``retry_after_seconds``.

    Each subclass says how long is worth waiting by default; a raiser that knows better (an Engine's
    ``Retry-After``, a lock's expiry) passes ``retry_after_seconds=``. The runtime's loop waits exactly that
    long (growing it while the same failure repeats) before it tries the cycle again.
    """

    retry_after_seconds: float = 5.0

    def __init__(self, *args: object, retry_after_seconds: float | None = None) -> None:
        super().__init__(*args)
        if retry_after_seconds is not None:
            self.retry_after_seconds = max(0.0, float(retry_after_seconds))


class PermanentError(OrcastraError):
    """Retrying the same call will not help; the input or the state must change first."""


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration source: which file, which field, what was expected."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class ConfigError(PermanentError):
    """The configuration is invalid; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"invalid configuration ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


# --- Docker Engine ---------------------------------------------------------------------------------


class EngineError(OrcastraError):
    """A call to the Docker Engine API failed."""

    def __init__(
        self, message: str, *, endpoint: str = "", status: int | None = None, retry_after_seconds: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        if isinstance(self, TemporaryError):
            TemporaryError.__init__(self, message, retry_after_seconds=retry_after_seconds)
        else:
            super().__init__(message)


class EngineUnreachableError(EngineError, TemporaryError):
    """The Engine endpoint did not answer (socket missing, connection refused, timeout)."""

    retry_after_seconds = 2.0


class EngineNotFoundError(EngineError, PermanentError):
    """404: the node, service or task does not exist (any more)."""


class EngineConflictError(EngineError, TemporaryError):
    """The object's ``version`` was stale ("update out of sequence"): re-read and re-plan."""

    retry_after_seconds = 0.0


class EngineClientError(EngineError, PermanentError):
    """4xx other than 404/409: the request itself is wrong (bad spec, bad label...)."""


class EngineServerError(EngineError, TemporaryError):
    """5xx: the Engine or the Swarm failed (no leader, raft unavailable...). A manager without a Raft leader
    answers so for the seconds an election takes."""

    retry_after_seconds = 1.0


class NotASwarmManagerError(EngineError, PermanentError):
    """The endpoint is not a manager of an active Swarm, so nodes and services cannot be listed."""


# --- registries (the mod manager) ------------------------------------------------------------------


class RegistryError(OrcastraError):
    """A call to a container registry (HTTP API v2) failed; ``registry`` is its host[:port]."""

    def __init__(self, message: str, *, registry: str = "", retry_after_seconds: float | None = None) -> None:
        self.registry = registry
        if isinstance(self, TemporaryError):
            TemporaryError.__init__(self, message, retry_after_seconds=retry_after_seconds)
        else:
            super().__init__(message)


class RegistryUnreachableError(RegistryError, TemporaryError):
    """The registry did not answer (refused, reset, timed out, TLS failed)."""

    retry_after_seconds = 2.0


class RegistryServerError(RegistryError, TemporaryError):
    """5xx or 429 (``Retry-After`` honoured), or an answer cut short."""

    retry_after_seconds = 2.0


class RegistryAuthError(RegistryError, PermanentError):
    """401/403 with the credentials (or anonymous token) Orcastra has: the configuration must change."""


class RegistryNotFoundError(RegistryError, PermanentError):
    """404: no such repository, tag, manifest or blob."""


class ModImageError(RegistryError, PermanentError):
    """The image is not a mod the consumer can use (not one gzip layer, no image for the node's platform, a
    digest that does not match what the registry served)."""


class ModCacheError(OrcastraError):
    """The mod cache directory could not be read or written (permissions, a full disk)."""


class ModCacheLockedError(ModCacheError, TemporaryError):
    """A consumer (or another writer) holds the mod's lock file: it is downloading or applying it now."""

    retry_after_seconds = 60.0
