"""A mod's image on its registry (HTTP API v2, the distribution spec): its layer resolved for the node's
platform, and the layer's blob streamed into a file while its sha256 is checked.

- ``resolve``: GET the manifest by tag or pinned digest, asking for all four manifest types (OCI index,
  Docker manifest list, OCI manifest, Docker manifest v2); a pinned digest must be the digest of the bytes
  served; an index is resolved to the node's platform and that manifest's digest checked the same way; the one
  gzip layer is picked (``orcastra.features.mods.manifest``).
- ``fetch_blob``: GET the blob (redirects to storage followed), written to the file given while hashed;
  its size and sha256 must be the layer descriptor's, or the bytes are thrown away and the download retried.

Every call is tried ``attempts`` times when the failure is temporary (unreachable, 5xx, 429, a cut or corrupt
download), waiting 1, 2, 4... s (or the registry's ``Retry-After``) through the ``wait`` it is given, which the
agent's stop event ends early. A failure never touches the cache: the caller writes only a verified file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from orcastra.adapters.registry_http import Answer, HttpOptions, RegistryHttp
from orcastra.errors import ModImageError, RegistryServerError, RegistryUnreachableError, TemporaryError
from orcastra.features.mods.manifest import (
    ACCEPTED_MANIFESTS,
    MAX_MANIFEST_BYTES,
    Manifest,
    NodePlatform,
    decode_manifest,
    pick_layer,
    pick_platform,
)
from orcastra.features.mods.reference import ModReference

log = logging.getLogger("orcastra.agent.mods")

CHUNK_BYTES = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class ResolvedMod:
    """A mod resolved on its registry: the layer the cache file must hold, and the manifest it came from."""

    reference: ModReference
    layer_digest: str  # sha256:<hex>: the cache file's sha256 must be this
    layer_size: int
    manifest_digest: str  # the platform's manifest
    index_digest: str | None = None  # the index it was picked from, if any


def scope_of(ref: ModReference) -> str:
    return f"repository:{ref.repository}:pull"


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class ModRegistry:
    """Resolves mods and fetches their layers (``bytes_fetched`` counts them) over a ``RegistryHttp``, whose
    tokens and TLS contexts the caller may keep across refreshes."""

    def __init__(
        self,
        http: HttpOptions | RegistryHttp,
        *,
        attempts: int = 3,
        max_blob_bytes: int = 512 * 1024 * 1024,
        wait: Callable[[float], bool] = lambda seconds: False,
    ) -> None:
        self.http = http if isinstance(http, RegistryHttp) else RegistryHttp(http)
        self.attempts, self.max_blob_bytes, self.wait = max(1, attempts), max_blob_bytes, wait
        self.bytes_fetched = 0

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        delay = FIRST_RETRY_SECONDS
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except TemporaryError as e:
                if attempt == self.attempts:
                    raise
                pause = min(MAX_RETRY_SECONDS, max(delay, e.retry_after_seconds))
                log.info("mods: %s: %s (attempt %d of %d; again in %.0f s)", what, e, attempt, self.attempts, pause)
                if self.wait(pause):
                    raise
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # --- manifests ---

    def _manifest(self, ref: ModReference, what: str, target: str) -> tuple[Manifest, str]:
        answer = self.http.get(
            ref.registry,
            f"/v2/{ref.repository}/manifests/{target}",
            {"Accept": ", ".join(ACCEPTED_MANIFESTS)},
            scope_of(ref),
        )
        try:
            body = answer.read(MAX_MANIFEST_BYTES)
            content_type = (answer.response.getheader("Content-Type") or "").split(";")[0].strip()
        finally:
            answer.close()
        digest = _sha256(body)
        if target.startswith("sha256:") and digest != target:
            raise ModImageError(f"{what}: the registry served a manifest whose digest is {digest}, not {target}")
        manifest = decode_manifest(body, what)
        if not manifest.mediaType and content_type:
            manifest = Manifest(manifest.schemaVersion, content_type, manifest.layers, manifest.manifests)
        return manifest, digest

    def _resolve_once(self, ref: ModReference, platform: NodePlatform) -> ResolvedMod:
        what = ref.text
        manifest, digest = self._manifest(ref, what, ref.manifest_ref)
        index_digest = None
        if manifest.is_index:
            entry = pick_platform(manifest, platform, what)
            index_digest = digest
            manifest, digest = self._manifest(ref, what, entry.digest)
            if manifest.is_index:
                raise ModImageError(f"{what}: the index for {platform} points to another index")
        layer = pick_layer(manifest, self.max_blob_bytes, what)
        return ResolvedMod(ref, layer.digest, layer.size, digest, index_digest)

    def resolve(self, ref: ModReference, platform: NodePlatform) -> ResolvedMod:
        """The layer ``ref`` names for ``platform`` (``ModImageError`` when the image is no usable mod)."""
        return self._retrying(f"resolve {ref.text}", lambda: self._resolve_once(ref, platform))

    # --- blobs ---

    @staticmethod
    def _read(answer: Answer, what: str, digest: str) -> bytes:
        try:
            return answer.response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead mid-body
            raise RegistryUnreachableError(f"{what}: the download of {digest} was cut: {type(e).__name__}") from e

    def _stream(self, answer: Answer, mod: ResolvedMod, out: BinaryIO) -> int:
        digest, size, what = mod.layer_digest, mod.layer_size, mod.reference.text
        hasher, total = hashlib.sha256(), 0
        try:
            while chunk := self._read(answer, what, digest):
                if total == 0 and not chunk.startswith(GZIP_MAGIC):
                    raise ModImageError(f"{what}: the layer {digest} is not gzip data; the consumer could not read it")
                total += len(chunk)
                if total > size or total > self.max_blob_bytes:
                    raise ModImageError(f"{what}: the layer {digest} is larger than its {size} bytes")
                hasher.update(chunk)
                out.write(chunk)  # a full disk is an OSError of the cache, not of the registry: not mapped
        finally:
            answer.close()
        self.bytes_fetched += total
        if total != size:
            raise RegistryServerError(f"{what}: the layer {digest} arrived with {total} of its {size} bytes")
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise RegistryServerError(f"{what}: the layer served has sha256 {got}, not {digest}")
        return total

    def _fetch_once(self, mod: ResolvedMod, out: BinaryIO) -> int:
        out.seek(0)
        out.truncate()
        ref = mod.reference
        answer = self.http.get(ref.registry, f"/v2/{ref.repository}/blobs/{mod.layer_digest}", {}, scope_of(ref))
        return self._stream(answer, mod, out)

    def fetch_blob(self, mod: ResolvedMod, out: BinaryIO) -> int:
        """The layer's bytes into ``out`` (from its start), verified; their count."""
        return self._retrying(f"fetch {mod.reference.text}", lambda: self._fetch_once(mod, out))
