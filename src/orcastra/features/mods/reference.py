"""``DOCKER_MODS`` values -> mod references, and each reference's cache file name, exactly as LinuxServer's
consumer computes them (docs/mods.md, "The consumer": ``docker-mods.v3`` 3.20250104, ``run_mods``).

The consumer splits the value on ``|`` and then on whitespace (``for DOCKER_MOD in $(echo ... | tr '|' '\\n')``
word-splits), picks the registry from the reference's first component:

- ``linuxserver/...``, ``docker.io/linuxserver/...``, ``ghcr.io/linuxserver/...``: ``lscr.io`` (LinuxServer's
  gateway to ghcr.io; its token comes from ``ghcr.io/token``);
- ``docker.io/...`` and a reference with no registry: Docker Hub (``registry-1.docker.io``);
- ``host[:port]/user/repo...``: that host;

and names the cache file ``<user>.<repo>[.<tag>][.<hex of the pinned digest>]`` (no tag: ``latest``) with
``.tar.xz`` after it, the registry left out. So ``linuxserver/mods:x`` and ``ghcr.io/linuxserver/mods:x`` share
one file, as they do for the consumer.

What the consumer cannot cache is refused here with a problem naming the container or service: a repository
that is not ``user/repo`` (one component: the consumer asks Docker Hub without ``library/``; three or more: its
file name would hold a ``/``), a digest other than sha256 (the only one verified), text that is not a reference.
Values come from containers a worker's owner controls: lengths are bounded, only printable ASCII is read, and
nothing here raises on any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LSCR = "lscr.io"
DOCKER_HUB = "registry-1.docker.io"
CACHE_SUFFIX = ".tar.xz"
LOCK_SUFFIX = ".lock"
DEFAULT_TAG = "latest"

MAX_VALUE_CHARS = 4096
MAX_REFERENCE_CHARS = 512
MAX_MODS_PER_VALUE = 32
MAX_SHOWN_CHARS = 80

# Registries whose API lives on another host than the name users write.
API_HOSTS = {"docker.io": DOCKER_HUB, "index.docker.io": DOCKER_HUB}
_LINUXSERVER_PREFIXES = ("linuxserver/", "docker.io/linuxserver/", "ghcr.io/linuxserver/")

# The distribution reference grammar (distribution/reference/regexp.go), for the parts the consumer splits out.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}\Z")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?\Z"
)


@dataclass(frozen=True)
class ModReference:
    """One mod as a ``DOCKER_MODS`` item names it: where to fetch it and which cache file holds it."""

    text: str  # the item as written
    registry: str  # the API host[:port]: lscr.io, registry-1.docker.io, ghcr.io, 10.0.0.1:5000
    repository: str  # user/repo
    tag: str | None  # None when only a digest pins it
    digest: str | None  # sha256:<hex> of the manifest or index it pins, else None

    @property
    def user(self) -> str:
        return self.repository.partition("/")[0]

    @property
    def cache_name(self) -> str:
        """The consumer's FILENAME: ``<user>.<repo>[.<tag>][.<digest hex>]``."""
        name = self.repository.replace("/", ".", 1)
        if self.tag:
            name += f".{self.tag}"
        if self.digest:
            name += f".{self.digest.partition(':')[2]}"
        return name

    @property
    def cache_file(self) -> str:
        return self.cache_name + CACHE_SUFFIX

    @property
    def lock_file(self) -> str:
        return self.cache_name + LOCK_SUFFIX

    @property
    def manifest_ref(self) -> str:
        """What the manifest is asked by: the pinned digest, else the tag (the consumer: ``${TAGSHA:-$TAG}``)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def shown(self) -> str:
        """``registry/repository[:tag][@digest]``, for logs and metrics labels."""
        return (
            f"{self.registry}/{self.repository}"
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


@dataclass(frozen=True)
class ParsedMods:
    """One ``DOCKER_MODS`` value: its references in order, and a problem for each item that is not one."""

    references: tuple[ModReference, ...]
    problems: tuple[str, ...]


def show(text: str) -> str:
    """An untrusted text, quoted, escaped and cut for a message."""
    cut = text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."
    return repr(cut)


def split_registry(item: str) -> tuple[str, str]:
    """(registry, the rest) as the consumer's ``case`` picks them (docs/mods.md, "Which registry")."""
    if item.startswith(_LINUXSERVER_PREFIXES):
        return LSCR, item[item.index("linuxserver/") :]
    if item.startswith("docker.io/"):
        return DOCKER_HUB, item.removeprefix("docker.io/")
    head, slash, _ = item.rpartition("/")
    if slash and "/" in head:  # host/user/repo...: the first component is the registry
        registry = head.partition("/")[0]
        return registry, item[len(registry) + 1 :]
    first = item.partition("/")[0]
    if "/" in item and "." in first:  # host/repo: a registry and a one-component repository
        return first, item[len(first) + 1 :]
    return DOCKER_HUB, item


def _split_name(rest: str) -> tuple[str, str | None, str | None]:
    """``path[:tag][@digest]`` -> (path, tag, digest) as the consumer's four forms split them."""
    path, at, digest = rest.partition("@")
    name, colon, tag = path.partition(":")
    if not at:
        return name, (tag if colon else DEFAULT_TAG), None
    return name, (tag if colon else None), digest


def _why_not(registry: str, path: str, tag: str | None, digest: str | None) -> str | None:
    if not _HOST.match(registry):
        return f"{show(registry)} is not a registry host[:port]"
    if "." not in registry and ":" not in registry and registry != "localhost":
        # The consumer takes the first of three components as a registry host whatever it is: user/team/repo
        # would be fetched from https://user/.
        return f"{show(registry)} is not a registry host (a registry has a '.' or a ':port', or is localhost)"
    parts = path.split("/")
    if len(parts) != 2:
        return "not a user/repository reference (LinuxServer's consumer caches only user/repository mods)"
    bad = [p for p in parts if not _COMPONENT.match(p)]
    if bad:
        return f"{show(bad[0])} is not a repository name component (lower-case letters, digits, . _ -)"
    if tag is not None and not _TAG.match(tag):
        return f"{show(tag)} is not a tag (letters, digits, _ . -, at most 128, not starting with . or -)"
    if digest is not None and not _SHA256.match(digest):
        return f"{show(digest)} is not a sha256 digest (sha256: and 64 lower-case hex digits)"
    return None


def parse_reference(item: str) -> ModReference | str:
    """One item (no whitespace, no ``|``) -> its reference, or why it is not one."""
    if len(item) > MAX_REFERENCE_CHARS:
        return f"longer than {MAX_REFERENCE_CHARS} characters"
    if not item.isascii() or not item.isprintable():
        return "not printable ASCII"
    registry, rest = split_registry(item)
    path, tag, digest = _split_name(rest)
    why = _why_not(registry, path, tag, digest)
    if why is not None:
        return why
    return ModReference(item, API_HOSTS.get(registry, registry), path, tag, digest)


def parse_mods(value: str, source: str) -> ParsedMods:
    """A ``DOCKER_MODS`` value of ``source`` ("container x", "service y") -> its references; every item that is
    not one is a problem naming ``source``, never an exception."""
    if len(value) > MAX_VALUE_CHARS:
        return ParsedMods((), (f"{source}: DOCKER_MODS is longer than {MAX_VALUE_CHARS} characters: not read",))
    items = [word for part in value.split("|") for word in part.split()]
    problems: list[str] = []
    if len(items) > MAX_MODS_PER_VALUE:
        problems.append(f"{source}: DOCKER_MODS names {len(items)} mods; the first {MAX_MODS_PER_VALUE} are read")
        items = items[:MAX_MODS_PER_VALUE]
    references: list[ModReference] = []
    for n, item in enumerate(items, 1):
        got = parse_reference(item)
        if isinstance(got, str):
            problems.append(f"{source}: DOCKER_MODS item {n} {show(item)}: {got}")
        elif got not in references:
            references.append(got)
    return ParsedMods(tuple(references), tuple(problems))


def docker_mods_of(env: list[str] | tuple[str, ...] | None) -> str:
    """The ``DOCKER_MODS`` value of a container's or service's ``Env`` (``NAME=value`` strings; the last one
    wins, as Docker applies them); "" when it has none."""
    found = ""
    for entry in env or ():
        if entry.startswith("DOCKER_MODS="):
            found = entry[len("DOCKER_MODS=") :]
    return found
