"""Where a lab lives: every name, address and path of one lab, derived from its name alone.

Two labs with different names must coexist on one box, so the bridge, the namespaces, the veths, the
subnet, the cgroup parent and the state dir all derive from the lab name. Linux interface names are
limited to 15 characters (IFNAMSIZ - 1), which is why long lab names are shortened to a tag.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "orcastra"
DEFAULT_BASE_DIR = Path("/var/lib/orcastra-lab")
BASE_DIR_ENV = "ORCASTRA_LAB_DIR"

# The default lab uses 192.168.213.0/24; other labs get a third octet in 100..199 from a hash of their
# name (a clash with an address already on the host is detected when the bridge is created).
DEFAULT_SUBNET_OCTET = 213
OTHER_SUBNET_OCTET_BASE = 100
OTHER_SUBNET_OCTET_SPAN = 100

BRIDGE_HOST_OCTET = 1
FIRST_NODE_HOST_OCTET = 11
MAX_NODES = 50
REGISTRY_PORT = 5000
NODE_EXPORTER_PORT = 9100
SWARM_PORT = 2377
CONTAINER_SOCKET_BASE = Path("/run/orcastra-lab")
IMAGE_REPOSITORY = "orcastra/busybox"
IMAGE_TAG = "lab"
IFNAME_MAX_CHARS = 15
TAG_MAX_CHARS = 8

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_NODE_RE = re.compile(r"^node([1-9][0-9]*)$")


def is_valid_lab_name(name: str) -> bool:
    """A lab name is lower-case letters, digits and dashes, starting with a letter, at most 31 chars."""
    return bool(_NAME_RE.match(name))


def node_name(index: int) -> str:
    """Node names are node1..nodeN; they are also the daemons' hostnames, hence the Swarm node hostnames."""
    return f"node{index}"


def node_index(name: str) -> int | None:
    """The index of ``nodeN``, or None when ``name`` is not a node name."""
    match = _NODE_RE.match(name)
    return int(match.group(1)) if match else None


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()


def lab_tag(name: str) -> str:
    """A short, interface-name-safe tag: the name itself when short, else a prefix plus a hash."""
    compact = name.replace("-", "")
    if name == compact and len(name) <= TAG_MAX_CHARS:
        return name
    return compact[:4] + _digest(name)[:4]


def subnet_octet(name: str) -> int:
    """The third octet of the lab's private 192.168.X.0/24."""
    if name == DEFAULT_NAME:
        return DEFAULT_SUBNET_OCTET
    return OTHER_SUBNET_OCTET_BASE + int(_digest(name), 16) % OTHER_SUBNET_OCTET_SPAN


def default_state_dir(name: str, environ: dict[str, str] | None = None) -> Path:
    """``$ORCASTRA_LAB_DIR/<name>`` when set, else ``/var/lib/orcastra-lab/<name>``."""
    env = os.environ if environ is None else environ
    base = env.get(BASE_DIR_ENV)
    return (Path(base) if base else DEFAULT_BASE_DIR) / name


@dataclass(frozen=True)
class NodeLayout:
    """One node: its namespace, its veth pair, its address and its dockerd's files."""

    name: str
    index: int
    address: str
    netns: str
    veth_host: str
    veth_peer: str
    dir: Path
    cgroup_parent: str
    # The Engine socket's path as the node's containers see it (the same on every node of a lab, like
    # /var/run/docker.sock on a real Swarm): the node's dockerd runs in a mount namespace of its own where
    # this path's directory is a bind mount of ``socket_dir``.
    container_socket: Path

    @property
    def data_root(self) -> Path:
        return self.dir / "data"

    @property
    def exec_root(self) -> Path:
        return self.dir / "exec"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "run"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def config_file(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def netns_path(self) -> Path:
        return Path("/var/run/netns") / self.netns

    @property
    def proc_dir(self) -> Path:
        """The node's own procfs view (only ``meminfo``), what its node_exporter reads as ``/proc``."""
        return self.dir / "proc"

    @property
    def exporter_log(self) -> Path:
        return self.dir / "node-exporter.log"

    @property
    def exporter_url(self) -> str:
        return f"http://{self.address}:{NODE_EXPORTER_PORT}/metrics"


@dataclass(frozen=True)
class LabLayout:
    """Every name and path of one lab."""

    name: str
    state_dir: Path

    @classmethod
    def for_name(cls, name: str, state_dir: Path | None = None) -> LabLayout:
        return cls(name=name, state_dir=state_dir if state_dir is not None else default_state_dir(name))

    @property
    def tag(self) -> str:
        return lab_tag(self.name)

    @property
    def subnet_octet(self) -> int:
        return subnet_octet(self.name)

    @property
    def subnet(self) -> str:
        return f"192.168.{self.subnet_octet}.0/24"

    @property
    def bridge(self) -> str:
        return f"olab-{self.tag}"

    @property
    def bridge_address(self) -> str:
        return f"192.168.{self.subnet_octet}.{BRIDGE_HOST_OCTET}"

    @property
    def registry(self) -> str:
        return f"{self.bridge_address}:{REGISTRY_PORT}"

    @property
    def image(self) -> str:
        return f"{self.registry}/{IMAGE_REPOSITORY}:{IMAGE_TAG}"

    @property
    def cgroup_root(self) -> str:
        """The cgroup (relative to each hierarchy's root) under which every node's containers live."""
        return f"orcastra-lab-{self.name}"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def registry_log(self) -> Path:
        return self.registry_dir / "registry.log"

    @property
    def memory_log(self) -> Path:
        """The log of the process that keeps every node's ``proc/meminfo`` current."""
        return self.state_dir / "memory.log"

    @property
    def docker_config_dir(self) -> Path:
        """DOCKER_CONFIG for the ``docker`` CLI calls, so the lab never touches ~/.docker."""
        return self.state_dir / "docker-cli"

    @property
    def container_socket_dir(self) -> Path:
        """Empty on the host; in each node's mount namespace, that node's own socket directory."""
        return CONTAINER_SOCKET_BASE / self.name

    @property
    def image_build_dir(self) -> Path:
        return self.state_dir / "image-build"

    def node(self, index: int) -> NodeLayout:
        if not 1 <= index <= MAX_NODES:
            raise ValueError(f"node index {index} out of range 1..{MAX_NODES}")
        name = node_name(index)
        return NodeLayout(
            name=name,
            index=index,
            address=f"192.168.{self.subnet_octet}.{FIRST_NODE_HOST_OCTET + index - 1}",
            netns=f"olab-{self.name}-{name}",
            veth_host=f"ov-{self.tag}-{index}",
            veth_peer=f"op-{self.tag}-{index}",
            dir=self.state_dir / name,
            cgroup_parent=f"/{self.cgroup_root}/{name}",
            container_socket=self.container_socket_dir / "docker.sock",
        )
