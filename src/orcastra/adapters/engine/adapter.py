"""The Engine adapter: a negotiated-version client that reads snapshots and applies node/service updates.

Every call goes through ``_call`` which maps transport and HTTP failures onto Orcastra's error types
(``transport.status_error``) and counts calls, so a cycle's cost in Engine calls is measurable (one
snapshot = 3 or 4 list calls, whatever the number of services). How GETs reach the Engine (the client's own
connection pool, else requests) is ``transport``.

No exception of the transport leaves the adapter as it is: whatever the scheme (unix://, tcp://, TLS, ssh://)
and wherever it fails (connecting, negotiating the API version, sending, reading, opening the event stream),
a failure is an ``EngineUnreachableError`` (temporary: the loop tries again) whose message names the endpoint.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import docker
import docker.errors
import docker.tls
import msgspec
import requests.exceptions
import urllib3.exceptions

from orcastra.adapters.engine.configs import ConfigCalls
from orcastra.adapters.engine.parse import (
    JSON,
    decode_nodes,
    decode_services,
    decode_task_states,
    decode_tasks,
    parse_node,
)
from orcastra.adapters.engine.transport import (
    TRANSPORT_ERRORS,
    Client,
    ErrorStatus,
    describe_failure,
    filters_query,
    get_through_pool,
    get_through_requests,
    open_events,
    pool_for,
    probe_unix_socket,
    retry_after_seconds,
    ssh_url_with_config_port,
    status_error,
)
from orcastra.domain.snapshot import LIVE_DESIRED_STATES, Node, Service, Snapshot, Task
from orcastra.errors import (
    EngineConflictError,
    EngineError,
    EngineNotFoundError,
    EngineUnreachableError,
    cut,
)

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
T = TypeVar("T")


@dataclass(frozen=True)
class EngineSettings:
    """How to reach one Engine endpoint (unix://, tcp:// with optional TLS, ssh://)."""

    host: str = DEFAULT_DOCKER_HOST
    timeout_seconds: float = 30.0
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    tls_verify: bool = True
    tls: bool = False


@dataclass(frozen=True)
class EngineEvent:
    """One Engine event (GET /events), typed at the boundary."""

    type: str  # "node" | "service" | "container" | ...
    action: str  # "create" | "update" | "remove" | "start" | "die" | ...
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    time_nano: int = 0


def _is_closed(pool: Any) -> bool:
    """A urllib3 pool whose ``close()`` ran (it drops its queue of connections)."""
    return pool is not None and getattr(pool, "pool", True) is None


class EngineAdapter(ConfigCalls):
    """Typed access to one Engine endpoint (the Swarm config calls come from ``ConfigCalls``). Not thread-safe
    for concurrent calls except ``events``."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()
        self.calls = 0  # Engine API calls made (for metrics and benchmarks)
        self.bytes_read = 0  # bytes of answers read by GETs (for benchmarks)
        self._pool: tuple[Any, Any] | None = None  # (client, its urllib3 pool for GETs, or None)

    # --- connection ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        s = self.settings
        # ssh:// goes through paramiko (docker[ssh]): one SSH connection per adapter, reused by every call,
        # closed with it; it reads ~/.ssh/config (HostName, Port, User, IdentityFile, ProxyCommand) and
        # refuses hosts missing from ~/.ssh/known_hosts. (The SDK's shell-out mode starts an `ssh` per call
        # and leaks them, and forces port 22 over the config's Port.) The SSH connection is made while the
        # client is built, so its failures are paramiko's and the socket's own (TRANSPORT_ERRORS).
        try:
            base_url = ssh_url_with_config_port(s.host) if s.host.startswith("ssh://") else s.host
            if base_url.startswith("unix://"):
                probe_unix_socket(base_url, s.timeout_seconds)
            kwargs: dict[str, Any] = {"base_url": base_url, "timeout": s.timeout_seconds}
            if s.tls or s.tls_ca_cert or s.tls_client_cert:
                cert = (s.tls_client_cert, s.tls_client_key) if s.tls_client_cert and s.tls_client_key else None
                kwargs["tls"] = docker.tls.TLSConfig(client_cert=cert, ca_cert=s.tls_ca_cert, verify=s.tls_verify)
                if base_url.startswith("tcp://"):
                    kwargs["base_url"] = "https://" + base_url[len("tcp://") :]
            self.calls += 1
            self._client = Client.connect(**kwargs)
        except (docker.errors.DockerException, *TRANSPORT_ERRORS) as e:
            raise EngineUnreachableError(
                f"cannot reach the Docker Engine at {s.host}: {describe_failure(e)}", endpoint=s.host
            ) from e
        return self._client

    def close(self) -> None:
        client, self._client, self._pool = self._client, None, None
        if client is not None:
            try:
                client.close()
            except Exception as e:  # closing a broken connection must not hide why it broke
                log.debug("closing the client of %s: %s", self.settings.host, e)

    def __enter__(self) -> EngineAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api_version(self) -> str:
        return str(self._connect().api_version)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        host = self.settings.host
        with self._lock:
            client = self._connect()
            self.calls += 1
            try:
                return fn(client)
            except docker.errors.APIError as e:
                headers = e.response.headers if e.response is not None else {}
                retry_after = retry_after_seconds(headers.get("Retry-After"))
                raise status_error(what, host, e.status_code, str(e.explanation or e), retry_after) from e
            except ErrorStatus as e:
                raise status_error(what, host, e.status, e.message, e.retry_after) from e
            except requests.exceptions.InvalidJSONError as e:
                # A whole answer came, with a success status, but it is not the Engine's JSON.
                raise EngineError(
                    f"{what}: the answer of {host} is not valid JSON: {cut(str(e))}", endpoint=host
                ) from e
            except TRANSPORT_ERRORS as e:
                self.close()  # the next call connects afresh
                raise EngineUnreachableError(
                    f"{what}: cannot reach the Docker Engine at {host}: {describe_failure(e)}", endpoint=host
                ) from e
            except docker.errors.DockerException as e:
                raise EngineError(f"{what} failed on {host}: {cut(str(e))}", endpoint=host) from e

    # --- reads ------------------------------------------------------------------------------------

    def ping(self) -> bool:
        return bool(self._call("ping", lambda c: c.ping()))

    def info(self) -> JSON:
        result: JSON = self._call("info", lambda c: c.info())
        return result

    def snapshot(self, history: Callable[[Snapshot], Collection[str]] | None = None) -> Snapshot:
        """Nodes, services and tasks in a constant number of list calls.

        Without ``history``: three calls, every task Swarm keeps (running ones and the history it retains,
        ``TaskHistoryRetentionLimit`` per slot). With it: GET /nodes, GET /services, the tasks desired to run
        (``desired-state`` running or ready: a task Swarm restarts waits in ``ready`` for its restart delay);
        then ``history`` is asked, on nodes and services (no tasks yet), which service IDs need their full task
        history (anchor groups, for restart backoff), and one more GET /tasks filtered to them reads it
        (``desired-state=shutdown``: failed, rejected and replaced tasks). Four calls, and a cycle no longer
        decodes every finished task of every service.
        """
        # Decoding a large Swarm still creates many short-lived objects; the cyclic GC would run full
        # collections over them for nothing (none form cycles). Paused only for this section.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            nodes = decode_nodes(self._get_bytes("list nodes", "/nodes"))
            services = decode_services(self._get_bytes("list services", "/services"))

            def with_every_task() -> Snapshot:
                return Snapshot(nodes, services, decode_tasks(self._get_bytes("list tasks", "/tasks")), time.time())

            if history is None:
                return with_every_task()
            running = decode_tasks(
                self._get_bytes("list running tasks", "/tasks", {"desired-state": sorted(LIVE_DESIRED_STATES)}),
                "list running tasks",
            )
            wanted = sorted(set(history(Snapshot(nodes, services, ()))))
            if not wanted:
                return Snapshot(nodes, services, running, time.time())
            try:
                body = self._get_bytes(
                    "list task history", "/tasks", {"service": wanted, "desired-state": ["shutdown"]}
                )
            except EngineNotFoundError:
                # A service went away between the two reads (the Engine refuses a filter naming an unknown
                # service): read every task instead, correct at the cost of a bigger answer.
                return with_every_task()
            # A task that went from running to shutdown between the two reads is kept as the first read saw it.
            seen = {t.id for t in running}
            older = tuple(t for t in decode_tasks(body, "list task history") if t.id not in seen)
            return Snapshot(nodes, services, running + older, time.time())
        finally:
            if gc_was_enabled:
                gc.enable()

    def _get_json(self, what: str, path: str) -> JSON:
        """One GET of an object (inspect), decoded to plain dicts and lists (msgspec, no schema)."""
        body = self._get_bytes(what, path)
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError as e:
            raise EngineError(f"{what}: the Engine's answer is not valid JSON: {e}", endpoint=self.settings.host) from e
        if not isinstance(decoded, dict):
            raise EngineError(f"{what}: expected a JSON object from the Engine", endpoint=self.settings.host)
        return decoded

    def _get_bytes(self, what: str, path: str, filters: Mapping[str, list[str]] | None = None) -> bytes:
        """One GET (a list, or an inspect) with optional ``filters``; the raw body, for ``parse.decode_*``
        (msgspec) to read. Straight on the transport's pool when it can be (``transport.get_through_pool``), else
        through requests as the SDK's own methods do."""
        params = filters_query(tuple((k, tuple(v)) for k, v in filters.items())) if filters else None

        def get(c: Any) -> bytes:
            pool = self._pool_for(c)
            if pool is None:
                body = get_through_requests(c, path, params)
            else:
                try:
                    body = get_through_pool(c, pool, path, params)
                except urllib3.exceptions.ClosedPoolError:
                    # Closed between the check in _pool_for and this call (see there): once more, on a new pool.
                    self._pool = None
                    body = get_through_pool(c, self._pool_for(c), path, params)
            self.bytes_read += len(body)
            return body

        return self._call(what, get)

    @property
    def reads_through_pool(self) -> bool:
        """Whether GETs go straight to the transport's connection pool (after the first call)."""
        return self._pool is not None and self._pool[1] is not None

    def _pool_for(self, c: Any) -> Any:
        """The client's urllib3 pool for GETs (``transport.pool_for``), looked up once per client and again
        once the SDK closed it; None: GETs go through requests.

        The SDK's transport adapters keep their pools in an LRU of 25 keyed by the whole URL, and close the one
        they evict. Every write has a URL of its own (``/services/ID/update?version=N``), so after enough writes
        the pool of ``/`` (which these GETs use without the SDK seeing it used) is evicted and closed under us:
        every later GET failed with ClosedPoolError until the connection was dropped (seen on the lab: a leader
        whose commands and cycles failed with "Pool is closed")."""
        if self._pool is not None and self._pool[0] is c and not _is_closed(self._pool[1]):
            return self._pool[1]
        pool = pool_for(c, self.settings.host)
        self._pool = (c, pool)
        return pool

    def list_tasks(self, filters: Mapping[str, list[str]]) -> tuple[Task, ...]:
        """One filtered GET /tasks."""
        return decode_tasks(self._get_bytes("list tasks", "/tasks", filters))

    def task_states(self, filters: Mapping[str, list[str]]) -> frozenset[tuple[str, str, str, str]]:
        """One filtered GET /tasks reduced to (id, node, state, desired state) per task: the cheap check
        between full snapshots (the task poll), decoding only those four fields."""
        return decode_task_states(self._get_bytes("poll tasks", "/tasks", filters), "poll tasks")

    def find_service(self, name: str) -> Service | None:
        """The service called exactly ``name`` (the Engine's name filter matches prefixes), or None."""
        what = f"find service {name}"
        for svc in decode_services(self._get_bytes(what, "/services", {"name": [name]}), what):
            if svc.name == name:
                return svc
        return None

    def create_placeholder_service(self, name: str, labels: Mapping[str, str], image: str) -> None:
        """A service with 0 replicas: it runs nothing and exists only to hold labels (e.g. the leader lease).
        A name already taken is a conflict (409)."""
        self._call(
            f"create service {name}",
            lambda c: c.create_service(
                {"ContainerSpec": {"Image": image}},
                name=name,
                labels=dict(labels),
                mode={"Replicated": {"Replicas": 0}},
            ),
        )

    def inspect_node(self, node_id: str) -> Node:
        raw = self._get_json(f"inspect node {node_id}", f"/nodes/{urllib.parse.quote(node_id, safe='')}")
        return parse_node(raw)

    # --- writes -----------------------------------------------------------------------------------

    def update_node_spec(self, node: Node, labels: Mapping[str, str], availability: str | None = None) -> None:
        """Write a node's spec with new labels, at the node's ``version`` (optimistic concurrency).

        The whole NodeSpec is sent (Name, Labels, Role, Availability), as the Engine replaces it; a stale
        ``version`` raises EngineConflictError and nothing is written.
        """
        spec: JSON = {"Labels": dict(labels), "Role": node.role, "Availability": availability or node.availability}
        if node.spec_name:
            spec["Name"] = node.spec_name
        self._call(
            f"update node {node.hostname}",
            lambda c: c.update_node(node.id, node.version, node_spec=spec),
        )

    def update_service(  # noqa: PLR0913 - keyword-only options, one per field of the UpdateService action
        self,
        service: Service,
        *,
        add_constraints: tuple[str, ...] = (),
        remove_constraints: tuple[str, ...] = (),
        set_labels: Mapping[str, str] | None = None,
        remove_labels: tuple[str, ...] = (),
        force: bool = False,
    ) -> None:
        """Change a service at the snapshot's ``version``: its current spec is read (one inspect), checked
        to still be at that version (else EngineConflictError, nothing written), changed, and written back
        with that version, so a concurrent ``docker stack deploy`` or another writer is never overwritten."""
        raw = self._get_json(f"inspect service {service.name}", f"/services/{urllib.parse.quote(service.id, safe='')}")
        current = int((raw.get("Version") or {}).get("Index") or 0)
        if current != service.version:
            raise EngineConflictError(
                f"service {service.name} changed since the snapshot (version {service.version} -> {current})",
                endpoint=self.settings.host,
            )
        spec: JSON = raw.get("Spec") or {}
        template: JSON = spec.setdefault("TaskTemplate", {})
        if add_constraints or remove_constraints:
            placement: JSON = template.setdefault("Placement", {}) or {}
            template["Placement"] = placement
            drop = {"".join(c.split()) for c in remove_constraints}
            constraints = [c for c in placement.get("Constraints") or [] if "".join(c.split()) not in drop]
            constraints += [c for c in add_constraints if c not in constraints]
            placement["Constraints"] = constraints
        labels = dict(spec.get("Labels") or {})
        for key in remove_labels:
            labels.pop(key, None)
        labels.update(set_labels or {})
        spec["Labels"] = labels
        if force:
            # ForceUpdate changing is what `docker service update --force` sends: Swarm replaces every
            # task, following the service's update_config.
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        self._call(
            f"update service {service.name}",
            lambda c: c.update_service(
                service.id,
                service.version,
                task_template=template,
                name=spec.get("Name"),
                labels=labels,
                mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            ),
        )

    def swarm_labels(self) -> dict[str, str]:
        return self.swarm_labels_with_version()[0]

    def swarm_labels_with_version(self) -> tuple[dict[str, str], int]:
        """The Swarm's own labels and the Swarm object's ``version``: what ``set_swarm_labels`` compares with."""
        raw = self._inspect_swarm()
        return _swarm_labels(raw), _swarm_version(raw)

    def set_swarm_label(self, key: str, value: str | None) -> None:
        """Set (or remove, with None) one label of the Swarm itself, at the Swarm's current ``version``: the
        place for cluster-wide settings every Orcastra instance shares (e.g. paused). Last writer wins on the
        key; a write racing another one fails with EngineConflictError."""
        raw = self._inspect_swarm()
        self._write_swarm_labels(raw, {key: value}, _swarm_version(raw))

    def set_swarm_labels(self, changes: Mapping[str, str | None], version: int) -> None:
        """Compare-and-set: apply ``changes`` (None removes a key) to the Swarm's labels only if the Swarm is
        still at ``version`` (from ``swarm_labels_with_version``). A Swarm changed since raises
        EngineConflictError and nothing is written; the write itself is sent at that version, so a change in
        between is rejected by the Swarm ("update out of sequence") with the same error."""
        raw = self._inspect_swarm()
        current = _swarm_version(raw)
        if current != version:
            raise EngineConflictError(
                f"the Swarm changed since its labels were read (version {version} -> {current})",
                endpoint=self.settings.host,
            )
        self._write_swarm_labels(raw, changes, version)

    def _inspect_swarm(self) -> JSON:
        return self._get_json("inspect swarm", "/swarm")

    def _write_swarm_labels(self, raw: JSON, changes: Mapping[str, str | None], version: int) -> None:
        # POST /swarm/update replaces the whole SwarmSpec: send back the spec as read, labels changed.
        spec: JSON = dict(raw.get("Spec") or {})
        labels = _swarm_labels(raw)
        for key, value in changes.items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        spec["Labels"] = labels
        self._call(
            "update swarm",
            lambda c: c._result(c._post_json(c._url("/swarm/update"), data=spec, params={"version": version})),
        )

    # --- events -----------------------------------------------------------------------------------

    def events(self, filters: Mapping[str, list[str]], since: float | None = None) -> EventStream:
        """Open GET /events with filters; iterate the stream, close it to stop (from any thread). Opening
        fails like any other call (``_call``); a stream that fails later just ends (``EventStream``)."""
        timeout = self.settings.timeout_seconds
        return EventStream(self._call("watch events", lambda c: open_events(c, dict(filters), since, timeout)))


def _swarm_labels(raw: JSON) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((raw.get("Spec") or {}).get("Labels") or {}).items()}


def _swarm_version(raw: JSON) -> int:
    return int((raw.get("Version") or {}).get("Index") or 0)


class EventStream:
    """An open /events stream yielding EngineEvent; ``close()`` ends iteration."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[EngineEvent]:
        try:
            for raw in self._stream:
                actor = raw.get("Actor") or {}
                yield EngineEvent(
                    type=str(raw.get("Type") or ""),
                    action=str(raw.get("Action") or raw.get("status") or ""),
                    actor_id=str(actor.get("ID") or raw.get("id") or ""),
                    attributes={str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()},
                    time_nano=int(raw.get("timeNano") or 0),
                )
        except (*TRANSPORT_ERRORS, docker.errors.DockerException, AttributeError, ValueError) as e:
            # A closed stream (our own close() or the daemon going away, whatever the scheme) ends iteration
            # quietly; the watcher re-opens it and a resync covers whatever was missed meanwhile.
            log.debug("event stream ended: %s", describe_failure(e))

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception as e:  # closing a dead stream must never take the watcher down
            log.debug("closing event stream: %s", e)
