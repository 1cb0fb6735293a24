"""The ``orcastra`` script's entry point. ``orcastra health`` is answered here, without loading the CLI.

A container's HEALTHCHECK runs ``orcastra health`` every few seconds for as long as the container lives, and
its CPU is the container's: through the full CLI (click, pydantic, the Docker SDK, the plugins) one check cost
~0.8 s of CPU, i.e. ~8 % of a core at a 10 s interval, far more than an idle controller or agent itself. Here a
check reads only the listen address from the config file (PyYAML) and asks ``/healthz`` with the standard
library: ~50 ms. Validating the configuration is the daemon's job at start (a broken one never runs); the probe
only asks whether the running process is healthy. Every other command line goes to the CLI unchanged.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from pathlib import Path

CONFIG_ENV = "ORCASTRA_CONFIG"
DEFAULT_CONFIG = "/etc/orcastra/orcastra.yml"  # as orcastra.config.load.DEFAULT_CONFIG_PATH
DEFAULT_LISTEN = {"api": "127.0.0.1:9180", "agent": "0.0.0.0:9181"}  # as the config model's defaults
TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 64 * 1024


def health_args(args: list[str]) -> tuple[str | None, str] | None:
    """(config path or None, "api" | "agent") when ``args`` is a health probe the fast path answers:
    ``health [--agent]`` with ``--config F`` / ``--config=F`` before or after; None for anything else."""
    config: str | None = None
    section = "api"
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" and i + 1 < len(args):
            config, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            config = arg.removeprefix("--config=")
        elif arg == "--agent":
            section = "agent"
        else:
            words.append(arg)
        i += 1
    return (config, section) if words == ["health"] else None


def listen_address(config: str | None, section: str, environ: dict[str, str]) -> str:
    """``<section>.listen`` from the config file; the default when the file or the key is missing."""
    import yaml

    path = Path(config or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        document = None
    part = document.get(section) if isinstance(document, dict) else None
    listen = part.get("listen") if isinstance(part, dict) else None
    return listen if isinstance(listen, str) else DEFAULT_LISTEN[section]


def probe(listen: str) -> tuple[int, str]:
    """GET /healthz on the address ``listen`` binds (a wildcard is asked on loopback): (0|1, summary)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        return 1, f"invalid listen address {listen!r}"
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_SECONDS)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read(MAX_ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as e:
        return 1, f"no answer from Orcastra at {host}:{port}/healthz: {type(e).__name__}"
    finally:
        conn.close()
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    fields = payload if isinstance(payload, dict) else {}
    summary = ", ".join(f"{k} {fields[k]}" for k in ("status", "role", "last_error") if fields.get(k) is not None)
    if response.status == 200:
        return 0, summary or "ok"
    return 1, f"HTTP {response.status}: {summary or 'unhealthy'}"


def main() -> None:
    """The ``orcastra`` script."""
    fast = health_args(sys.argv[1:])
    if fast is not None:
        code, text = probe(listen_address(fast[0], fast[1], dict(os.environ)))
        print(text, file=sys.stderr if code else sys.stdout)
        sys.exit(code)
    from orcastra.cli import main as cli_main

    cli_main()
