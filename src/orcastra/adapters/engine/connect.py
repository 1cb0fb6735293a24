"""Engine adapters from the configuration: the manager's (``docker.host``, else ``DOCKER_HOST``, else the local
socket) and each node's own (``nodes.<host>.endpoint``, with the config's TLS files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from orcastra.adapters.engine.adapter import DEFAULT_DOCKER_HOST, EngineAdapter, EngineSettings
from orcastra.config import Config


def engine_settings(config: Config, env: Mapping[str, str]) -> EngineSettings:
    """The file's docker.host wins; else DOCKER_HOST (+ DOCKER_TLS_VERIFY/DOCKER_CERT_PATH); else the socket."""
    d = config.docker
    host = d.host or env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if d.tls is not None:
        return EngineSettings(
            host=host,
            timeout_seconds=d.timeout_seconds,
            tls=True,
            tls_ca_cert=str(d.tls.ca_cert) if d.tls.ca_cert else None,
            tls_client_cert=str(d.tls.client_cert) if d.tls.client_cert else None,
            tls_client_key=str(d.tls.client_key) if d.tls.client_key else None,
            tls_verify=d.tls.verify,
        )
    cert_path = env.get("DOCKER_CERT_PATH")
    if not d.host and env.get("DOCKER_TLS_VERIFY") and cert_path:
        p = Path(cert_path)
        return EngineSettings(
            host=host,
            timeout_seconds=d.timeout_seconds,
            tls=True,
            tls_ca_cert=str(p / "ca.pem"),
            tls_client_cert=str(p / "cert.pem"),
            tls_client_key=str(p / "key.pem"),
        )
    return EngineSettings(host=host, timeout_seconds=d.timeout_seconds)


def make_engine(config: Config, env: Mapping[str, str] | None = None) -> EngineAdapter:
    return EngineAdapter(engine_settings(config, os.environ if env is None else env))


def node_engine(config: Config, endpoint: str) -> EngineAdapter:
    """An adapter for one node's own Engine (``nodes.<host>.endpoint``), with the config's TLS files."""
    base = engine_settings(config, {})
    return EngineAdapter(replace(base, host=endpoint, tls=base.tls and endpoint.startswith("tcp://")))
