"""Building collaborators from the configuration: the audit log, the executor, logging (Engine adapters come
from ``orcastra.adapters.engine.connect``).

The one place that turns a Config into live objects, so ``run``, ``plan`` and ``status`` are wired alike.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping

from orcastra.adapters.engine.api import EngineApi
from orcastra.config import Config
from orcastra.runtime.bootstrap import engine_connector
from orcastra.runtime.executor import AuditLog, DryRunExecutor, EngineExecutor, Executor, OutcomeHook


def make_executor(  # noqa: PLR0913 - what the executor is built from, keyword-only
    config: Config,
    engine: EngineApi,
    *,
    dry_run: bool,
    audit: AuditLog,
    on_outcome: OutcomeHook | None = None,
    current_config: Callable[[], Config] | None = None,
) -> Executor:
    """The one executor type for a run: real, or the dry run's (chosen here, once)."""
    if dry_run:
        return DryRunExecutor(audit, on_outcome)
    latest = current_config or (lambda: config)

    def endpoints() -> Mapping[str, str]:
        return {name: n.endpoint for name, n in latest().nodes.items() if n.endpoint}

    return EngineExecutor(engine, audit, on_outcome, connect=engine_connector(config), endpoints=endpoints)


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
    # paramiko logs every failed ssh handshake as an ERROR with a traceback; the adapter reports the same failure
    # as "unreachable" with the endpoint, once, so paramiko's own account is left out.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
