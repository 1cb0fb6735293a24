"""LinuxServer-style mod images for tests, without a Docker daemon: built in memory and pushed to a registry
over its HTTP API v2 (the distribution spec: blob upload by POST + PUT ?digest=, manifest PUT).

A mod image is one gzip tar layer holding a file tree (what ``docker buildx build`` of a mod's ``FROM scratch``
Dockerfile gives); ``push_mod`` pushes one as a Docker v2 manifest, ``push_multi_platform_mod`` as an OCI index
with one manifest per platform plus an attestation entry (as BuildKit adds), so a consumer must pick by platform.

The pusher answers a registry's bearer challenge itself (the token service's realm from ``WWW-Authenticate``,
with basic credentials when given). ``TokenServer`` (``orcastra_lab.token_server``) and ``LocalRegistry``
give such a registry.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import re
import ssl
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TIMEOUT_SECONDS = 10.0


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def mod_layer(files: Mapping[str, bytes], mode: int = 0o755) -> bytes:
    """A gzip tar of ``files`` (path -> content; directories made as needed), reproducible (mtime 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass(frozen=True)
class PushedMod:
    repository: str
    tag: str
    layer: bytes  # the blob as pushed: what a cache file must hold, byte for byte
    layer_digest: str
    manifest_digest: str
    index_digest: str | None = None


@dataclass
class Pusher:
    """Pushes to one registry (``base_url`` such as ``http://127.0.0.1:5000``), authenticating as asked."""

    base_url: str
    username: str | None = None
    password: str | None = None
    # TLS without verifying the registry's certificate (a test registry's self-signed one).
    unverified_tls: bool = False
    _tokens: dict[str, str] = field(default_factory=dict)

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        context = ssl._create_unverified_context() if self.unverified_tls else None
        answer: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context)
        return answer

    def _token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({k: params[k] for k in ("service", "scope") if k in params})
        request = urllib.request.Request(f"{params['realm']}?{query}")
        if self.username is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        with self._open(request) as answer:
            return str(json.load(answer)["token"])

    def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], scope: str
    ) -> Mapping[str, str]:
        for _ in range(2):
            request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
            if scope in self._tokens:
                request.add_header("Authorization", f"Bearer {self._tokens[scope]}")
            try:
                with self._open(request) as answer:
                    return dict(answer.headers)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "")
                if e.code != 401 or not challenge or scope in self._tokens:
                    raise
                self._tokens[scope] = self._token(challenge)
        raise RuntimeError(f"{method} {url}: still refused")

    def blob(self, repository: str, data: bytes) -> str:
        digest, scope = digest_of(data), f"repository:{repository}:pull,push"
        started = self._send("POST", f"{self.base_url}/v2/{repository}/blobs/uploads/", b"", {}, scope)
        location = urllib.parse.urljoin(self.base_url, started["Location"])
        joiner = "&" if "?" in location else "?"
        target = f"{location}{joiner}digest={urllib.parse.quote(digest)}"
        self._send("PUT", target, data, {"Content-Type": "application/octet-stream"}, scope)
        return digest

    def manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        scope = f"repository:{repository}:pull,push"
        url = f"{self.base_url}/v2/{repository}/manifests/{reference}"
        self._send("PUT", url, body, {"Content-Type": media_type}, scope)
        return digest_of(body)

    def _image(self, repository: str, layer: bytes, platform: tuple[str, str], oci: bool) -> bytes:
        """Push the config and the layer; the manifest's body (pushed by the caller, by tag or digest)."""
        config = json.dumps({"architecture": platform[1], "os": platform[0], "rootfs": {"type": "layers"}}).encode()
        config_digest = self.blob(repository, config)
        layer_digest = self.blob(repository, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
        return json.dumps(manifest).encode()

    def push_mod(self, repository: str, tag: str, files: Mapping[str, bytes]) -> PushedMod:
        """A one-platform mod (a Docker v2 manifest) tagged ``tag``."""
        layer = mod_layer(files)
        body = self._image(repository, layer, ("linux", "amd64"), oci=False)
        return PushedMod(
            repository, tag, layer, digest_of(layer), self.manifest(repository, tag, body, DOCKER_MANIFEST)
        )

    def push_multi_platform_mod(
        self, repository: str, tag: str, by_platform: Mapping[str, Mapping[str, bytes]]
    ) -> dict[str, PushedMod]:
        """One OCI manifest per ``os/arch[/variant]`` and an index tagged ``tag`` listing them, plus an
        attestation manifest (platform unknown/unknown, as BuildKit adds); by platform, what each one holds."""
        entries: list[dict[str, object]] = []
        images: dict[str, tuple[bytes, str]] = {}
        for platform, files in by_platform.items():
            os_name, arch, *variant = platform.split("/")
            layer = mod_layer(files)
            body = self._image(repository, layer, (os_name, arch), oci=True)
            digest, size = self.manifest(repository, digest_of(body), body, OCI_MANIFEST), len(body)
            described: dict[str, str] = {"os": os_name, "architecture": arch}
            if variant:
                described["variant"] = variant[0]
            entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": described})
            images[platform] = (layer, digest)
        body = self._image(repository, mod_layer({"attestation.json": b"{}"}), ("unknown", "unknown"), oci=True)
        attestation, size = self.manifest(repository, digest_of(body), body, OCI_MANIFEST), len(body)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": attestation,
                "size": size,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            }
        )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        index_digest = self.manifest(repository, tag, index, OCI_INDEX)
        return {
            p: PushedMod(repository, tag, layer, digest_of(layer), digest, index_digest)
            for p, (layer, digest) in images.items()
        }

    def fetch_blob(self, repository: str, digest: str) -> bytes:
        """The blob as the registry serves it (for byte-for-byte comparisons)."""
        scope = f"repository:{repository}:pull"
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        for _ in range(2):
            request = urllib.request.Request(url)
            if scope in self._tokens:
                request.add_header("Authorization", f"Bearer {self._tokens[scope]}")
            try:
                with self._open(request) as answer:
                    return bytes(answer.read())
            except urllib.error.HTTPError as e:
                if e.code != 401 or scope in self._tokens:
                    raise
                self._tokens[scope] = self._token(e.headers.get("WWW-Authenticate", ""))
        raise RuntimeError(f"GET {url}: still refused")
