"""Image references read the way the Engine reads them, so that the ``nginx`` a service names and the
``docker.io/library/nginx:latest`` a local image carries are one name, and an index from references to the
local images they name.

The rules are distribution/reference's (``ParseNormalizedNamed``): the first path component is a registry
only when it holds a ``.`` or a ``:``, is ``localhost`` or has an upper-case letter; otherwise the registry is
Docker Hub (``docker.io``, also spelled ``index.docker.io``), where a one-component name lives under
``library/``; a reference with neither tag nor digest means ``:latest``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from orcastra.features.hygiene.gc_types import ImageInfo

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})
DEFAULT_TAG = "latest"
# What GET /images/json puts in RepoTags / RepoDigests for an image without a name.
DANGLING = frozenset({"<none>:<none>", "<none>@<none>"})
_IMAGE_ID_RE = re.compile(r"(?:sha256:)?([0-9a-f]{64})\Z")
_ID_LENGTHS = (64, 71)  # the 64 hex digits, alone or after "sha256:"


class Reference(NamedTuple):
    """A parsed reference: the repository in full (``docker.io/library/nginx``), its tag and digest. (A named
    tuple rather than a frozen dataclass: tens of thousands are made per plan, and a tuple is made faster.)"""

    repository: str
    tag: str | None
    digest: str | None

    def index_keys(self) -> tuple[str, ...]:
        """The index keys this reference answers to: ``repository:tag`` and ``repository@digest``."""
        if self.digest is None:
            return () if self.tag is None else (f"{self.repository}:{self.tag}",)
        if self.tag is None:
            return (f"{self.repository}@{self.digest}",)
        return (f"{self.repository}:{self.tag}", f"{self.repository}@{self.digest}")


def split_tag(name: str) -> tuple[str, str | None]:
    """``reg:5000/a/b:1.2`` -> (``reg:5000/a/b``, ``1.2``): a tag is after the last ``:`` that follows the last
    ``/`` (the ``:`` of ``reg:5000`` is a port)."""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :]
    return name, None


def normalise_repository(name: str) -> str:
    """A repository name in full: ``nginx`` -> ``docker.io/library/nginx``, ``index.docker.io/x/y`` ->
    ``docker.io/x/y``, ``reg:5000/app`` unchanged."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = "library/" + path
    return f"{domain}/{path}"


def split_reference(text: str) -> tuple[str, str | None, str | None] | None:
    """``text`` (``[registry/]path[:tag][@digest]``) cut into its repository as written, its tag (``latest``
    when there is neither tag nor digest) and its digest; None for an empty or dangling reference or an image
    ID (IDs are looked up as IDs, not names)."""
    if not text or text in DANGLING or (len(text) in _ID_LENGTHS and _IMAGE_ID_RE.match(text)):
        return None
    name, at, digest = text.partition("@")
    name, tag = split_tag(name)
    if not name:
        return None
    if not at and not tag:
        tag = DEFAULT_TAG
    return name, tag or None, digest if at and digest else None


def parse_reference(text: str) -> Reference | None:
    """The reference in ``text`` with its repository in full, or None (see ``split_reference``)."""
    parts = split_reference(text)
    return None if parts is None else Reference(normalise_repository(parts[0]), parts[1], parts[2])


def image_id_in(text: str) -> str | None:
    """The image ID ``text`` spells in full (``sha256:<64 hex>`` or the 64 hex digits alone), else None.
    Short ID prefixes are not resolved: a container also carries its image's full ID."""
    m = _IMAGE_ID_RE.match(text)
    return f"sha256:{m.group(1)}" if m else None


def real_names(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without the ``<none>`` placeholders the Engine puts in RepoTags and RepoDigests."""
    return tuple(n for n in names if n and n not in DANGLING)


class ImageIndex:
    """Which local images a reference names, by full ID, by ``repository:tag`` or by ``repository@digest``,
    in one dict lookup after one pass over the images (parses are memoised: thousands of containers and
    service specs name the same few hundred references)."""

    def __init__(self, images: Iterable[ImageInfo]) -> None:
        self._ids: set[str] = set()
        # Tuples, not lists: almost every key names one image, and tuples of strings are soon untracked by the
        # cyclic garbage collector, which otherwise rescans tens of thousands of lists as the heap grows.
        self._by_key: dict[str, tuple[str, ...]] = {}
        self._parsed: dict[str, Reference | None] = {}
        self._repositories: dict[str, str] = {}  # as written -> in full
        self.repositories: dict[str, tuple[str, ...]] = {}  # image ID -> its repositories, in full
        for image in images:
            self._ids.add(image.id)
            repositories: dict[str, None] = {}
            for name in image.repo_tags + image.repo_digests:
                ref = self.parse(name)
                if ref is None:
                    continue
                repositories[ref.repository] = None
                for key in ref.index_keys():
                    self._by_key[key] = (*self._by_key.get(key, ()), image.id)
            self.repositories[image.id] = tuple(repositories)

    def parse(self, text: str) -> Reference | None:
        """``parse_reference``, memoised; repositories are normalised once each (a node has a few thousand
        repositories and tens of thousands of names)."""
        if text in self._parsed:
            return self._parsed[text]
        parts = split_reference(text)
        ref = None
        if parts is not None:
            repository = self._repositories.get(parts[0])
            if repository is None:
                repository = self._repositories[parts[0]] = normalise_repository(parts[0])
            ref = Reference(repository, parts[1], parts[2])
        self._parsed[text] = ref
        return ref

    def resolve(self, text: str) -> tuple[str, ...]:
        """The IDs of the local images ``text`` names: by its ID, its tag or its digest (a service pinned as
        ``repo:tag@digest`` matches both the image with that digest and the one that tag names now)."""
        image_id = image_id_in(text)
        if image_id is not None:
            return (image_id,) if image_id in self._ids else ()
        ref = self.parse(text)
        if ref is None:
            return ()
        found: list[str] = []
        for key in ref.index_keys():
            found += self._by_key.get(key, ())
        return tuple(found)
