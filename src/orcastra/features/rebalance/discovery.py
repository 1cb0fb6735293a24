"""node_exporter found in the Swarm (``rebalance.sources.discover_node_exporter``): the scrape URL of every
Ready node that runs a task of a service labelled ``orcastra.role=node-exporter`` (deploy/node-exporter.yml).

Pure: it reads the cycle's snapshot and makes no Engine call of its own. The URL is
``http://<node address>:<port>/metrics``:

- the node's address, because the exporter publishes its port in host mode on each node it runs on. That
  address is reachable from the controller's container (out through the node's docker_gwbridge) as much as
  from an operator's ``orcastra plan`` on a manager host; a task's overlay address only from inside the
  overlay. A manager's address comes from ``ManagerStatus.Addr`` (the address the other managers dial: its
  ``Status.Addr`` can read 0.0.0.0, moby/moby#35437), a worker's from ``Status.Addr``;
- the port from the service's label ``orcastra.node-exporter.port`` (default 9100).

Both are input from the Swarm: a port label that is not a port number, or a node with no usable address
(empty, unspecified, loopback), is a ``MemoryProblem`` naming the service and label or the node, and that
node gets no URL. Nothing here raises for what the Swarm holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from orcastra.domain.labels import NODE_EXPORTER_PORT_LABEL, NODE_EXPORTER_ROLE, ROLE_LABEL
from orcastra.domain.snapshot import Node, Service, Snapshot
from orcastra.domain.usage import MemoryProblem

DEFAULT_NODE_EXPORTER_PORT = 9100
MAX_PORT = 65535
METRICS_PATH = "/metrics"
SHOWN_LABEL_CHARS = 40  # of a bad label value, in a problem message

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ExporterDiscovery:
    """The URL of each node's discovered exporter (by hostname), and what kept others from one."""

    urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[MemoryProblem, ...] = ()


def node_exporter_services(snapshot: Snapshot) -> tuple[Service, ...]:
    """The services labelled ``orcastra.role=node-exporter``, by name (the first one wins on a node)."""
    found = (s for s in snapshot.services if s.labels.get(ROLE_LABEL) == NODE_EXPORTER_ROLE)
    return tuple(sorted(found, key=lambda s: s.name))


def exporter_port(service: Service) -> int | str:
    """The port the service's label names (the default without one), or what is wrong with the label."""
    raw = service.labels.get(NODE_EXPORTER_PORT_LABEL)
    if raw is None:
        return DEFAULT_NODE_EXPORTER_PORT
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_PORT)) and 1 <= int(text) <= MAX_PORT:
        return int(text)
    shown = raw if len(raw) <= SHOWN_LABEL_CHARS else raw[:SHOWN_LABEL_CHARS] + "..."
    return (
        f"label {NODE_EXPORTER_PORT_LABEL}={shown!r} is not a port number (1-{MAX_PORT}): "
        "its node_exporter tasks are not scraped"
    )


def _ip(text: str) -> IPAddress | None:
    """The IP in ``text``: a bare address, or ``host:port`` / ``[v6]:port`` as ManagerStatus.Addr has it."""
    host = text.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified or ip.is_loopback else ip


def node_url_host(node: Node) -> str | None:
    """The node's address as a URL's host (IPv6 in brackets), or None when the Swarm gives no usable one."""
    ip = _ip(node.manager_addr) if node.manager_addr else None
    if ip is None:
        ip = _ip(node.addr)
    if ip is None:
        return None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def discover_node_exporters(snapshot: Snapshot) -> ExporterDiscovery:
    """Each Ready node running a task of a node-exporter service -> ``http://<address>:<port>/metrics``."""
    urls: dict[str, str] = {}
    problems: list[MemoryProblem] = []
    seen: set[str] = set()  # one URL or one problem per node, whatever the number of services
    for service in node_exporter_services(snapshot):
        port = exporter_port(service)
        if isinstance(port, str):
            problems.append(MemoryProblem(service.name, port))
            continue
        for task in snapshot.running_tasks(service.id):
            node = snapshot.node(task.node_id)
            if node is None or not node.hostname or node.hostname in seen:
                continue
            seen.add(node.hostname)
            host = node_url_host(node)
            if host is None:
                problems.append(
                    MemoryProblem(
                        node.hostname,
                        f"runs {service.name} (node_exporter) but the Swarm gives no usable address for it "
                        f"(Status.Addr {node.addr[:SHOWN_LABEL_CHARS]!r}, "
                        f"ManagerStatus.Addr {node.manager_addr[:SHOWN_LABEL_CHARS]!r}): not scraped",
                    )
                )
                continue
            urls[node.hostname] = f"http://{host}:{port}{METRICS_PATH}"
    return ExporterDiscovery(
        urls=MappingProxyType(dict(sorted(urls.items()))),
        problems=tuple(problems),
    )
