"""A fake Docker Engine (a Swarm manager, API v1.41) in one process: reads, writes and events.

Why: Orcastra's cost per reconcile cycle has to be measured at sizes the local lab cannot hold (1,000 and 5,000
services of 3 tasks), and its loop, executor, leader lease and reconcile cycle have to be tested against
something that answers like a manager: optimistic concurrency, the orchestrator's reaction to a write, events.
This module is standard library only and imports nothing from ``orcastra``.

The cluster (``Cluster``) is generated steady and colocated, with objects shaped as in the Engine API reference
(nodes, services and tasks with Spec, Version.Index, Status, Description.Hostname, Placement.Constraints,
Labels, NetworksAttachments...), so the bytes parsed are close to a real manager's:
- N nodes (node1 is the leader manager, the others workers), S replicated services of 3 tasks each, plus one
  ``shutdown`` history task per slot (Swarm keeps task history, ``TaskHistoryRetentionLimit``);
- G anchor groups: an anchor pinned to one node by a hostname constraint, and 2-3 dependents that carry
  ``orcastra.follow=<anchor>`` and the ``node.labels.orcastra.anchor.<stack>_<anchor>==true`` constraint, all
  running on the anchor's node, which carries the anchor label; the other services (``node.role == worker``)
  go round the workers. Orcastra has nothing to do (the idle cost).

The state is mutable, under one lock. Every change bumps one cluster-wide index (as swarmkit's raft index) into
the changed object's ``Version.Index`` and sets its ``UpdatedAt``. What a manager does after a write is done at
once, before the answer, deterministically (swarmkit does it moments later):
- the orchestrator keeps ``Replicas`` tasks per replicated service (one per eligible node for a global one):
  a task that failed or was rejected, or sits on a node that went down or is drained, is replaced (old task
  ``DesiredState`` shutdown; on a down node its observed state stays ``running`` until the node is back);
- the scheduler places a new task on a ``ready`` + ``active`` node that satisfies the constraints
  (``node.id``, ``node.hostname``, ``node.role``, ``node.platform.*``, ``node.labels.*``, ``engine.labels.*``
  with ``==``/``!=``, values case-insensitive), the node with the fewest tasks of the service first, then the
  fewest tasks, then node order; if none fits, the task stays ``pending`` with Err
  ``no suitable node (...)`` and is placed as soon as a node fits;
- the updater replaces the tasks whose spec differs from the new TaskTemplate (``ForceUpdate`` changed, an
  image or constraint changed...), except, as swarmkit does, when only the constraints changed and the task's
  node still satisfies them; it emits ``updatestate.new=updating`` then ``completed``;
- the constraint enforcer rejects the running tasks of an updated (active) node that no longer satisfies their
  service's constraints (Status ``rejected``, Err ``assigned node no longer meets constraints``); the
  orchestrator replaces them.

Endpoints (with or without a ``/vX.Y`` prefix):
- reads: GET /_ping (and HEAD), /version, /info, /swarm, /nodes, /nodes/<ref>, /services (filters: id, name,
  label), /services/<ref>, /tasks (filters: id, name, service, node, desired-state, label), /tasks/<id>;
  ``<ref>`` is an ID, a name (a node's hostname) or an unambiguous ID prefix, as the Engine resolves them;
- writes: POST /nodes/<ref>/update?version=N (NodeSpec; 200), POST /services/create (ServiceSpec; 201 {"ID"},
  409 when the name is taken), POST /services/<ref>/update?version=N (ServiceSpec; 200 {}), DELETE
  /services/<ref> (200), POST /swarm/update?version=N (SwarmSpec; 200; rotateWorkerToken/rotateManagerToken).
  A stale version is a 500 ``rpc error: code = Unknown desc = update out of sequence`` (a manager's answer), an
  unknown object a 404 ``node X not found`` / ``service X not found``, a version that is no number a 400;
  other writes answer 501;
- GET /events (since, until, filters: type, event, scope, node, service, container, label...): newline-delimited
  JSON messages, chunked, held open until the client hangs up, ``until`` passes or the server stops: ``node``
  and ``service`` events (scope swarm; create/update/remove, Actor.Attributes ``name`` and the changes:
  ``availability``/``role``/``state`` .old/.new for nodes, ``image``/``replicas``/``updatestate`` .old/.new for
  services) and ``container`` start/die events for the tasks (scope local; from every node: one fake Engine
  stands for them all). The last 256 are replayed for ``since``; every subscriber gets every event.
- configs: GET /configs (filters: id, name, label), GET /configs/<ref>, POST /configs/create (201 {"ID"}, 409
  when the name is taken), POST /configs/<ref>/update?version=N (only Labels may change; a stale version is
  out of sequence), DELETE /configs/<ref> (204); ``config`` create/update/remove events;
- the benchmark's own: GET /_bench/stats and POST /_bench/reset (requests and bytes sent, per path).

Test hooks on ``FakeEngine`` (thread-safe): ``set_node_state``, ``move_task``, ``fail_next``, ``writes``,
``events``, and the ``swarm``/``node``/``service``/``tasks`` accessors (copies of the current JSON).

Usage: ``with FakeEngine(Cluster(services=1000, groups=50)) as fake: fake.docker_host`` in a process, or
``python -m orcastra_lab.fake_engine --services 1000 --groups 50`` (prints ``docker_host=tcp://127.0.0.1:PORT``,
serves until killed).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import queue
import re
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

JSON = dict[str, Any]

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
ENGINE_VERSION = "20.10.24"
STACK = "bench"
IMAGE = "registry.local:5000/orcastra/busybox:lab@sha256:" + "ab" * 32
CREATED = "2026-11-24T10:00:00.000000000Z"
TASKS_PER_SERVICE = 3
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
EVENTS_POLL_SECONDS = 0.2  # how often an idle event stream looks whether its client hung up
EVENTS_HISTORY = 256  # the Engine keeps as many events for ``since`` (daemon/events: eventsLimit)

# What a manager answers (swarmkit's gRPC errors as the Engine passes them on; the status per gRPC code).
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"
NAME_CONFLICT = (
    "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {} already exists"
)
RENAME = "rpc error: code = Unimplemented desc = renaming services is not supported"
MODE_CHANGE = "rpc error: code = Unimplemented desc = service mode change is not allowed"
NO_IMAGE = "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided"
LAST_MANAGER = "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm"

TERMINAL = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
NODE_STATES = ("ready", "down")


@dataclass(frozen=True)
class Cluster:
    """What the fake Swarm holds. ``groups`` is capped so that every group fits (anchor + 2-3 dependents)."""

    nodes: int = 3
    services: int = 10
    groups: int = 2
    replicas: int = TASKS_PER_SERVICE
    history: bool = True  # one shutdown task per slot, as Swarm keeps

    @property
    def group_count(self) -> int:
        return max(0, min(self.groups, self.services // 4))


def _id(kind: str, n: int, length: int = 25) -> str:
    """Stable Swarm-like object IDs (swarmkit IDs are 25 lower-case base-36 characters)."""
    digest = hashlib.sha256(f"{kind}:{n}".encode()).hexdigest()
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    value = int(digest, 16)
    out = []
    for _ in range(length):
        value, r = divmod(value, 36)
        out.append(alphabet[r])
    return "".join(out)


def _time(seconds: int, nanos: int = 123456789) -> str:
    minute, sec = divmod(10 * 60 + seconds, 60)
    hour, minute = divmod(minute, 60)
    return f"2026-11-24T{10 + hour % 14:02d}:{minute:02d}:{sec:02d}.{nanos:09d}Z"


@dataclass(frozen=True)
class _ServicePlan:
    index: int
    name: str  # full name, <stack>_<short>
    node: int | None  # the node all its tasks run on (anchor groups), else None: spread
    labels: dict[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()


def _plan_services(c: Cluster) -> list[_ServicePlan]:
    plans: list[_ServicePlan] = []
    i = 0
    for g in range(c.group_count):
        node = g % c.nodes
        anchor = f"anchor{g:04d}"
        plans.append(_ServicePlan(i, f"{STACK}_{anchor}", node, constraints=(f"node.hostname == node{node + 1}",)))
        i += 1
        for d in range(2 + g % 2):  # 2 or 3 dependents
            plans.append(
                _ServicePlan(
                    i,
                    f"{STACK}_{anchor}-dep{d}",
                    node,
                    labels={"orcastra.follow": anchor},
                    constraints=(f"node.labels.orcastra.anchor.{STACK}_{anchor}==true",),
                )
            )
            i += 1
    k = 0  # plain services are numbered on their own, so a bigger cluster contains every smaller one
    while len(plans) < c.services:
        plans.append(_ServicePlan(i, f"{STACK}_svc{k:05d}", None, constraints=("node.role == worker",)))
        i += 1
        k += 1
    return plans[: c.services]


def _network() -> JSON:
    return {
        "ID": _id("network", 1),
        "Version": {"Index": 12},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Spec": {
            "Name": f"{STACK}_default",
            "Labels": {"com.docker.stack.namespace": STACK},
            "DriverConfiguration": {"Name": "overlay"},
            "Scope": "swarm",
        },
        "DriverState": {"Name": "overlay", "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"}},
        "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
    }


class SwarmData:
    """The generated objects of a steady cluster: the starting state of ``SwarmState``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.plans = _plan_services(cluster)
        self.nodes = [self._node(n) for n in range(cluster.nodes)]
        self.services = [self._service(p) for p in self.plans]
        self.tasks = [t for p in self.plans for t in self._tasks(p)]

    def _node(self, n: int) -> JSON:
        labels = {"zone": f"z{n % 3}"}
        for p in self.plans:
            if p.node == n and "orcastra.follow" not in p.labels:
                labels[f"orcastra.anchor.{p.name}"] = "true"
        manager = n == 0
        addr = f"10.10.0.{11 + n}"
        node: JSON = {
            "ID": _id("node", n),
            "Version": {"Index": 20 + n},
            "CreatedAt": CREATED,
            "UpdatedAt": _time(n),
            "Spec": {"Labels": labels, "Role": "manager" if manager else "worker", "Availability": "active"},
            "Description": {
                "Hostname": f"node{n + 1}",
                "Platform": {"Architecture": "x86_64", "OS": "linux"},
                "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4 * 1024**3},
                "Engine": {
                    "EngineVersion": ENGINE_VERSION,
                    "Plugins": [
                        {"Type": t, "Name": name}
                        for t, name in (
                            ("Log", "json-file"),
                            ("Log", "local"),
                            ("Network", "bridge"),
                            ("Network", "overlay"),
                            ("Volume", "local"),
                        )
                    ],
                },
                "TLSInfo": {
                    "TrustRoot": "-----BEGIN CERTIFICATE-----\n" + "M" * 560 + "\n-----END CERTIFICATE-----\n",
                    "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
                    "CertIssuerPublicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE" + "A" * 52,
                },
            },
            "Status": {"State": "ready", "Addr": addr},
        }
        if manager:
            node["ManagerStatus"] = {"Leader": True, "Reachability": "reachable", "Addr": f"{addr}:2377"}
        return node

    def _template(self, p: _ServicePlan) -> JSON:
        return {
            "ContainerSpec": {
                "Image": IMAGE,
                "Labels": {"com.docker.stack.namespace": STACK},
                "Args": ["sleep", "infinity"],
                "Init": False,
                "Privileges": {"CredentialSpec": None, "SELinuxContext": None},
                "StopGracePeriod": 10_000_000_000,
                "DNSConfig": {},
                "Isolation": "default",
            },
            "Resources": {"Limits": {"MemoryBytes": 64 * 1024**2}, "Reservations": {"MemoryBytes": 16 * 1024**2}},
            "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000, "MaxAttempts": 0},
            "Placement": {
                "Constraints": list(p.constraints),
                "Platforms": [{"Architecture": "amd64", "OS": "linux"}],
            },
            "Networks": [{"Target": _id("network", 1), "Aliases": [p.name.split("_", 1)[1]]}],
            "ForceUpdate": 0,
            "Runtime": "container",
        }

    def _service(self, p: _ServicePlan) -> JSON:
        labels = {"com.docker.stack.image": IMAGE, "com.docker.stack.namespace": STACK, **p.labels}
        return {
            "ID": _id("service", p.index),
            "Version": {"Index": 100 + p.index},
            "CreatedAt": CREATED,
            "UpdatedAt": _time(p.index % 600),
            "Spec": {
                "Name": p.name,
                "Labels": labels,
                "TaskTemplate": self._template(p),
                "Mode": {"Replicated": {"Replicas": self.cluster.replicas}},
                "UpdateConfig": {
                    "Parallelism": 1,
                    "FailureAction": "pause",
                    "Monitor": 5_000_000_000,
                    "MaxFailureRatio": 0,
                    "Order": "stop-first",
                },
                "RollbackConfig": {
                    "Parallelism": 1,
                    "FailureAction": "pause",
                    "Monitor": 5_000_000_000,
                    "MaxFailureRatio": 0,
                    "Order": "stop-first",
                },
                "EndpointSpec": {"Mode": "vip"},
            },
            "Endpoint": {
                "Spec": {"Mode": "vip"},
                "VirtualIPs": [{"NetworkID": _id("network", 1), "Addr": f"10.0.1.{2 + p.index % 250}/24"}],
            },
        }

    def _spread(self, k: int) -> int:
        """Plain services carry ``node.role == worker``: their tasks go round the workers (node2..nodeN), as the
        Swarm would place them; on a one-node cluster, on node1."""
        workers = self.cluster.nodes - 1
        return 1 + k % workers if workers > 0 else 0

    def _tasks(self, p: _ServicePlan) -> Iterator[JSON]:
        template = self._template(p)
        for slot in range(1, self.cluster.replicas + 1):
            node = p.node if p.node is not None else self._spread(p.index + slot)
            states = ("running", "shutdown") if self.cluster.history else ("running",)
            for k, state in enumerate(states):
                n = (p.index * 10 + slot) * 2 + k
                yield {
                    "ID": _id("task", n),
                    "Version": {"Index": 1000 + n},
                    "CreatedAt": _time(n % 3000),
                    "UpdatedAt": _time(n % 3000 + 2),
                    "Labels": {},
                    "Spec": template,
                    "ServiceID": _id("service", p.index),
                    "Slot": slot,
                    "NodeID": _id("node", node),
                    "Status": {
                        "Timestamp": _time(n % 3000 + 2, 987654321),
                        "State": state,
                        "Message": "started" if state == "running" else "shutdown",
                        "ContainerStatus": {
                            "ContainerID": hashlib.sha256(f"container:{n}".encode()).hexdigest(),
                            "PID": 1000 + n if state == "running" else 0,
                            "ExitCode": 0 if state == "running" else 137,
                        },
                        "PortStatus": {},
                    },
                    "DesiredState": state,
                    "NetworksAttachments": [{"Network": _network(), "Addresses": [f"10.0.1.{3 + n % 250}/24"]}],
                }


# --- small helpers ----------------------------------------------------------------------------------------


class ApiError(Exception):
    """An Engine error answer: the status and the ``{"message": ...}`` the Engine would send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Query = dict[str, list[str]]


def _query(query: Query, key: str) -> str | None:
    """The first value of a query parameter, as Go's ``r.URL.Query().Get`` reads it (None when absent)."""
    values = query.get(key)
    return values[0] if values else None


def _rfc3339(ns: int) -> str:
    """Epoch nanoseconds -> the Engine's time format (Go's RFC3339Nano: trailing zeros of the fraction cut)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def _label_match(labels: dict[str, str], expr: str) -> bool:
    key, eq, value = expr.partition("=")
    return key in labels and (not eq or labels[key] == value)


def parse_filters(raw: str | None) -> dict[str, set[str]]:
    """The Engine's ``filters`` query parameter: ``{"key": ["v", ...]}`` or the older ``{"key": {"v": true}}``."""
    if not raw:
        return {}
    data = json.loads(raw)
    out: dict[str, set[str]] = {}
    for key, values in data.items():
        out[key] = {str(v) for v in values} if isinstance(values, list) else {str(v) for v in dict(values)}
    return out


def _filters(query: Query) -> dict[str, set[str]]:
    try:
        return parse_filters(_query(query, "filters"))
    except (ValueError, TypeError, AttributeError) as e:
        raise ApiError(400, f"invalid filters: {e}") from e


def _parse_timestamp(raw: str | None, what: str) -> int | None:
    """``since``/``until`` as the Engine reads them, ``seconds[.fraction]`` -> epoch nanoseconds (None: unset)."""
    if not raw:
        return None
    seconds, _, fraction = raw.partition(".")
    if not seconds.lstrip("-").isdigit() or (fraction and not fraction.isdigit()):
        raise ApiError(400, f'invalid {what} value: strconv.ParseInt: parsing "{raw}": invalid syntax')
    return int(seconds) * 1_000_000_000 + int((fraction + "0" * 9)[:9])


def _version(kind: str, query: Query) -> int:
    """The ``version`` a write is made at (strconv.ParseUint in the Engine's router: 400 when not a number)."""
    raw = _query(query, "version") or ""
    if not raw.isdigit():
        raise ApiError(400, f"invalid {kind} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax")
    return int(raw)


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _flag(query: Query, key: str) -> bool:
    raw = _query(query, key)
    if raw is None or raw == "" or raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ApiError(400, f"invalid value for {key}: {raw}")


def _object_body(body: Any) -> JSON:
    """A write's JSON body: an object, or the 400 the Engine answers."""
    if body is None:
        raise ApiError(400, "got EOF while reading request body")
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {type(body).__name__} into Go value of type object")
    return body


def _parse_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"invalid JSON: {e}") from e


def _str_map(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (raw or {}).items()}


# --- placement constraints (swarmkit's manager/constraint) ------------------------------------------------


def _constraints(template: JSON) -> list[str]:
    return [str(c) for c in ((template.get("Placement") or {}).get("Constraints") or [])]


def _parse_constraint(expr: str) -> tuple[str, bool, str] | None:
    for op in ("==", "!="):
        if op in expr:
            key, _, value = expr.partition(op)
            return key.strip(), op == "==", value.strip()
    return None


def _constraint_subject(node: JSON, key: str) -> str | None:
    """What a constraint key reads on a node; None for a key swarmkit does not know (never satisfied)."""
    desc = node.get("Description") or {}
    spec = node.get("Spec") or {}
    lower = key.lower()
    if lower == "node.id":
        return str(node["ID"])
    if lower == "node.hostname":
        return str(desc.get("Hostname") or "")
    if lower == "node.role":
        return str(spec.get("Role") or "")
    if lower == "node.platform.os":
        return str((desc.get("Platform") or {}).get("OS") or "")
    if lower == "node.platform.arch":
        return str((desc.get("Platform") or {}).get("Architecture") or "")
    if lower.startswith("node.labels."):
        return str((spec.get("Labels") or {}).get(key[len("node.labels.") :], ""))  # the label key is case-sensitive
    if lower.startswith("engine.labels."):
        return str(((desc.get("Engine") or {}).get("Labels") or {}).get(key[len("engine.labels.") :], ""))
    return None


def node_matches(node: JSON, constraints: Iterable[str]) -> bool:
    """Whether a node satisfies every constraint (``==``/``!=``, values compared case-insensitively)."""
    for expr in constraints:
        parsed = _parse_constraint(expr)
        if parsed is None:
            return False
        key, equal, value = parsed
        subject = _constraint_subject(node, key)
        if subject is None or (subject.casefold() == value.casefold()) != equal:
            return False
    return True


def _available(node: JSON) -> bool:
    """The scheduler's ReadyFilter: a node takes new tasks when ready and active."""
    return bool(node["Status"]["State"] == "ready" and node["Spec"]["Availability"] == "active")


def _without_constraints(spec: JSON) -> JSON:
    placement = dict(spec.get("Placement") or {})
    placement.pop("Constraints", None)
    return {**spec, "Placement": placement}


def _replicas(spec: JSON) -> int | None:
    """A replicated service's replica count; None for a global service."""
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        return None
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def _node_name(node: JSON) -> str:
    return str(node["Spec"].get("Name") or (node.get("Description") or {}).get("Hostname") or "")


def _nodes(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


# --- specs as the Engine stores them ---------------------------------------------------------------------


def _node_spec(body: JSON) -> JSON:
    role = str(body.get("Role") or "")
    availability = str(body.get("Availability") or "")
    if role.lower() not in ("worker", "manager"):
        raise ApiError(400, f'invalid Role: "{role}"')
    if availability.lower() not in ("active", "pause", "drain"):
        raise ApiError(400, f'invalid Availability: "{availability}"')
    spec: JSON = {}
    if body.get("Name"):
        spec["Name"] = str(body["Name"])
    spec["Labels"] = _str_map(body.get("Labels"))
    spec["Role"] = role.lower()
    spec["Availability"] = availability.lower()
    return spec


def _service_spec(body: JSON) -> JSON:
    """A ServiceSpec as a manager keeps it: nulls dropped, Labels {}, ForceUpdate 0, Runtime container, Mode
    replicated 1 unless given."""
    spec: JSON = {str(k): copy.deepcopy(v) for k, v in body.items() if v is not None}
    spec["Labels"] = _str_map(spec.get("Labels"))
    template: JSON = dict(spec.get("TaskTemplate") or {})
    if not (template.get("ContainerSpec") or {}).get("Image"):
        raise ApiError(400, NO_IMAGE)
    if template.get("ForceUpdate") is None:
        template["ForceUpdate"] = 0
    template.setdefault("Runtime", "container")
    spec["TaskTemplate"] = template
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        spec["Mode"] = {"Global": {}}
    else:
        replicas = (mode.get("Replicated") or {}).get("Replicas")
        spec["Mode"] = {"Replicated": {"Replicas": 1 if replicas is None else int(replicas)}}
    return spec


def _default_swarm_spec() -> JSON:
    return {
        "Name": "default",
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": 5},
        "Raft": {
            "SnapshotInterval": 10000,
            "KeepOldSnapshots": 0,
            "LogEntriesForSlowFollowers": 500,
            "ElectionTick": 10,
            "HeartbeatTick": 1,
        },
        "Dispatcher": {"HeartbeatPeriod": 5_000_000_000},
        "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": False},
    }


def _token(role: str, n: int) -> str:
    return f"SWMTKN-1-{_id('cluster-key', 0, 50)}-{_id('token-' + role, n)}"


def _swarm_object() -> JSON:
    return {
        "ID": _id("cluster", 0),
        "Version": {"Index": 10},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Spec": _default_swarm_spec(),
        "TLSInfo": {
            "TrustRoot": "-----BEGIN CERTIFICATE-----\n" + "M" * 560 + "\n-----END CERTIFICATE-----\n",
            "CertIssuerSubject": "MBMxETAPBgNVBAMTCHN3YXJtLWNh",
            "CertIssuerPublicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE" + "A" * 52,
        },
        "RootRotationInProgress": False,
        "DefaultAddrPool": ["10.0.0.0/8"],
        "SubnetSize": 24,
        "DataPathPort": 4789,
        "JoinTokens": {"Worker": _token("worker", 0), "Manager": _token("manager", 0)},
    }


# --- events -----------------------------------------------------------------------------------------------

EVENT_FILTERS = frozenset(
    {"config", "container", "daemon", "event", "image", "label", "network", "node", "plugin", "scope", "secret"}
    | {"service", "type", "volume"}
)
_BY_NAME_FILTERS = ("config", "container", "daemon", "network", "node", "plugin", "secret", "service", "volume")
_FUZZY_ACTIONS = frozenset({"health_status", "exec_create", "exec_start"})


def _prefix_match(values: set[str], source: str) -> bool:
    return any(source == v or (source and source.startswith(v)) for v in values)


def event_matches(event: JSON, filters: dict[str, set[str]]) -> bool:
    """The Engine's event filter (daemon/events/filter.go): every filter given must match."""
    action = str(event.get("Action") or "")
    if "event" in filters:
        wanted = filters["event"]
        ok = _prefix_match(wanted, action) if wanted & _FUZZY_ACTIONS else action in wanted
        if not ok:
            return False
    if "type" in filters and event.get("Type") not in filters["type"]:
        return False
    if "scope" in filters and event.get("scope") not in filters["scope"]:
        return False
    actor = event.get("Actor") or {}
    attributes: dict[str, str] = actor.get("Attributes") or {}
    for key in _BY_NAME_FILTERS:
        if key in filters and not (
            _prefix_match(filters[key], str(actor.get("ID") or ""))
            or _prefix_match(filters[key], attributes.get("name", ""))
        ):
            return False
    if "image" in filters and not _prefix_match(filters["image"], attributes.get("image", "")):
        return False
    return "label" not in filters or all(_label_match(attributes, v) for v in filters["label"])


class _Subscriber:
    def __init__(self, filters: dict[str, set[str]]) -> None:
        self.filters = filters
        self.queue: queue.SimpleQueue[JSON | None] = queue.SimpleQueue()  # None: the server is closing


class EventBus:
    """Every event published goes to each subscriber whose filters take it; the last ``history`` are kept for
    ``since``/``until`` (replayed only when one of them is given, as the Engine does)."""

    def __init__(self, history: int = EVENTS_HISTORY) -> None:
        self._lock = threading.Lock()
        self._recent: deque[JSON] = deque(maxlen=history)
        self._log: list[JSON] = []
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    def publish(self, event: JSON) -> None:
        with self._lock:
            self._recent.append(event)
            self._log.append(event)
            for sub in self._subscribers:
                if event_matches(event, sub.filters):
                    sub.queue.put(event)

    def subscribe(
        self, filters: dict[str, set[str]], since: int | None = None, until: int | None = None
    ) -> _Subscriber:
        sub = _Subscriber(filters)
        with self._lock:
            if since is not None or until is not None:
                for event in self._recent:
                    t = int(event["timeNano"])
                    if (
                        (since is None or t >= since)
                        and (until is None or t <= until)
                        and event_matches(event, filters)
                    ):
                        sub.queue.put(event)
            if self._closed:
                sub.queue.put(None)
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def log(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(self._log)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for sub in self._subscribers:
                sub.queue.put(None)


# --- the mutable Swarm ------------------------------------------------------------------------------------


class SwarmState:
    """The Swarm's objects under one lock, and what a manager does after each change (done at once).

    Every change takes the next cluster-wide index into the object's ``Version.Index`` and the clock into its
    ``UpdatedAt``; node and service changes are published as events. ``clock`` gives epoch nanoseconds (strictly
    increasing here, so events keep their order for ``since``)."""

    def __init__(self, cluster: Cluster, clock: Callable[[], int] | None = None) -> None:
        data = SwarmData(cluster)
        self.cluster = cluster
        self.lock = threading.RLock()
        self.events = EventBus()
        self.nodes: dict[str, JSON] = {n["ID"]: n for n in data.nodes}
        self.services: dict[str, JSON] = {s["ID"]: s for s in data.services}
        self.tasks: list[JSON] = data.tasks
        self._tasks_of: dict[str, list[JSON]] = {sid: [] for sid in self.services}
        for t in self.tasks:
            self._tasks_of[t["ServiceID"]].append(t)
        # Tasks desired running, per node: the scheduler's load, kept as tasks come and go.
        self._load = Counter(t["NodeID"] for t in self.tasks if t["DesiredState"] == "running" and t.get("NodeID"))
        self.swarm: JSON = _swarm_object()
        objects = [self.swarm, *self.nodes.values(), *self.services.values(), *self.tasks]
        self.index = max(int(o["Version"]["Index"]) for o in objects)
        self._clock = clock or time.time_ns
        self._last_ns = 0
        self._serial = 0  # IDs of the objects created here
        self._encoded: dict[str, bytes] = {}  # unfiltered lists, encoded once until the next change
        self.configs: dict[str, JSON] = {}  # Swarm configs (Spec.Data base64; only labels change)

    # --- clock and versions ---------------------------------------------------------------------------

    def now_ns(self) -> int:
        with self.lock:
            ns = max(self._clock(), self._last_ns + 1)
            self._last_ns = ns
            return ns

    def _touch(self, obj: JSON, kind: str) -> int:
        """One write: the next cluster index into the object's Version, now into UpdatedAt. Returns now (ns)."""
        self.index += 1
        ns = self.now_ns()
        obj["Version"] = {"Index": self.index}
        obj["UpdatedAt"] = _rfc3339(ns)
        self._encoded.pop(kind, None)
        return ns

    def _publish(self, kind: str, action: str, actor_id: str, attributes: dict[str, str], ns: int) -> None:
        self.events.publish(
            {
                "Type": kind,
                "Action": action,
                "Actor": {"ID": actor_id, "Attributes": attributes},
                "scope": "swarm",
                "time": ns // 1_000_000_000,
                "timeNano": ns,
            }
        )

    def _container_event(self, action: str, task: JSON, ns: int) -> None:
        """What the task's node Engine publishes when its container starts or dies (one fake for every node)."""
        svc = self.services.get(task["ServiceID"])
        service_name = str(svc["Spec"].get("Name") or "") if svc else ""
        container_spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
        image = str(container_spec.get("Image") or "")
        status = task["Status"].get("ContainerStatus") or {}
        container_id = str(status.get("ContainerID") or "")
        name = f"{service_name}.{task.get('Slot') or task.get('NodeID')}.{task['ID']}"
        attributes = {
            **_str_map(container_spec.get("Labels")),
            "com.docker.swarm.node.id": str(task.get("NodeID") or ""),
            "com.docker.swarm.service.id": str(task["ServiceID"]),
            "com.docker.swarm.service.name": service_name,
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": str(task["ID"]),
            "com.docker.swarm.task.name": name,
            "image": image,
            "name": name,
        }
        if action == "die":
            attributes["exitCode"] = str(status.get("ExitCode", 0))
        self.events.publish(
            {
                "status": action,
                "id": container_id,
                "from": image,
                "Type": "container",
                "Action": action,
                "Actor": {"ID": container_id, "Attributes": attributes},
                "scope": "local",
                "time": ns // 1_000_000_000,
                "timeNano": ns,
            }
        )

    # --- lookups (as the Engine resolves a reference: ID, then name, then unambiguous ID prefix) ------------

    def _find_node(self, ref: str) -> JSON:
        node = self.nodes.get(ref)
        if node is not None:
            return node
        found = [n for n in self.nodes.values() if ref in (n["Spec"].get("Name"), n["Description"]["Hostname"])]
        if not found:
            found = [n for n in self.nodes.values() if n["ID"].startswith(ref)]
        if not found:
            raise ApiError(404, f"node {ref} not found")
        if len(found) > 1:
            raise ApiError(400, f"node {ref} is ambiguous ({len(found)} matches found)")
        return found[0]

    def _find_service(self, ref: str) -> JSON:
        svc = self.services.get(ref)
        if svc is not None:
            return svc
        found = [s for s in self.services.values() if s["Spec"].get("Name") == ref]
        if not found:
            found = [s for s in self.services.values() if s["ID"].startswith(ref)]
        if not found:
            raise ApiError(404, f"service {ref} not found")
        if len(found) > 1:
            raise ApiError(400, f"service {ref} is ambiguous ({len(found)} matches found)")
        return found[0]

    def _find_task(self, ref: str) -> JSON:
        found = [t for t in self.tasks if t["ID"] == ref] or [t for t in self.tasks if t["ID"].startswith(ref)]
        if len(found) != 1:
            raise ApiError(404, f"task {ref} not found")
        return found[0]

    def _active(self, service_id: str) -> list[JSON]:
        return [t for t in self._tasks_of.get(service_id, []) if t["DesiredState"] == "running"]

    # --- reads --------------------------------------------------------------------------------------------

    def encoded(self, kind: str) -> bytes:
        """The unfiltered list of ``nodes``, ``services`` or ``tasks``, encoded once until the next change."""
        with self.lock:
            body = self._encoded.get(kind)
            if body is None:
                if kind == "nodes":
                    body = json.dumps(list(self.nodes.values())).encode()
                elif kind == "services":
                    body = json.dumps(list(self.services.values())).encode()
                else:
                    body = json.dumps(self.tasks).encode()
                self._encoded[kind] = body
            return body

    def list_services(self, filters: dict[str, set[str]]) -> bytes:
        with self.lock:
            if not filters:
                return self.encoded("services")
            out = []
            for s in self.services.values():
                if "id" in filters and not any(s["ID"].startswith(v) for v in filters["id"]):
                    continue
                if "name" in filters and not any(s["Spec"]["Name"].startswith(v) for v in filters["name"]):
                    continue
                if "label" in filters and not all(_label_match(s["Spec"]["Labels"], v) for v in filters["label"]):
                    continue
                out.append(s)
            return json.dumps(out).encode()

    def list_tasks(self, filters: dict[str, set[str]]) -> bytes:
        """As the Engine: a service or node filter naming no such object is a 404, not an empty list."""
        with self.lock:
            service_ids = None
            if "service" in filters:
                service_ids = {self._find_service(ref)["ID"] for ref in sorted(filters["service"])}
            node_ids = None
            if "node" in filters:
                node_ids = {self._find_node(ref)["ID"] for ref in sorted(filters["node"])}
            if not filters:
                return self.encoded("tasks")
            out = []
            for t in self.tasks:
                if service_ids is not None and t["ServiceID"] not in service_ids:
                    continue
                if "desired-state" in filters and t["DesiredState"] not in filters["desired-state"]:
                    continue
                if node_ids is not None and t.get("NodeID") not in node_ids:
                    continue
                if "id" in filters and not any(t["ID"].startswith(v) for v in filters["id"]):
                    continue
                if "name" in filters and not any(self._task_name(t).startswith(v) for v in filters["name"]):
                    continue
                if "label" in filters and not all(_label_match(t.get("Labels") or {}, v) for v in filters["label"]):
                    continue
                out.append(t)
            return json.dumps(out).encode()

    def _task_name(self, task: JSON) -> str:
        svc = self.services.get(task["ServiceID"])
        return f"{svc['Spec']['Name'] if svc else ''}.{task.get('Slot') or task.get('NodeID')}"

    def inspect(self, kind: str, ref: str) -> bytes:
        with self.lock:
            if kind == "nodes":
                obj = self._find_node(ref)
            elif kind == "services":
                obj = self._find_service(ref)
            else:
                obj = self._find_task(ref)
            return json.dumps(obj).encode()

    def inspect_swarm(self) -> bytes:
        with self.lock:
            return json.dumps(self.swarm).encode()

    def info(self) -> JSON:
        c = self.cluster
        with self.lock:
            cluster = copy.deepcopy({k: v for k, v in self.swarm.items() if k != "JoinTokens"})
            managers = sum(1 for n in self.nodes.values() if n["Spec"]["Role"] == "manager")
            nodes = len(self.nodes)
        return {
            "ID": _id("engine", 0),
            "Name": "node1",
            "ServerVersion": ENGINE_VERSION,
            "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
            "NCPU": 2,
            "MemTotal": 4 * 1024**3,
            "Containers": c.services * c.replicas,
            "SystemTime": _rfc3339(self.now_ns()),
            "Swarm": {
                "NodeID": _id("node", 0),
                "NodeAddr": "10.10.0.11",
                "LocalNodeState": "active",
                "ControlAvailable": True,
                "Error": "",
                "RemoteManagers": [{"NodeID": _id("node", 0), "Addr": "10.10.0.11:2377"}],
                "Nodes": nodes,
                "Managers": managers,
                "Cluster": cluster,
            },
        }

    # --- writes -------------------------------------------------------------------------------------------

    def update_node(self, ref: str, query: Query, body: Any) -> None:
        """POST /nodes/<ref>/update?version=N: the NodeSpec replaced (Name, Labels, Role, Availability)."""
        raw = _object_body(body)
        version = _version("node", query)
        spec = _node_spec(raw)
        with self.lock:
            node = self._find_node(ref)
            old = node["Spec"]
            if old["Role"] == "manager" and spec["Role"] == "worker":
                managers = [n for n in self.nodes.values() if n["Spec"]["Role"] == "manager"]
                if len(managers) == 1:
                    raise ApiError(400, LAST_MANAGER)
            if version != node["Version"]["Index"]:
                raise ApiError(500, OUT_OF_SEQUENCE)
            node["Spec"] = spec
            self._set_role(node, spec["Role"])
            ns = self._touch(node, "nodes")
            attributes = {"name": _node_name(node)}
            for key in ("Availability", "Role"):
                if old.get(key) != spec[key]:
                    attributes[f"{key.lower()}.old"] = str(old.get(key) or "")
                    attributes[f"{key.lower()}.new"] = spec[key]
            self._publish("node", "update", node["ID"], attributes, ns)
            self._enforce(node)
            self._reconcile_all()

    def _set_role(self, node: JSON, role: str) -> None:
        status = node.get("ManagerStatus")
        if role == "manager" and status is None:
            addr = f"{node['Status'].get('Addr', '')}:2377"
            node["ManagerStatus"] = {"Leader": False, "Reachability": "reachable", "Addr": addr}
        elif role == "worker" and status is not None:
            del node["ManagerStatus"]
            if status.get("Leader"):
                heir = next(n for n in self.nodes.values() if n.get("ManagerStatus"))
                heir["ManagerStatus"] = {**heir["ManagerStatus"], "Leader": True}

    def create_service(self, body: Any) -> str:
        """POST /services/create: the new service's ID; 409 when the name is taken."""
        spec = _service_spec(_object_body(body))
        with self.lock:
            self._serial += 1
            service_id = _id("service-created", self._serial)
            name = str(spec.get("Name") or f"service-{service_id[:10]}")
            spec = {**spec, "Name": name}
            if any(s["Spec"].get("Name") == name for s in self.services.values()):
                raise ApiError(409, NAME_CONFLICT.format(name))
            svc: JSON = {"ID": service_id, "Version": {}, "CreatedAt": "", "UpdatedAt": "", "Spec": spec}
            svc["Endpoint"] = {"Spec": {}}
            ns = self._touch(svc, "services")
            svc["CreatedAt"] = svc["UpdatedAt"]
            self.services[service_id] = svc
            self._tasks_of[service_id] = []
            self._publish("service", "create", service_id, {"name": name}, ns)
            self._reconcile(svc)
            return service_id

    def update_service(self, ref: str, query: Query, body: Any) -> None:
        """POST /services/<ref>/update?version=N: the ServiceSpec replaced, then the orchestrator and updater."""
        raw = _object_body(body)
        version = _version("service", query)
        spec = _service_spec(raw)
        with self.lock:
            svc = self._find_service(ref)
            old = svc["Spec"]
            if spec.get("Name", "") != old.get("Name", ""):
                raise ApiError(501, RENAME)
            if (_replicas(spec) is None) != (_replicas(old) is None):
                raise ApiError(501, MODE_CHANGE)
            if version != svc["Version"]["Index"]:
                raise ApiError(500, OUT_OF_SEQUENCE)
            svc["Spec"] = spec
            svc["PreviousSpec"] = old
            svc.pop("UpdateStatus", None)  # a new spec: the updater starts over
            ns = self._touch(svc, "services")
            attributes = {"name": str(spec["Name"])}
            old_image = (old["TaskTemplate"].get("ContainerSpec") or {}).get("Image")
            new_image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
            if old_image != new_image:
                attributes["image.old"], attributes["image.new"] = str(old_image or ""), str(new_image)
            old_replicas, new_replicas = _replicas(old), _replicas(spec)
            if old_replicas is not None and new_replicas is not None and old_replicas != new_replicas:
                attributes["replicas.old"], attributes["replicas.new"] = str(old_replicas), str(new_replicas)
            self._publish("service", "update", svc["ID"], attributes, ns)
            self._reconcile(svc)

    def remove_service(self, ref: str) -> None:
        """DELETE /services/<ref>: the service and its tasks go (their containers die)."""
        with self.lock:
            svc = self._find_service(ref)
            service_id = svc["ID"]
            for t in self._tasks_of.pop(service_id, []):
                if t["DesiredState"] == "running" and t.get("NodeID"):
                    self._load[t["NodeID"]] -= 1
                if t["Status"]["State"] == "running" and self._node_up(t):
                    self._container_event("die", t, self.now_ns())
            self.tasks = [t for t in self.tasks if t["ServiceID"] != service_id]
            del self.services[service_id]
            self.index += 1
            self._encoded.pop("services", None)
            self._encoded.pop("tasks", None)
            self._publish("service", "remove", service_id, {"name": str(svc["Spec"].get("Name") or "")}, self.now_ns())

    def update_swarm(self, query: Query, body: Any) -> None:
        """POST /swarm/update?version=N: the SwarmSpec replaced (unset sections take their defaults)."""
        raw = _object_body(body)
        version = _version("swarm", query)
        rotate_worker = _flag(query, "rotateWorkerToken")
        rotate_manager = _flag(query, "rotateManagerToken")
        _flag(query, "rotateManagerUnlockKey")
        if (raw.get("Name") or "default") != "default":
            raise ApiError(400, 'swarm spec must be named "default"')
        with self.lock:
            if version != self.swarm["Version"]["Index"]:
                raise ApiError(500, OUT_OF_SEQUENCE)
            spec = _default_swarm_spec()
            spec.update({str(k): copy.deepcopy(v) for k, v in raw.items() if v is not None})
            spec["Name"] = "default"
            spec["Labels"] = _str_map(spec.get("Labels"))
            self.swarm["Spec"] = spec
            tokens = dict(self.swarm["JoinTokens"])
            for role, rotate in (("Worker", rotate_worker), ("Manager", rotate_manager)):
                if rotate:
                    self._serial += 1
                    tokens[role] = _token(role.lower(), self._serial)
            self.swarm["JoinTokens"] = tokens
            self._touch(self.swarm, "swarm")

    # --- configs (GET/POST /configs...: Data immutable, Labels updated at the version) -------------------------

    def _find_config(self, ref: str) -> JSON:
        found = [c for c in self.configs.values() if ref in (c["ID"], c["Spec"]["Name"])]
        found = found or [c for c in self.configs.values() if c["ID"].startswith(ref)]
        if len(found) != 1:
            raise ApiError(404 if not found else 400, f"config {ref} not found")
        return found[0]

    def list_configs(self, filters: dict[str, set[str]]) -> bytes:
        with self.lock:
            out = []
            for c in self.configs.values():
                if "id" in filters and not any(c["ID"].startswith(v) for v in filters["id"]):
                    continue
                if "name" in filters and not any(c["Spec"]["Name"].startswith(v) for v in filters["name"]):
                    continue
                if "label" in filters and not all(_label_match(c["Spec"]["Labels"], v) for v in filters["label"]):
                    continue
                out.append(c)
            return json.dumps(out).encode()

    def create_config(self, body: Any) -> str:
        """POST /configs/create: 409 when the name is taken, 400 when Data is not base64 or over 1000 KiB."""
        raw = _object_body(body)
        name, data = str(raw.get("Name") or ""), str(raw.get("Data") or "")
        try:
            size = len(base64.b64decode(data, validate=True))
        except ValueError as e:
            raise ApiError(400, f"invalid Data: {e}") from e
        if not name or size > 1000 * 1024:
            raise ApiError(400, "rpc error: code = InvalidArgument desc = invalid config spec")
        with self.lock:
            if any(c["Spec"]["Name"] == name for c in self.configs.values()):
                raise ApiError(409, f"rpc error: code = AlreadyExists desc = config {name} already exists")
            self._serial += 1
            config_id = _id("config", self._serial)
            spec = {"Name": name, "Labels": _str_map(raw.get("Labels")), "Data": data}
            config: JSON = {"ID": config_id, "Version": {}, "CreatedAt": "", "UpdatedAt": "", "Spec": spec}
            ns = self._touch(config, "configs")
            config["CreatedAt"] = config["UpdatedAt"]
            self.configs[config_id] = config
            self._publish("config", "create", config_id, {"name": name}, ns)
            return config_id

    def update_config(self, ref: str, query: Query, body: Any) -> None:
        """POST /configs/<ref>/update?version=N: only Labels may change (as swarmkit's controlapi)."""
        raw = _object_body(body)
        version = _version("config", query)
        with self.lock:
            config = self._find_config(ref)
            if version != config["Version"]["Index"]:
                raise ApiError(500, OUT_OF_SEQUENCE)
            old = config["Spec"]
            if raw.get("Name", old["Name"]) != old["Name"] or raw.get("Data", old["Data"]) != old["Data"]:
                raise ApiError(400, "rpc error: code = InvalidArgument desc = only updates to Labels are allowed")
            config["Spec"] = {**old, "Labels": _str_map(raw.get("Labels"))}
            ns = self._touch(config, "configs")
            self._publish("config", "update", config["ID"], {"name": old["Name"]}, ns)

    def remove_config(self, ref: str) -> None:
        with self.lock:
            config = self._find_config(ref)
            del self.configs[config["ID"]]
            self.index += 1
            self._publish("config", "remove", config["ID"], {"name": config["Spec"]["Name"]}, self.now_ns())

    # --- test hooks -----------------------------------------------------------------------------------------

    def set_node_state(self, ref: str, state: str) -> None:
        """The node's heartbeat: ``down`` (its replicated tasks are replaced elsewhere; it is seen running them
        until it is back) or ``ready`` again (it stops what it was told to stop meanwhile)."""
        if state not in NODE_STATES:
            raise ValueError(f"node state must be one of {NODE_STATES}, not {state!r}")
        with self.lock:
            node = self._hook(self._find_node, ref)
            old = node["Status"]["State"]
            if old == state:
                return
            status = {**node["Status"], "State": state}
            if state == "down":
                status["Message"] = "heartbeat failure"
            else:
                status.pop("Message", None)
            node["Status"] = status
            attributes = {"name": _node_name(node), "state.old": old, "state.new": state}
            manager = node.get("ManagerStatus")
            if manager is not None:
                reachability = "reachable" if state == "ready" else "unreachable"
                if manager.get("Reachability") != reachability:
                    attributes["reachability.old"] = str(manager.get("Reachability") or "")
                    attributes["reachability.new"] = reachability
                    node["ManagerStatus"] = {**manager, "Reachability": reachability}
            ns = self._touch(node, "nodes")
            self._publish("node", "update", node["ID"], attributes, ns)
            if state == "ready":
                for t in self.tasks:
                    if t.get("NodeID") == node["ID"] and t["DesiredState"] != "running":
                        self._stop(t)
            self._enforce(node)
            self._reconcile_all()

    def move_task(self, service_ref: str, to_ref: str, slot: int | None = None) -> JSON:
        """The service's running task (of ``slot``, else the lowest slot) is replaced by one running on the given
        node, constraints or not: the old one shut down. Returns the new task."""
        with self.lock:
            svc = self._hook(self._find_service, service_ref)
            node = self._hook(self._find_node, to_ref)
            running = [
                t
                for t in self._active(svc["ID"])
                if t["Status"]["State"] == "running" and (slot is None or t.get("Slot") == slot)
            ]
            if not running:
                raise KeyError(f"service {service_ref} has no running task" + (f" in slot {slot}" if slot else ""))
            old = min(running, key=lambda t: int(t.get("Slot") or 0))
            self._retire(old, stop=True)
            new = self._new_task(svc, old.get("Slot"), node)
            return copy.deepcopy(new)

    @staticmethod
    def _hook(find: Callable[[str], JSON], ref: str) -> JSON:
        try:
            return find(ref)
        except ApiError as e:
            raise KeyError(e.message) from e

    def node_json(self, ref: str) -> JSON:
        with self.lock:
            return copy.deepcopy(self._hook(self._find_node, ref))

    def service_json(self, ref: str) -> JSON:
        with self.lock:
            return copy.deepcopy(self._hook(self._find_service, ref))

    def swarm_json(self) -> JSON:
        with self.lock:
            return copy.deepcopy(self.swarm)

    def task_list(self, service_ref: str | None = None, desired_state: str | None = None) -> list[JSON]:
        with self.lock:
            if service_ref is None:
                tasks: Iterable[JSON] = self.tasks
            else:
                tasks = self._tasks_of[self._hook(self._find_service, service_ref)["ID"]]
            return copy.deepcopy([t for t in tasks if desired_state is None or t["DesiredState"] == desired_state])

    # --- what the manager does after a change -----------------------------------------------------------------

    def _reconcile_all(self) -> None:
        for svc in list(self.services.values()):
            self._reconcile(svc)

    def _reconcile(self, svc: JSON) -> None:  # noqa: PLR0912 - swarmkit's orchestrator, updater and scheduler in one pass, as they run
        """swarmkit's orchestrator, updater and scheduler for one service, run to completion."""
        service_id = svc["ID"]
        template: JSON = svc["Spec"]["TaskTemplate"]
        replicas = _replicas(svc["Spec"])
        # The orchestrator retires what ended, what a drained node runs, and (replicated) what a down node runs.
        for t in self._active(service_id):
            node = self.nodes.get(t.get("NodeID") or "")
            if t["Status"]["State"] in TERMINAL:
                self._retire(t, stop=False)
            elif node is not None and node["Spec"]["Availability"] == "drain":
                self._retire(t, stop=True)
            elif node is not None and node["Status"]["State"] == "down" and replicas is not None:
                self._retire(t, stop=False)
        # The updater replaces the tasks whose spec is not the service's any more.
        dirty = [t for t in self._active(service_id) if self._dirty(t, template)]
        if dirty:
            self._update_state(svc, "updating")
            for t in dirty:
                self._retire(t, stop=True)
                if replicas is not None:  # a global service's tasks come back below, on every node that fits
                    self._new_task(svc, t.get("Slot"), None)
            self._update_state(svc, "completed")
        constraints = _constraints(template)
        if replicas is not None:
            for t in self._active(service_id):
                if int(t.get("Slot") or 0) > replicas:
                    self._retire(t, stop=True)
            slots = {t.get("Slot") for t in self._active(service_id)}
            for slot in range(1, replicas + 1):
                if slot not in slots:
                    self._new_task(svc, slot, None)
        else:
            for t in self._active(service_id):
                node = self.nodes.get(t.get("NodeID") or "")
                if node is not None and not node_matches(node, constraints):
                    self._retire(t, stop=True)
            covered = {t.get("NodeID") for t in self._active(service_id)}
            for node in list(self.nodes.values()):
                if node["ID"] not in covered and _available(node) and node_matches(node, constraints):
                    self._new_task(svc, None, node)
        # The scheduler places what waits, as soon as a node fits.
        for t in self._active(service_id):
            if t["Status"]["State"] == "pending":
                self._schedule(svc, t)

    def _dirty(self, task: JSON, template: JSON) -> bool:
        """swarmkit's IsTaskDirty: the spec differs, unless only the constraints changed and the node still
        satisfies them."""
        spec: JSON = task.get("Spec") or {}
        if spec == template:
            return False
        node = self.nodes.get(task.get("NodeID") or "")
        return not (
            node is not None
            and _without_constraints(spec) == _without_constraints(template)
            and node_matches(node, _constraints(template))
        )

    def _update_state(self, svc: JSON, state: str) -> None:
        old = svc.get("UpdateStatus")
        ns = self._touch(svc, "services")
        now = _rfc3339(ns)
        if state == "updating":
            svc["UpdateStatus"] = {"State": state, "StartedAt": now, "Message": "update in progress"}
        else:
            started = (old or {}).get("StartedAt", now)
            svc["UpdateStatus"] = {
                "State": state,
                "StartedAt": started,
                "CompletedAt": now,
                "Message": "update completed",
            }
        attributes = {"name": str(svc["Spec"]["Name"])}
        if old is None:
            attributes["updatestate.new"] = state
        elif old.get("State") != state:
            attributes["updatestate.old"], attributes["updatestate.new"] = str(old.get("State")), state
        self._publish("service", "update", svc["ID"], attributes, ns)

    def _enforce(self, node: JSON) -> None:
        """swarmkit's constraint enforcer: on an active node, a task whose service's constraints the node no
        longer satisfies is rejected (the orchestrator then replaces it)."""
        if node["Spec"]["Availability"] != "active":
            return
        for t in self.tasks:
            if t.get("NodeID") != node["ID"] or t["DesiredState"] != "running" or t["Status"]["State"] in TERMINAL:
                continue
            svc = self.services.get(t["ServiceID"])
            template = svc["Spec"]["TaskTemplate"] if svc else (t.get("Spec") or {})
            if node_matches(node, _constraints(template)):
                continue
            was_running = t["Status"]["State"] == "running"
            ns = self._touch(t, "tasks")
            self._set_status(
                t, "rejected", "task rejected by constraint enforcer", ns, "assigned node no longer meets constraints"
            )
            if was_running:
                self._container_event("die", t, ns)

    def _node_up(self, task: JSON) -> bool:
        node = self.nodes.get(task.get("NodeID") or "")
        return node is not None and node["Status"]["State"] == "ready"

    def _retire(self, task: JSON, *, stop: bool) -> None:
        """The orchestrator lets a task go (desired shutdown); ``stop``: its node stops it, if it can be told."""
        if task["DesiredState"] == "running" and task.get("NodeID"):
            self._load[task["NodeID"]] -= 1
        task["DesiredState"] = "shutdown"
        self._touch(task, "tasks")
        if stop:
            self._stop(task)

    def _stop(self, task: JSON) -> None:
        if task["Status"]["State"] in TERMINAL or not (self._node_up(task) or task["Status"]["State"] == "pending"):
            return
        was_running = task["Status"]["State"] == "running"
        ns = self._touch(task, "tasks")
        self._set_status(task, "shutdown", "shutdown", ns)
        if was_running:
            self._container_event("die", task, ns)

    @staticmethod
    def _set_status(task: JSON, state: str, message: str, ns: int, err: str | None = None) -> None:
        status: JSON = {**task["Status"], "Timestamp": _rfc3339(ns), "State": state, "Message": message}
        if err:
            status["Err"] = err
        else:
            status.pop("Err", None)
        container = status.get("ContainerStatus")
        if container and state in TERMINAL:
            status["ContainerStatus"] = {**container, "PID": 0, "ExitCode": 137}
        task["Status"] = status

    def _new_task(self, svc: JSON, slot: int | None, node: JSON | None) -> JSON:
        """A new task of the service, for ``slot`` (replicated) or on ``node`` (global, or a hook's move);
        with neither node, the scheduler places it."""
        self._serial += 1
        template: JSON = copy.deepcopy(svc["Spec"]["TaskTemplate"])
        task: JSON = {"ID": _id("task-created", self._serial), "Version": {}, "CreatedAt": "", "UpdatedAt": ""}
        task.update({"Labels": {}, "Spec": template, "ServiceID": svc["ID"]})
        if slot:
            task["Slot"] = slot
        ns = self._touch(task, "tasks")
        task["CreatedAt"] = task["UpdatedAt"]
        task["Status"] = {"Timestamp": _rfc3339(ns), "State": "pending", "Message": "pending task scheduling"}
        task["Status"]["PortStatus"] = {}
        task["DesiredState"] = "running"
        if any(n.get("Target") == _id("network", 1) for n in template.get("Networks") or []):
            address = f"10.0.1.{3 + self._serial % 250}/24"
            task["NetworksAttachments"] = [{"Network": _network(), "Addresses": [address]}]
        self.tasks.append(task)
        self._tasks_of.setdefault(svc["ID"], []).append(task)
        if node is not None:
            self._run_on(task, node)
        else:
            self._schedule(svc, task)
        return task

    def _schedule(self, svc: JSON, task: JSON) -> None:
        node, why = self._pick_node(svc)
        if node is not None:
            self._run_on(task, node)
        elif task["Status"].get("Err") != why:
            self._set_status(task, "pending", "pending task scheduling", self._touch(task, "tasks"), why)

    def _pick_node(self, svc: JSON) -> tuple[JSON | None, str]:
        """swarmkit's scheduler: among the available nodes that satisfy the constraints, the one with the fewest
        tasks of the service, then the fewest tasks, then node order; else the reason, as its pipeline says it."""
        constraints = _constraints(svc["Spec"]["TaskTemplate"])
        unavailable = unsatisfied = 0
        fits: list[JSON] = []
        for node in self.nodes.values():
            if not _available(node):
                unavailable += 1
            elif not node_matches(node, constraints):
                unsatisfied += 1
            else:
                fits.append(node)
        if not fits:
            reasons = [
                (unavailable, f"{_nodes(unavailable)} not available for new tasks"),
                (unsatisfied, f"scheduling constraints not satisfied on {_nodes(unsatisfied)}"),
            ]
            explained = "; ".join(text for n, text in sorted(reasons, key=lambda r: -r[0]) if n)
            return None, f"no suitable node ({explained})" if explained else "no suitable node"
        load = self._load
        mine = Counter(t.get("NodeID") for t in self._active(svc["ID"]))
        order = {node_id: i for i, node_id in enumerate(self.nodes)}
        return min(fits, key=lambda n: (mine[n["ID"]], load[n["ID"]], order[n["ID"]])), ""

    def _run_on(self, task: JSON, node: JSON) -> None:
        ns = self._touch(task, "tasks")
        task["NodeID"] = node["ID"]
        self._load[node["ID"]] += 1
        container_id = hashlib.sha256(f"container:{task['ID']}".encode()).hexdigest()
        task["Status"] = {
            "Timestamp": _rfc3339(ns),
            "State": "running",
            "Message": "started",
            "ContainerStatus": {"ContainerID": container_id, "PID": 1000 + self._serial % 30000, "ExitCode": 0},
            "PortStatus": {},
        }
        self._container_event("start", task, ns)


# --- the HTTP side ----------------------------------------------------------------------------------------


@dataclass
class PathStats:
    requests: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class WriteRecord:
    """A write request the fake received (whatever its answer): the body parsed as JSON (or its text)."""

    method: str
    path: str  # without the /vX.Y prefix, the reference as sent
    query: dict[str, str]
    body: Any
    status: int

    @property
    def summary(self) -> str:
        text = json.dumps(self.body, sort_keys=True, separators=(",", ":")) if self.body is not None else ""
        if len(text) > 160:
            text = text[:157] + "..."
        version = f"?version={self.query['version']}" if "version" in self.query else ""
        return f"{self.method} {self.path}{version} -> {self.status} {text}".rstrip()


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    message: str
    count: int


class _Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"


def _json_response(obj: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(obj).encode())


_EMPTY_OK = _Response(200, b"", "")
_OBJECT_PATH = re.compile(r"/(nodes|services|tasks|configs)/([^/]+)(/update)?")


def _stats_key(method: str, path: str) -> str:
    """Per-path counters: GETs by path (an object's reference as <id>), other methods prefixed with theirs."""
    if path.startswith("/_bench/"):
        return "/_bench"
    m = _OBJECT_PATH.fullmatch(path)
    key = f"/{m[1]}/<id>{m[3] or ''}" if m and path not in ("/services/create", "/configs/create") else path
    return key if method == "GET" else f"{method} {key}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    timeout = 0.0  # handle_request() after our own select: never wait (a client may have given up meanwhile)

    def __init__(self, address: tuple[str, int], state: SwarmState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.stats: dict[str, PathStats] = {}
        self.stats_lock = threading.Lock()  # also guards the write log and the injected failures
        self.write_log: list[WriteRecord] = []
        self.failures: list[_Failure] = []
        self.closing = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()

    # --- serving, and stopping without a poll interval ------------------------------------------------------

    def serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self.closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self and not self.closing.is_set():
                        self.handle_request()  # ready: accepts at once

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name="fake-engine-conn", daemon=True
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Hang up on every client (keep-alive connections, event streams) and wait for their threads."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def count(self, path: str, sent: int) -> None:
        with self.stats_lock:
            s = self.stats.setdefault(path, PathStats())
            s.requests += 1
            s.bytes += sent

    def record_write(self, record: WriteRecord) -> None:
        with self.stats_lock:
            self.write_log.append(record)

    def take_failure(self, method: str, path: str) -> _Failure | None:
        with self.stats_lock:
            for failure in self.failures:
                if failure.method in ("*", method) and failure.pattern.search(path):
                    failure.count -= 1
                    if failure.count <= 0:
                        self.failures.remove(failure)
                    return failure
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked /events
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's delayed
    # ACK add ~40 ms to every keep-alive round trip on loopback (the Engine itself has no such stall).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, response: _Response, key: str) -> None:
        self.server.count(key, len(response.body))
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Server", f"Docker/{ENGINE_VERSION} (linux)")
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def _route(self) -> tuple[str, Query]:
        parts = urlsplit(self.path)
        return VERSION_PREFIX.sub("", parts.path).rstrip("/") or "/", parse_qs(parts.query, keep_blank_values=True)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_HEAD(self) -> None:
        path, _ = self._route()
        self.send_response(200 if path == "/_ping" else 404)
        self.send_header("Content-Length", "0")
        self.send_header("Api-Version", API_VERSION)
        self.end_headers()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path, query = self._route()
        raw = self._read_body()
        bench = path.startswith("/_bench/")
        is_write = method != "GET" and not bench
        failure = None if bench else self.server.take_failure(method, path)
        body: Any = None
        if failure is not None:
            response = _json_response({"message": failure.message}, failure.status)
        elif method == "GET" and path == "/events":
            self._events(path, query)
            return
        else:
            try:
                body = _parse_body(raw) if is_write else None
                response = self._handle(method, path, query, body)
            except ApiError as e:
                response = _json_response({"message": e.message}, e.status)
        if is_write:  # recorded before the answer goes out: a client that got it sees it in writes()
            if body is None and raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            flat = {k: v[0] for k, v in query.items() if v}
            self.server.record_write(WriteRecord(method, path, flat, copy.deepcopy(body), response.status))
        self._send(response, _stats_key(method, path))

    def _handle(self, method: str, path: str, query: Query, body: Any) -> _Response:
        state = self.server.state
        if method == "GET":
            return self._get(path, query)
        m = _OBJECT_PATH.fullmatch(path)
        ref = unquote(m[2]) if m else ""
        if method == "POST":
            if path == "/_bench/reset":
                with self.server.stats_lock:
                    self.server.stats.clear()
                return _Response(204, b"", "")
            if path == "/services/create":
                return _json_response({"ID": state.create_service(body)}, 201)
            if path == "/swarm/update":
                state.update_swarm(query, body)
                return _EMPTY_OK
            if path == "/configs/create":
                return _json_response({"ID": state.create_config(body)}, 201)
            if m and m[1] == "configs" and m[3]:
                state.update_config(ref, query, body)
                return _EMPTY_OK
            if m and m[1] == "nodes" and m[3]:
                state.update_node(ref, query, body)
                return _EMPTY_OK
            if m and m[1] == "services" and m[3]:
                state.update_service(ref, query, body)
                return _json_response({})
        if method == "DELETE" and m and m[1] == "services" and not m[3]:
            state.remove_service(ref)
            return _EMPTY_OK
        if method == "DELETE" and m and m[1] == "configs" and not m[3]:
            state.remove_config(ref)
            return _Response(204, b"", "")
        return _json_response({"message": f"the fake engine does not implement {method} {path}"}, 501)

    def _get(self, path: str, query: Query) -> _Response:
        state = self.server.state
        if path == "/_ping":
            return _Response(200, b"OK", "text/plain; charset=utf-8")
        if path == "/version":
            return _json_response(
                {
                    "Version": ENGINE_VERSION,
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": "6.1.0",
                    "GoVersion": "go1.19.9",
                    "GitCommit": "a0b1c2d",
                    "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": {}}],
                }
            )
        if path == "/info":
            return _json_response(state.info())
        if path == "/swarm":
            return _Response(200, state.inspect_swarm())
        if path == "/nodes":
            return _Response(200, state.encoded("nodes"))
        if path == "/services":
            return _Response(200, state.list_services(_filters(query)))
        if path == "/tasks":
            return _Response(200, state.list_tasks(_filters(query)))
        if path == "/configs":
            return _Response(200, state.list_configs(_filters(query)))
        if path == "/_bench/stats":
            with self.server.stats_lock:
                stats = {p: {"requests": s.requests, "bytes": s.bytes} for p, s in self.server.stats.items()}
            return _json_response(stats)
        m = _OBJECT_PATH.fullmatch(path)
        if m and m[1] == "configs" and not m[3]:
            with state.lock:
                return _json_response(state._find_config(unquote(m[2])))
        if m and not m[3]:
            return _Response(200, state.inspect(m[1], unquote(m[2])))
        return _json_response({"message": f"page not found: {path}"}, 404)

    # --- /events --------------------------------------------------------------------------------------------

    def _events(self, path: str, query: Query) -> None:
        """Newline-delimited JSON messages in chunks, until the client hangs up, ``until`` passes or the server
        closes; the subscription is taken before the headers go out, so a client that has them misses nothing."""
        try:
            filters = _filters(query)
            unknown = sorted(set(filters) - EVENT_FILTERS)
            if unknown:
                raise ApiError(400, f"invalid filter '{unknown[0]}'")
            since = _parse_timestamp(_query(query, "since"), "since")
            until = _parse_timestamp(_query(query, "until"), "until")
        except ApiError as e:
            self._send(_json_response({"message": e.message}, e.status), path)
            return
        bus = self.server.state.events
        sub = bus.subscribe(filters, since, until)
        try:
            self.server.count(path, 0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Api-Version", API_VERSION)
            self.send_header("Server", f"Docker/{ENGINE_VERSION} (linux)")
            self.end_headers()
            self.wfile.flush()
            if self._stream(sub, until):
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away
        finally:
            bus.unsubscribe(sub)
            self.close_connection = True

    def _stream(self, sub: _Subscriber, until: int | None) -> bool:
        """Sends events until the stream ends; False when the client hung up."""
        state = self.server.state
        while not self.server.closing.is_set():
            wait = EVENTS_POLL_SECONDS
            if until is not None:
                wait = min(wait, max(0.0, (until - state.now_ns()) / 1e9))
            try:
                event = sub.queue.get(timeout=wait)
            except queue.Empty:
                if self._client_gone():
                    return False
                if until is not None and state.now_ns() >= until:
                    return True
                continue
            if event is None or (until is not None and int(event["timeNano"]) > until):
                return True
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1024)
        except OSError:
            return True


# --- the fake Engine --------------------------------------------------------------------------------------


class FakeEngine:
    """The fake Engine on 127.0.0.1 (a free port), in a background thread; a context manager.

    ``clock`` (epoch nanoseconds) stamps UpdatedAt and event times; the wall clock by default."""

    def __init__(
        self, cluster: Cluster | None = None, port: int = 0, *, clock: Callable[[], int] | None = None
    ) -> None:
        self.cluster = cluster or Cluster()
        self.state = SwarmState(self.cluster, clock)
        self._server = _Server(("127.0.0.1", port), self.state)
        self._thread = threading.Thread(target=self._server.serve, name="fake-engine", daemon=True)
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FakeEngine:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving, ends the event streams, hangs up on every client and joins every thread."""
        if self._closed:
            return
        self._closed = True
        self._server.closing.set()
        self._server.wake()
        if self._thread.ident is not None:
            self._thread.join(5)
        self.state.events.close()
        self._server.close_connections(5)
        self._server.server_close()

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- counters -----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, PathStats]:
        with self._server.stats_lock:
            return {p: PathStats(s.requests, s.bytes) for p, s in self._server.stats.items()}

    def reset_stats(self) -> None:
        with self._server.stats_lock:
            self._server.stats.clear()

    # --- test hooks ---------------------------------------------------------------------------------------

    def writes(self) -> list[WriteRecord]:
        """Every write request received so far (POST/PUT/DELETE, /_bench aside), in order, with its status."""
        with self._server.stats_lock:
            return list(self._server.write_log)

    def clear_writes(self) -> None:
        with self._server.stats_lock:
            self._server.write_log.clear()

    def fail_next(self, method: str, path_regex: str, status: int, message: str, count: int = 1) -> None:
        """The next ``count`` requests of ``method`` (``*``: any) whose path (without /vX.Y, e.g.
        ``/nodes/<id>/update``) matches ``path_regex`` (re.search) get ``status`` and ``{"message": message}``
        and change nothing. Rules are tried in the order given."""
        if count < 1:
            raise ValueError("count must be at least 1")
        failure = _Failure(method.upper(), re.compile(path_regex), status, message, count)
        with self._server.stats_lock:
            self._server.failures.append(failure)

    def set_node_state(self, hostname: str, state: str) -> None:
        """``ready`` or ``down`` (heartbeat lost): a node update event, and the orchestrator's reaction."""
        self.state.set_node_state(hostname, state)

    def move_task(self, service_name: str, to_hostname: str, slot: int | None = None) -> JSON:
        """The service's running task moves to the node (old one shut down, new one running): returns it."""
        return self.state.move_task(service_name, to_hostname, slot)

    @property
    def swarm(self) -> JSON:
        return self.state.swarm_json()

    def node(self, hostname: str) -> JSON:
        """The node as GET /nodes/<hostname> answers it (a copy); KeyError when there is none."""
        return self.state.node_json(hostname)

    def service(self, name: str) -> JSON:
        """The service as GET /services/<name> answers it (a copy); KeyError when there is none."""
        return self.state.service_json(name)

    def tasks(self, service: str | None = None, desired_state: str | None = None) -> list[JSON]:
        """The tasks (of one service), as GET /tasks lists them (copies)."""
        return self.state.task_list(service, desired_state)

    def events(self) -> list[JSON]:
        """Every event published so far, in order (copies)."""
        return self.state.events.log()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--replicas", type=int, default=TASKS_PER_SERVICE)
    ap.add_argument("--no-history", action="store_true", help="no shutdown history tasks")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    cluster = Cluster(args.nodes, args.services, args.groups, args.replicas, not args.no_history)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeEngine(cluster, args.port) as fake:
        print(f"docker_host={fake.docker_host}", flush=True)
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
