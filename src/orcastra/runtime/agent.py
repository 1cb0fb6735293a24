"""``orcastra agent``: the node agent, one task per node (a global service with its node's Docker socket).

It acts only on its own node; with no node features enabled (this release) it only knows its node and says so:

- the probe thread (``EngineProbe``, owns ``EngineState``'s writes) asks its Engine ``GET /info`` every
  ``engine_check_interval_seconds`` while it answers, and retries after 1, 2, 4... s (up to that interval)
  while it does not: a dockerd restart is seen within seconds, and a dead socket costs one connect attempt per
  interval, never a spin. It logs once per change (reachable <-> unreachable), not per attempt;
- the HTTP listener (``orcastra.adapters.http``) serves ``GET /healthz`` (200 while the Engine answered
  recently or the agent is still starting, 503 once it has not for ``engine_unreachable_after_seconds``),
  ``GET /v1/report`` (``orcastra.features.agents.report.AgentReport``) and ``GET /metrics``;
- the main thread waits for SIGTERM/SIGINT.

The controller asks each agent for its report (pull: ``orcastra.runtime.agents``); the agent never calls out.

Small on purpose: ``orcastra agent`` validates the whole configuration (pydantic, every problem reported like
the other commands), then replaces itself (``exec``) with ``python -m orcastra.runtime.agent --options JSON``,
a process that imports only this module, the HTTP listener, msgspec and prometheus_client: no pydantic, no
docker SDK. docs/agent.md has the measured figures.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, ProcessCollector, generate_latest

from orcastra import __version__
from orcastra.adapters.http import ApiServer, HttpLimits, Request, Response, Route, json_response
from orcastra.adapters.local_engine import DEFAULT_DOCKER_HOST, LocalEngine, NodeIdentity
from orcastra.errors import OrcastraError
from orcastra.features.agents.facts import MAX_FACTS_BYTES
from orcastra.features.agents.report import REPORT_PATH, AgentReport, EngineContact, ProcessUsage, encode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from orcastra.config import Config
    from orcastra.runtime.agent_hygiene import NodeHygiene

log = logging.getLogger("orcastra.agent")

FIRST_RETRY_SECONDS = 1.0
TOKEN_ENV = "ORCASTRA_AGENT_TOKEN"
ENGINE_TIMEOUT_SECONDS = 5.0


class AgentOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent process runs with: the validated ``agent:`` and ``logging:`` sections, handed over the
    ``exec`` as JSON (so the agent process never imports the configuration's models)."""

    listen: str
    docker_host: str
    engine_check_interval_seconds: float
    engine_unreachable_after_seconds: float
    debug: bool = False
    log_format: str = "text"
    log_file: str | None = None
    audit_file: str | None = None  # ``audit.path``: with ``log_file``, Orcastra's own files for log rotation
    # The validated ``hygiene:`` section as plain JSON values (``orcastra.runtime.node_gc``/``node_autoheal``
    # turn it into the planners' policies).
    hygiene: dict[str, Any] = msgspec.field(default_factory=dict)
    # The validated ``mods:`` section as plain JSON values (``orcastra.runtime.mods.mod_options`` reads it).
    mods: dict[str, Any] = msgspec.field(default_factory=dict)


def options_from(config: Config, env: Mapping[str, str]) -> AgentOptions:
    a = config.agent
    return AgentOptions(
        listen=a.listen,
        docker_host=a.docker_host or env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
        engine_check_interval_seconds=a.engine_check_interval_seconds,
        engine_unreachable_after_seconds=a.engine_unreachable_after_seconds,
        hygiene=config.hygiene.model_dump(mode="json"),
        mods=config.mods.model_dump(mode="json"),
        debug=config.logging.debug,
        log_format=config.logging.format,
        log_file=str(config.logging.file) if config.logging.file is not None else None,
        audit_file=str(config.audit.path) if config.audit.path is not None else None,
    )


def exec_agent(options: AgentOptions, token: str | None = None) -> None:
    """Replace this process with the small agent process (same PID: a container's init stays the agent). The
    API token goes in the environment (``TOKEN_ENV``), never in the arguments: a host's ``ps`` shows those."""
    argv = [sys.executable, "-m", "orcastra.runtime.agent", "--options", msgspec.json.encode(options).decode()]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token:
        env[TOKEN_ENV] = token
    os.execve(sys.executable, argv, env)


# --- state --------------------------------------------------------------------------------------------------


class EngineState:
    """The last contact with the node's Engine. Written by the probe thread, read by the listener's threads."""

    def __init__(self, started_at: float, unreachable_after_seconds: float) -> None:
        self._lock = threading.Lock()
        self.started_at = started_at
        self._unreachable_after = unreachable_after_seconds
        self._identity: NodeIdentity | None = None
        self._last_contact_at: float | None = None
        self._error = ""

    def contact_ok(self, identity: NodeIdentity, now: float) -> None:
        with self._lock:
            self._identity, self._last_contact_at, self._error = identity, now, ""

    def contact_failed(self, error: str) -> None:
        with self._lock:
            self._error = error

    def healthy(self, now: float) -> bool:
        """The Engine answered within ``unreachable_after_seconds`` (or the agent started less than that ago)."""
        with self._lock:
            since = self._last_contact_at if self._last_contact_at is not None else self.started_at
        return now - since < self._unreachable_after

    def report(self, now: float) -> AgentReport:
        with self._lock:
            identity, last, error = self._identity, self._last_contact_at, self._error
        cpu = os.times()
        return AgentReport(
            node_id=identity.node_id if identity else "",
            hostname=identity.hostname if identity else "",
            version=__version__,
            started_at=self.started_at,
            uptime_seconds=max(0.0, now - self.started_at),
            engine=EngineContact(
                reachable=last is not None and not error,
                last_contact_at=last,
                api_version=identity.api_version if identity else "",
                swarm_state=identity.swarm_state if identity else "",
                error=error[:256],
            ),
            process=ProcessUsage(rss_bytes=rss_bytes(), cpu_seconds=cpu.user + cpu.system),
            features=(),
        )


def rss_bytes(pid: int | str = "self") -> int:
    """VmRSS of a process (Linux /proc), 0 where there is none."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --- the probe ----------------------------------------------------------------------------------------------


class EngineProbe(threading.Thread):
    """Asks the node's Engine who it is, on a long timer while it answers and a growing one while it does not.
    Owns the writes to ``state``; never raises out (an unexpected error is logged and counted as a failure)."""

    def __init__(self, engine: LocalEngine, state: EngineState, interval: float, stop: threading.Event) -> None:
        super().__init__(name="orcastra-agent-probe", daemon=True)
        self.engine, self.state, self.interval, self.stop = engine, state, interval, stop
        self.reachable: bool | None = None  # None: not tried yet

    def check_once(self) -> bool:
        try:
            identity = self.engine.identity()
        except Exception as e:  # OrcastraError for what the Engine does; anything else is a bug, still survived
            if not isinstance(e, OrcastraError):
                log.exception("engine probe failed unexpectedly")
            self.engine.forget_version()
            self.state.contact_failed(str(e))
            if self.reachable is not False:
                log.warning("engine %s unreachable: %s (retrying, logged again once it answers)", self.engine.host, e)
            self.reachable = False
            return False
        self.state.contact_ok(identity, time.time())
        if self.reachable is not True:
            log.info(
                "engine %s answers (API %s): node %s (%s), swarm %s",
                self.engine.host,
                identity.api_version,
                identity.node_id or "-",
                identity.hostname,
                identity.swarm_state or "-",
            )
        self.reachable = True
        return True

    def run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self.stop.is_set():
            if self.check_once():
                retry, delay = FIRST_RETRY_SECONDS, self.interval
            else:
                delay, retry = min(retry, self.interval), min(retry * 2, self.interval)
            self.stop.wait(delay)


# --- HTTP ---------------------------------------------------------------------------------------------------


class AgentMetrics:
    """The agent's own registry: Engine contact, build info, and the process collector (RSS, CPU, fds)."""

    def __init__(self, state: EngineState, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        info = Gauge(
            "orcastra_agent_build_info", "Agent build information; always 1.", ["version"], registry=self.registry
        )
        info.labels(version=__version__).set(1)
        up = Gauge("orcastra_agent_engine_up", "1 while the node's Engine answers, else 0.", registry=self.registry)
        up.set_function(lambda: 1.0 if state.report(time.time()).engine.reachable else 0.0)
        last = Gauge(
            "orcastra_agent_engine_last_contact_timestamp_seconds",
            "When the node's Engine last answered (Unix time); 0 before it ever did.",
            registry=self.registry,
        )
        last.set_function(lambda: state.report(time.time()).engine.last_contact_at or 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def agent_routes(
    state: EngineState, metrics: AgentMetrics, hygiene: NodeHygiene | None = None
) -> dict[tuple[str, str], Route]:
    def healthz(request: Request) -> Response:
        now = time.time()
        ok = state.healthy(now)
        engine = state.report(now).engine
        body = {"status": "ok" if ok else "degraded", "engine_reachable": engine.reachable, "error": engine.error}
        return json_response(200 if ok else 503, body)

    def report(request: Request) -> Response:
        now = time.time()
        current = state.report(now)
        if hygiene is not None:
            current = msgspec.structs.replace(current, **hygiene.report_fields(now))
        return Response(200, encode(current))

    def render_metrics(request: Request) -> Response:
        return Response(200, metrics.render(), CONTENT_TYPE_LATEST)

    routes = {("GET", "/healthz"): healthz, ("GET", REPORT_PATH): report, ("GET", "/metrics"): render_metrics}
    return routes | (hygiene.routes(report) if hygiene is not None else {})


# --- the process --------------------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    """The same lines as ``orcastra.runtime.wiring.JsonFormatter`` (not imported: it pulls the configuration)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower()}
        return json.dumps(fields | {"logger": record.name, "message": record.getMessage()})


def _setup_logging(options: AgentOptions) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if options.log_file:
        os.makedirs(os.path.dirname(options.log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(options.log_file, encoding="utf-8"))
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    for h in handlers:
        h.setFormatter(_JsonFormatter() if options.log_format == "json" else text)
    logging.basicConfig(level=logging.DEBUG if options.debug else logging.INFO, handlers=handlers, force=True)


def run_agent(options: AgentOptions, stop: threading.Event, token: str | None = None) -> None:
    """Serve, probe and keep the node clean until ``stop`` is set."""
    from orcastra.runtime.agent_hygiene import NodeHygiene

    state = EngineState(time.time(), options.engine_unreachable_after_seconds)
    engine = LocalEngine(options.docker_host, ENGINE_TIMEOUT_SECONDS)
    probe = EngineProbe(engine, state, options.engine_check_interval_seconds, stop)
    own_files = tuple(path for path in (options.log_file, options.audit_file) if path)
    hygiene_engine = LocalEngine(options.docker_host, ENGINE_TIMEOUT_SECONDS)
    hygiene = NodeHygiene(hygiene_engine, options.hygiene, token, stop, own_files=own_files, mods=options.mods)
    metrics = AgentMetrics(state)
    hygiene.register(metrics.registry)
    limits = HttpLimits(max_body_bytes=MAX_FACTS_BYTES, request_deadline_seconds=30.0)
    api = ApiServer(options.listen, builtin=agent_routes(state, metrics, hygiene), limits=limits)
    api.start()
    log.info("agent %s: listening on %s, engine %s", __version__, options.listen, options.docker_host)
    probe.start()
    hygiene.start()
    try:
        while not stop.wait(3600):  # the main thread only waits for the signal; the wait wakes on it
            pass
    finally:
        stop.set()
        api.stop()
        probe.join(timeout=ENGINE_TIMEOUT_SECONDS + 1)
        hygiene.join(timeout=ENGINE_TIMEOUT_SECONDS + 1)
        log.info("agent stopped")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--options":
        print("usage: python -m orcastra.runtime.agent --options JSON (started by `orcastra agent`)", file=sys.stderr)
        return 2
    try:
        options = msgspec.json.decode(args[1], type=AgentOptions)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        print(f"orcastra agent: invalid --options: {e}", file=sys.stderr)
        return 2
    _setup_logging(options)
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    token = os.environ.pop(TOKEN_ENV, None) or None
    try:
        run_agent(options, stop, token)
    except OrcastraError as e:
        print(f"orcastra agent: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
