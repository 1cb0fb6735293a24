"""Building collaborators from the configuration: the Engine adapter, the audit log, the executor, logging.

The one place that turns a Config into live objects, so ``run``, ``plan`` and ``status`` are wired alike.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.adapters.engine.adapter import DEFAULT_DOCKER_HOST
from orcastra.config import Config
from orcastra.runtime.executor import AuditLog, DryRunExecutor, EngineExecutor, Executor, OutcomeHook


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


def make_executor(
    config: Config,
    engine: EngineAdapter,
    *,
    dry_run: bool,
    on_outcome: OutcomeHook | None = None,
    audit: AuditLog | None = None,
) -> Executor:
    audit = audit or AuditLog(path=config.audit.path)
    if dry_run:
        return DryRunExecutor(audit, on_outcome)
    return EngineExecutor(engine, audit, on_outcome)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def setup_logging(config: Config) -> None:
    level = logging.DEBUG if config.logging.debug else logging.INFO
    if config.logging.format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.logging.file is not None:
        config.logging.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.logging.file, encoding="utf-8"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(level)
    # The Docker SDK and urllib3 are chatty at DEBUG; their detail is rarely what an operator needs.
    for noisy in ("urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
