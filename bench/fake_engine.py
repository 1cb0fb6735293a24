"""A fake Docker Engine for benchmarks: the read endpoints Orcastra uses, served from a generated Swarm.

Why: Orcastra's own cost per reconcile cycle (Engine calls, bytes, CPU) has to be measured at sizes the local
lab cannot hold (1,000 and 5,000 services of 3 tasks). This server answers the same list calls a manager
answers, with objects shaped as in the Engine API reference (v1.41): nodes, services and tasks with Spec,
Version.Index, Status, Description.Hostname, Placement.Constraints, Labels, NetworksAttachments and the rest,
so the bytes parsed are close to a real manager's. It holds one steady, colocated cluster:
- N nodes (node1 is the leader manager), S replicated services of 3 tasks each, plus one ``shutdown`` history
  task per slot (Swarm keeps task history, ``TaskHistoryRetentionLimit``);
- G anchor groups: an anchor pinned to one node by a hostname constraint, and 2-3 dependents that carry
  ``orcastra.follow=<anchor>`` and the ``node.labels.orcastra.anchor.<stack>_<anchor>==true`` constraint, all
  running on the anchor's node, which carries the anchor label: Orcastra has nothing to do (the idle cost).

Endpoints (with or without a ``/vX.Y`` prefix): GET /_ping, /version (ApiVersion 1.41), /info, /nodes,
/nodes/<id>, /services (filters: id, name, label), /services/<id>, /tasks (filters: id, service, node,
desired-state, name), /events (an empty stream held open until the client or the server closes it). Writes
answer 501. Every request is counted with the bytes sent, per path (``stats()``; GET /_bench/stats over HTTP,
POST /_bench/reset to zero them).

Usage: ``with FakeEngine(Cluster(services=1000, groups=50)) as fake: fake.docker_host`` in a process, or
``python -m bench.fake_engine --services 1000 --groups 50`` (prints ``docker_host=tcp://127.0.0.1:PORT``,
serves until killed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import select
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
ENGINE_VERSION = "20.10.24"
STACK = "bench"
IMAGE = "registry.local:5000/orcastra/busybox:lab@sha256:" + "ab" * 32
CREATED = "2026-11-24T10:00:00.000000000Z"
TASKS_PER_SERVICE = 3
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
EVENTS_POLL_SECONDS = 0.2


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
    """The generated objects, and their JSON encodings (encoded once: the server's cost is not measured)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.plans = _plan_services(cluster)
        self.nodes = [self._node(n) for n in range(cluster.nodes)]
        self.services = [self._service(p) for p in self.plans]
        self.tasks = [t for p in self.plans for t in self._tasks(p)]
        self._encoded: dict[str, bytes] = {
            "nodes": json.dumps(self.nodes).encode(),
            "services": json.dumps(self.services).encode(),
            "tasks": json.dumps(self.tasks).encode(),
        }

    def encoded(self, what: str) -> bytes:
        return self._encoded[what]

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

    def _tasks(self, p: _ServicePlan) -> Iterator[JSON]:
        template = self._template(p)
        for slot in range(1, self.cluster.replicas + 1):
            node = p.node if p.node is not None else (p.index + slot) % self.cluster.nodes
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

    # --- filtered reads -----------------------------------------------------------------------------------

    def filtered_services(self, filters: dict[str, set[str]]) -> list[JSON]:
        out = []
        for s in self.services:
            if "id" in filters and not any(s["ID"].startswith(v) for v in filters["id"]):
                continue
            if "name" in filters and not any(s["Spec"]["Name"].startswith(v) for v in filters["name"]):
                continue
            if "label" in filters and not all(_label_match(s["Spec"]["Labels"], v) for v in filters["label"]):
                continue
            out.append(s)
        return out

    def unknown_services(self, refs: set[str]) -> list[str]:
        known = {s["ID"] for s in self.services} | {s["Spec"]["Name"] for s in self.services}
        return sorted(r for r in refs if r not in known)

    def filtered_tasks(self, filters: dict[str, set[str]]) -> list[JSON]:
        service_ids = None
        if "service" in filters:
            wanted = filters["service"]
            service_ids = {s["ID"] for s in self.services if s["ID"] in wanted or s["Spec"]["Name"] in wanted}
        out = []
        for t in self.tasks:
            if service_ids is not None and t["ServiceID"] not in service_ids:
                continue
            if "desired-state" in filters and t["DesiredState"] not in filters["desired-state"]:
                continue
            if "node" in filters and t["NodeID"] not in filters["node"]:
                continue
            if "id" in filters and not any(t["ID"].startswith(v) for v in filters["id"]):
                continue
            out.append(t)
        return out


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


@dataclass
class PathStats:
    requests: int = 0
    bytes: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], data: SwarmData) -> None:
        super().__init__(address, _Handler)
        self.data = data
        self.stats: dict[str, PathStats] = {}
        self.stats_lock = threading.Lock()
        self.closing = threading.Event()

    def count(self, path: str, sent: int) -> None:
        with self.stats_lock:
            s = self.stats.setdefault(path, PathStats())
            s.requests += 1
            s.bytes += sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked /events
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's delayed
    # ACK add ~40 ms to every keep-alive round trip on loopback (the Engine itself has no such stall).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, path: str, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Server", f"Docker/{ENGINE_VERSION} (linux)")
        self.end_headers()
        self.wfile.write(body)
        self.server.count(path, len(body))

    def _json(self, obj: Any, path: str, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), path)

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return VERSION_PREFIX.sub("", parts.path).rstrip("/") or "/", parse_qs(parts.query)

    def do_HEAD(self) -> None:
        path, _ = self._route()
        self.send_response(200 if path == "/_ping" else 404)
        self.send_header("Content-Length", "0")
        self.send_header("Api-Version", API_VERSION)
        self.end_headers()

    def do_GET(self) -> None:
        path, query = self._route()
        data = self.server.data
        filters = parse_filters(next(iter(query.get("filters", [])), None))
        if path == "/_ping":
            self._send(200, b"OK", path, "text/plain; charset=utf-8")
        elif path == "/version":
            self._json(
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
                },
                path,
            )
        elif path == "/info":
            self._json(self._info(), path)
        elif path == "/nodes":
            self._send(200, data.encoded("nodes"), path)
        elif path == "/services":
            if filters:
                self._json(data.filtered_services(filters), path)
            else:
                self._send(200, data.encoded("services"), path)
        elif path == "/tasks":
            unknown = data.unknown_services(filters.get("service", set()))
            if unknown:  # as the real Engine: a service filter naming no service is a 404, not an empty list
                self._json({"message": f"service {unknown[0]} not found"}, path, 404)
            elif filters:
                self._json(data.filtered_tasks(filters), path)
            else:
                self._send(200, data.encoded("tasks"), path)
        elif path.startswith(("/nodes/", "/services/")):
            kind, _, ref = path[1:].partition("/")
            objs = data.nodes if kind == "nodes" else data.services
            found = [
                o for o in objs if ref in (o["ID"], o["Spec"].get("Name"), (o.get("Description") or {}).get("Hostname"))
            ]
            if found:
                self._json(found[0], f"/{kind}/<id>")
            else:
                self._json({"message": f"{kind[:-1]} {ref} not found"}, f"/{kind}/<id>", 404)
        elif path == "/events":
            self._events(path)
        elif path == "/_bench/stats":
            with self.server.stats_lock:
                body = {p: {"requests": s.requests, "bytes": s.bytes} for p, s in self.server.stats.items()}
            self._send(200, json.dumps(body).encode(), "/_bench")
        else:
            self._json({"message": f"page not found: {path}"}, path, 404)

    def do_POST(self) -> None:
        path, _ = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path == "/_bench/reset":
            with self.server.stats_lock:
                self.server.stats.clear()
            self._send(204, b"", "/_bench")
            return
        self._json({"message": "the benchmark engine is read-only"}, path, 501)

    def _info(self) -> JSON:
        c = self.server.data.cluster
        return {
            "ID": _id("engine", 0),
            "Name": "node1",
            "ServerVersion": ENGINE_VERSION,
            "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
            "NCPU": 2,
            "MemTotal": 4 * 1024**3,
            "Containers": c.services * c.replicas,
            "Swarm": {
                "NodeID": _id("node", 0),
                "NodeAddr": "10.10.0.11",
                "LocalNodeState": "active",
                "ControlAvailable": True,
                "Error": "",
                "RemoteManagers": [{"NodeID": _id("node", 0), "Addr": "10.10.0.11:2377"}],
                "Nodes": c.nodes,
                "Managers": 1,
                "Cluster": {"ID": _id("cluster", 0), "Version": {"Index": 10}, "CreatedAt": CREATED},
            },
        }

    def _events(self, path: str) -> None:
        """An event stream with no events: chunked, open until the client hangs up or the server closes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Api-Version", API_VERSION)
        self.end_headers()
        self.wfile.flush()
        self.server.count(path, 0)
        while not self.server.closing.is_set():
            readable, _, _ = select.select([self.connection], [], [], EVENTS_POLL_SECONDS)
            if readable:
                try:
                    if not self.connection.recv(1024):
                        break  # the client closed the stream
                except OSError:
                    break
        self.close_connection = True


class FakeEngine:
    """The fake Engine on 127.0.0.1 (a free port), in a background thread; a context manager."""

    def __init__(self, cluster: Cluster, port: int = 0, *, poll_interval: float = 0.5) -> None:
        """``poll_interval``: how often the server thread checks for shutdown, so close() may wait that long."""
        self.cluster = cluster
        self.data = SwarmData(cluster)
        self._server = _Server(("127.0.0.1", port), self.data)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(poll_interval,), name="fake-engine", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FakeEngine:
        self._thread.start()
        return self

    def stats(self) -> dict[str, PathStats]:
        with self._server.stats_lock:
            return {p: PathStats(s.requests, s.bytes) for p, s in self._server.stats.items()}

    def reset_stats(self) -> None:
        with self._server.stats_lock:
            self._server.stats.clear()

    def close(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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
