"""Registry manifests, typed once: an image index (OCI index or Docker manifest list) resolved to the node's
platform, and a mod image's one layer picked from its manifest.

Per the OCI image spec (image-index.md, manifest.md) and Docker's Image Manifest V2 Schema 2; the choices
follow LinuxServer's consumer (docs/mods.md, "How the consumer picks the layer") where it has one: the index's
attestation entries are left out, an index with a single entry left is used whatever its platform, otherwise
the entry for the node's architecture. Unlike the consumer (which takes ``layers[0]``) a manifest with more than
one layer is refused: a mod is a one-layer image, and the consumer would apply only part of such an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

from orcastra.errors import ModImageError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPTED_MANIFESTS = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# What LinuxServer's consumer can apply: it checks the file with ``tar -tzf`` (gzip only).
GZIP_LAYERS = frozenset(
    {"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip"}
)
ATTESTATION_KEY = "vnd.docker.reference.type"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

Text = Annotated[str, msgspec.Meta(max_length=1024)]


class Platform(msgspec.Struct, frozen=True):
    architecture: Text = ""
    os: Text = ""
    variant: Text = ""


class Descriptor(msgspec.Struct, frozen=True):
    digest: Text
    size: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    mediaType: Text = ""
    platform: Platform | None = None
    annotations: dict[str, str] | None = None


class Manifest(msgspec.Struct, frozen=True):
    """A manifest or an index: which one is told by ``mediaType`` (or the answer's Content-Type)."""

    schemaVersion: int = 0
    mediaType: Text = ""
    layers: Annotated[list[Descriptor], msgspec.Meta(max_length=10_000)] | None = None
    manifests: Annotated[list[Descriptor], msgspec.Meta(max_length=10_000)] | None = None

    @property
    def is_index(self) -> bool:
        return self.mediaType in INDEX_TYPES or (self.manifests is not None and self.layers is None)


@dataclass(frozen=True)
class NodePlatform:
    """The platform a node runs (OCI names): linux/amd64, linux/arm64/v8, linux/arm/v7."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# uname -m (and the Engine's /info "Architecture") -> OCI architecture and variant (the OCI image spec's table;
# Go's GOARCH names).
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def node_platform(machine: str, os_name: str = "linux") -> NodePlatform:
    """``uname -m`` (or /info ``Architecture``) -> the node's platform; an unknown name is kept as it is."""
    arch, variant = _MACHINES.get(machine.strip().lower(), (machine.strip().lower(), ""))
    return NodePlatform(os_name.lower() or "linux", arch, variant)


def parse_platform(text: str) -> NodePlatform:
    """``os/architecture[/variant]`` -> the platform (arm64 without a variant is arm64/v8, as Docker reads it)."""
    os_name, _, rest = text.strip().lower().partition("/")
    arch, _, variant = rest.partition("/")
    if arch == "arm64" and not variant:
        variant = "v8"
    return NodePlatform(os_name or "linux", arch or "amd64", variant)


def decode_manifest(body: bytes, what: str) -> Manifest:
    try:
        return msgspec.json.decode(body, type=Manifest)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ModImageError(f"{what}: not an image manifest: {str(e)[:200]}") from None


def _attestation(d: Descriptor) -> bool:
    platform = d.platform
    unknown = platform is not None and platform.os == "unknown" and platform.architecture == "unknown"
    return unknown or (d.annotations or {}).get(ATTESTATION_KEY) == "attestation-manifest"


def _variant_matches(wanted: NodePlatform, p: Platform) -> bool:
    # arm64's variant is v8 when given at all; an entry without a variant fits any.
    return not p.variant or not wanted.variant or p.variant == wanted.variant


def pick_platform(index: Manifest, platform: NodePlatform, what: str) -> Descriptor:
    """The index entry for ``platform``: the only one left after the attestations, else the one with the node's
    OS, architecture (and variant when both say one)."""
    entries = [d for d in index.manifests or () if not _attestation(d)]
    if len(entries) == 1:
        return entries[0]
    fits = [
        d
        for d in entries
        if d.platform is not None
        and d.platform.architecture == platform.architecture
        and d.platform.os in ("", platform.os)
        and _variant_matches(platform, d.platform)
    ]
    if not fits:
        offered = ", ".join(sorted({f"{d.platform.os}/{d.platform.architecture}" for d in entries if d.platform}))
        raise ModImageError(f"{what}: no image for {platform} (the index offers {offered or 'nothing'})")
    exact = [d for d in fits if d.platform is not None and d.platform.variant == platform.variant]
    return (exact or fits)[0]


def pick_layer(manifest: Manifest, max_bytes: int, what: str) -> Descriptor:
    """A mod image's layer: exactly one, gzip-compressed (what the consumer's ``tar -tzf`` reads), with a sha256
    digest (verified while it streams), no larger than ``max_bytes``."""
    layers = manifest.layers or []
    if len(layers) != 1:
        raise ModImageError(f"{what}: a mod is a one-layer image; this one has {len(layers)} layers")
    layer = layers[0]
    if layer.mediaType and layer.mediaType not in GZIP_LAYERS:
        raise ModImageError(f"{what}: its layer is {layer.mediaType[:100]}, not a gzip tar the consumer can read")
    if not layer.digest.startswith("sha256:") or len(layer.digest) != 71:
        raise ModImageError(f"{what}: its layer's digest {layer.digest[:80]!r} is not sha256")
    if layer.size > max_bytes:
        raise ModImageError(f"{what}: its layer is {layer.size} bytes, over the {max_bytes} bytes allowed")
    return layer
