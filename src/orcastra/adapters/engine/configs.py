"""Swarm configs through the Engine API: list, create, update labels, remove (``ConfigCalls``, mixed into
``EngineAdapter``).

Engine API (v1.30+): ``GET /configs?filters=`` lists configs with their Spec, Data included (base64);
``POST /configs/create`` takes ``{Name, Labels, Data}`` (409 when the name is taken);
``POST /configs/{id}/update?version=N`` takes the whole ConfigSpec, "currently, only the Labels field can be
updated; all other fields must remain unchanged" (a stale version is "update out of sequence");
``DELETE /configs/{id}``. The Swarm keeps configs in its Raft store, so any manager answers the same.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from orcastra.domain.configs import SwarmConfig
from orcastra.domain.snapshot import frozen_labels
from orcastra.errors import EngineConflictError, EngineError

T = TypeVar("T")


class _Version(msgspec.Struct):
    Index: int = 0


class _ConfigSpec(msgspec.Struct):
    Name: str = ""
    Labels: dict[str, str | None] | None = None
    Data: bytes = b""  # msgspec decodes base64 into bytes


class RawConfig(msgspec.Struct):
    ID: str = ""
    Version: _Version | None = None
    CreatedAt: datetime | None = None
    Spec: _ConfigSpec | None = None


_LIST = msgspec.json.Decoder(list[RawConfig])


def config_from(raw: RawConfig) -> SwarmConfig:
    spec = raw.Spec or _ConfigSpec()
    return SwarmConfig(
        id=raw.ID,
        version=raw.Version.Index if raw.Version else 0,
        name=spec.Name,
        labels=frozen_labels({k: v or "" for k, v in (spec.Labels or {}).items()}),
        data=spec.Data,
        created_at=raw.CreatedAt.timestamp() if raw.CreatedAt else 0.0,
    )


def decode_configs(body: bytes, what: str = "list configs") -> tuple[SwarmConfig, ...]:
    try:
        return tuple(config_from(r) for r in _LIST.decode(body))
    except msgspec.DecodeError as e:  # a ValidationError too
        raise EngineError(f"{what}: unexpected answer from the Engine: {e}") from e


class ConfigCalls:
    """The config calls, written against the adapter's ``_call`` / ``_get_bytes`` / ``_get_json``."""

    settings: Any
    _call: Callable[..., Any]
    _get_bytes: Callable[..., bytes]
    _get_json: Callable[..., dict[str, Any]]

    def list_configs(self, filters: Mapping[str, list[str]]) -> tuple[SwarmConfig, ...]:
        """One filtered GET /configs (e.g. ``{"label": ["orcastra.command"]}``)."""
        return decode_configs(self._get_bytes("list configs", "/configs", filters))

    def create_config(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        """POST /configs/create; returns the new config's ID. A name already taken is a conflict (409)."""
        body = {"Name": name, "Labels": dict(labels), "Data": base64.b64encode(data).decode("ascii")}
        result = self._call(
            f"create config {name}",
            lambda c: c._result(c._post_json(c._url("/configs/create"), data=body), True),
        )
        return str((result or {}).get("ID") or "")

    def update_config_labels(
        self, config_id: str, version: int, set_labels: Mapping[str, str], remove_labels: tuple[str, ...] = ()
    ) -> None:
        """Change a config's labels at ``version``: read it (one inspect), check it is still at that version
        (else EngineConflictError, nothing written), and write its spec back with the labels changed, sent at
        that version (a write in between is refused by the Swarm with the same error)."""
        ref = urllib.parse.quote(config_id, safe="")
        raw = self._get_json(f"inspect config {config_id}", f"/configs/{ref}")
        current = int((raw.get("Version") or {}).get("Index") or 0)
        if current != version:
            raise EngineConflictError(
                f"config {config_id} changed since it was read (version {version} -> {current})",
                endpoint=str(self.settings.host),
            )
        spec: dict[str, Any] = dict(raw.get("Spec") or {})
        labels = {str(k): str(v) for k, v in (spec.get("Labels") or {}).items() if k not in remove_labels}
        labels.update(set_labels)
        spec["Labels"] = labels
        self._call(
            f"update config {config_id}",
            lambda c: c._result(
                c._post_json(c._url("/configs/{0}/update", config_id), data=spec, params={"version": version})
            ),
        )

    def remove_config(self, config_id: str) -> None:
        self._call(f"remove config {config_id}", lambda c: c.remove_config(config_id))
