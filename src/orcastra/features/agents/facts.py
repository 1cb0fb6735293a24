"""What the controller tells every agent about the Swarm (``POST /v1/report``'s body): the facts a node cannot
read from its own Engine, because only managers list services and tasks.

- ``image_refs``: every image a service spec names, its previous spec (a rollback target) included and
  services scaled to 0 included: an agent's garbage collection never removes one;
- ``volume_names``: named volumes any service mounts (never collected, even where no task runs now);
- ``autoheal_on``/``autoheal_off``: services labelled ``orcastra.autoheal`` (a service label, which never
  reaches the containers): autoheal treats their tasks' containers as if they carried it;
- ``mods``: the ``DOCKER_MODS`` value of every service spec that has one, by service name: the agent's mod
  manager caches them on every node, since any node may run the service's next task.

Built from the cycle's snapshot by a pure function; a bounded struct on the wire (the agent decodes input
from the network). This module imports msgspec (and the mod manager's length limit) only: the agent process
imports it.

A Swarm task's container is never collected by an agent: Swarm removes the containers of the tasks it stops
beyond its ``TaskHistoryRetentionLimit`` itself, and the controller reads only the live tasks, so it could
not say which stopped ones Swarm still tracks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from orcastra.features.mods.reference import MAX_VALUE_CHARS as MAX_MODS_CHARS

if TYPE_CHECKING:
    from orcastra.domain.snapshot import Snapshot

# The service label that opts a service's tasks in (or out) of the agents' autoheal.
AUTOHEAL_SERVICE_LABEL = "orcastra.autoheal"
# 10,000 image references of ~120 characters and as many volume names: a few MB at most.
MAX_FACTS_BYTES = 8 * 1024 * 1024
Ref = Annotated[str, msgspec.Meta(max_length=1024)]
# One more than the mod manager reads, so a longer value arrives cut and is reported as too long.
ModsValue = Annotated[str, msgspec.Meta(max_length=MAX_MODS_CHARS + 1)]


class SwarmFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The Swarm's facts as one controller saw them at ``generated_at`` (epoch seconds)."""

    generated_at: Annotated[float, msgspec.Meta(ge=0, le=1e11)]
    image_refs: Annotated[tuple[Ref, ...], msgspec.Meta(max_length=100_000)] = ()
    volume_names: Annotated[tuple[Ref, ...], msgspec.Meta(max_length=100_000)] = ()
    # Services whose own labels (deploy.labels) opt their tasks in or out of autoheal (orcastra.autoheal).
    autoheal_on: Annotated[tuple[Ref, ...], msgspec.Meta(max_length=100_000)] = ()
    autoheal_off: Annotated[tuple[Ref, ...], msgspec.Meta(max_length=100_000)] = ()
    # None: a controller of an earlier release, which does not send them (unknown, not "none").
    mods: Annotated[dict[Ref, ModsValue], msgspec.Meta(max_length=10_000)] | None = None


def facts_from(snapshot: Snapshot, now: float) -> SwarmFacts:
    images: set[str] = set()
    volumes: set[str] = set()
    heal: dict[str, str] = {}
    mods: dict[str, str] = {}
    for service in snapshot.services:
        images.update(ref for ref in (service.image, service.previous_image) if ref)
        volumes.update(service.volumes)
        value = service.labels.get(AUTOHEAL_SERVICE_LABEL, "").strip().lower()
        if value in ("true", "false"):
            heal[service.name] = value
        if service.mods:
            mods[service.name[:1024]] = service.mods[: MAX_MODS_CHARS + 1]
    return SwarmFacts(
        generated_at=now,
        image_refs=tuple(sorted(images)),
        volume_names=tuple(sorted(volumes)),
        autoheal_on=tuple(sorted(name for name, v in heal.items() if v == "true")),
        autoheal_off=tuple(sorted(name for name, v in heal.items() if v == "false")),
        mods=dict(sorted(mods.items())),
    )


_FACTS = msgspec.json.Decoder(SwarmFacts)


def decode_facts(body: bytes) -> SwarmFacts:
    """A controller's body -> facts; ``ValueError`` naming what is wrong."""
    if len(body) > MAX_FACTS_BYTES:
        raise ValueError(f"body larger than {MAX_FACTS_BYTES} bytes")
    try:
        return _FACTS.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ValueError(f"not Swarm facts: {e}") from None


def encode_facts(facts: SwarmFacts) -> bytes:
    return msgspec.json.encode(facts)
