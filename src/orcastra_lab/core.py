"""The lab itself: ``Lab`` brings an N-node Swarm up, kills/starts/restarts nodes, and tears it down.

Every step of ``up`` is idempotent (it reuses what runs and starts what is missing), and every resource
is written to the state file before or as it is created, so ``down`` removes exactly what this lab
created, even after a crash half-way through ``up``.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orcastra_lab import daemons, image, memory, network, node_exporter_image, orcastra_image, registry, swarm
from orcastra_lab.errors import LabError
from orcastra_lab.host import (
    is_alive,
    kill_and_wait,
    log_tail,
    mounts_under,
    pids_with_path_in_cmdline,
    remove_cgroups,
    require_programs,
    require_root,
    send_signal,
    unmount_all_under,
    wait_for,
)
from orcastra_lab.layout import (
    DEFAULT_BASE_DIR,
    DEFAULT_NAME,
    MAX_NODES,
    SWARM_PORT,
    LabLayout,
    NodeLayout,
    is_valid_lab_name,
    node_index,
)
from orcastra_lab.state import LabState, NodeRecord, ProcessRecord, load_state, locked, save_state

DEFAULT_TIMEOUT_SECONDS = 120.0
GRACEFUL_STOP_SECONDS = 60.0
JOIN_RETRY_AFTER_SECONDS = 25.0
REGISTRY_PROGRAMS = ("docker-registry",)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabEnv:
    """How to reach a running lab: what tests and ``eval "$(orcastra lab env)"`` need."""

    docker_host: str
    registry: str
    image: str
    node_hosts: dict[str, str]
    # node -> its node_exporter's /metrics URL (meminfo of the node's own memory view, see lab/memory.py)
    node_exporters: dict[str, str] = field(default_factory=dict)
    # The Engine socket's path inside every node's containers (a stack's docker.sock mount source).
    container_socket: str = "/var/run/docker.sock"
    # Orcastra's own image in the lab registry, once ``orcastra lab image`` built it.
    orcastra_image: str | None = None
    # The node_exporter image for deploy/node-exporter.yml, once ``orcastra lab image --node-exporter`` built it.
    node_exporter_image: str | None = None

    def exports(self) -> str:
        """Shell lines exporting DOCKER_HOST, the registry, the image, each node's endpoint and exporter."""
        pairs = [
            ("DOCKER_HOST", self.docker_host),
            ("ORCASTRA_LAB_REGISTRY", self.registry),
            ("ORCASTRA_LAB_IMAGE", self.image),
            ("ORCASTRA_DOCKER_SOCKET", self.container_socket),
        ]
        if self.orcastra_image is not None:
            pairs.append(("ORCASTRA_LAB_ORCASTRA_IMAGE", self.orcastra_image))
        if self.node_exporter_image is not None:
            pairs.append(("ORCASTRA_LAB_NODE_EXPORTER_IMAGE", self.node_exporter_image))
        pairs += [(f"ORCASTRA_LAB_NODE_{name.upper()}_HOST", host) for name, host in self.node_hosts.items()]
        pairs += [(f"ORCASTRA_LAB_NODE_{name.upper()}_EXPORTER", url) for name, url in self.node_exporters.items()]
        return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in pairs)


@dataclass(frozen=True)
class NodeStatus:
    """One node: its daemon, and what the Swarm says about it (None when no manager answered)."""

    name: str
    address: str
    pid: int | None
    daemon_alive: bool
    swarm_state: str | None
    availability: str | None
    role: str | None
    leader: bool = False


class Lab:
    """One lab, identified by ``name``; its state lives in ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, name: str = DEFAULT_NAME, *, progress: Progress | None = None):
        if not is_valid_lab_name(name):
            raise LabError(
                f"invalid lab name {name!r}: use lower-case letters, digits and dashes, starting with a letter "
                "(at most 31 characters)"
            )
        self.name = name
        self.layout = LabLayout.for_name(name, state_dir)
        self._progress = progress

    @property
    def state_dir(self) -> Path:
        return self.layout.state_dir

    # --- public API -----------------------------------------------------------------------------------

    def up(
        self,
        nodes: int = 3,
        managers: int = 1,
        swarm: bool = True,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        node_memory: int | None = None,
    ) -> LabEnv:
        """Bring the lab up (idempotent): network, registry, daemons, each node's memory view and
        node_exporter, image, and the Swarm unless ``swarm`` is False. Returns once every node is Ready (or,
        without a Swarm, every daemon answers /_ping). ``node_memory`` (bytes) sets every node's memory
        limit; None keeps the recorded limits (``set_node_memory`` changes one node's)."""
        if not 1 <= nodes <= MAX_NODES:
            raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
        if not 1 <= managers <= nodes:
            raise LabError(f"--managers must be between 1 and the number of nodes ({nodes}), not {managers}")
        self._require_host()
        deadline = time.monotonic() + timeout
        with locked(self.state_dir):
            state = self._load_or_new()
            if len(state.nodes) > nodes:
                self._say(f"lab {self.name} already has {len(state.nodes)} nodes; keeping them all")
            for index in range(len(state.nodes) + 1, nodes + 1):
                node = self.layout.node(index)
                state.nodes[node.name] = NodeRecord(name=node.name, index=index, address=node.address)
            for record in state.nodes.values():
                if record.index <= managers:
                    record.role = "manager"
            self._save(state)

            self._ensure_network(state)
            self._ensure_registry(state, deadline)
            self._ensure_daemons(state, deadline)
            self._ensure_memory(state, node_memory, deadline)
            self._ensure_image(state)
            if swarm or state.swarm:
                self._ensure_swarm(state, deadline)
            env = self._env(state)
        self._say(
            f"lab {self.name} is up: {len(state.nodes)} nodes" + (", swarm ready" if state.swarm else ", no swarm")
        )
        return env

    def env(self) -> LabEnv:
        """How to reach the lab; LabError when it is not up."""
        state = load_state(self.layout.state_file)
        if state is None or not state.nodes:
            raise LabError(f"lab {self.name} is not up (no state in {self.state_dir}); run: {self._up_command()}")
        first = self.layout.node(1)
        if not daemons.is_dockerd_of(first, state.nodes[first.name].dockerd):
            raise LabError(
                f"lab {self.name} is not up: {first.name}'s dockerd is not running; run: {self._up_command()}"
            )
        if state.image is None:
            raise LabError(f"lab {self.name} is not up: its image was never pushed; run: {self._up_command()}")
        return self._env(state)

    def status(self) -> list[NodeStatus]:
        """Each node's daemon and, when a manager answers, its Swarm state, availability and role."""
        state = load_state(self.layout.state_file)
        if state is None:
            raise LabError(f"lab {self.name} does not exist (no state in {self.state_dir})")
        by_id: dict[str, swarm.SwarmNode] = {}
        if state.swarm:
            by_id = {n.id: n for n in self._try_list_nodes(state)}
        result = []
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            node = self.layout.node(record.index)
            alive = daemons.is_dockerd_of(node, record.dockerd)
            listed = by_id.get(record.swarm_node_id or "")
            result.append(
                NodeStatus(
                    name=record.name,
                    address=record.address,
                    pid=record.dockerd.pid if record.dockerd else None,
                    daemon_alive=alive,
                    swarm_state=listed.state if listed else None,
                    availability=listed.availability if listed else None,
                    role=listed.role if listed else None,
                    leader=listed.leader if listed else False,
                )
            )
        return result

    def kill(self, node: str) -> None:
        """SIGKILL that node's dockerd only, as on a power loss: its containerd shims and containers stay."""
        self._require_host()
        self._existing_state()  # before locking: the lock would create the state dir of a missing lab
        with locked(self.state_dir):
            state = self._existing_state()
            layout, record = self._node(state, node)
            if not daemons.is_dockerd_of(layout, record.dockerd) or record.dockerd is None:
                self._say(f"{node}: dockerd is not running")
                return
            send_signal(record.dockerd, signal.SIGKILL)
            dockerd = record.dockerd
            wait_for(lambda: not is_alive(dockerd), timeout=15, what=f"{node}'s dockerd to die after SIGKILL")
            self._say(f"{node}: dockerd (pid {dockerd.pid}) killed")

    def start(self, node: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Bring a killed node back: end its leftovers, start dockerd, wait until it answers and is Ready."""
        self._require_host()
        deadline = time.monotonic() + timeout
        self._existing_state()  # before locking: the lock would create the state dir of a missing lab
        with locked(self.state_dir):
            state = self._existing_state()
            layout, record = self._node(state, node)
            if daemons.is_dockerd_of(layout, record.dockerd):
                self._say(f"{node}: dockerd already running (pid {record.dockerd.pid if record.dockerd else '?'})")
            else:
                self._start_node(state, layout, record, deadline)
            self._wait_node_ready(state, layout, record, deadline)

    def restart(self, node: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """A node's "reboot": SIGTERM dockerd, wait for it to exit, start it again, wait until Ready."""
        self._require_host()
        deadline = time.monotonic() + timeout
        self._existing_state()  # before locking: the lock would create the state dir of a missing lab
        with locked(self.state_dir):
            state = self._existing_state()
            layout, record = self._node(state, node)
            if record.dockerd is not None and daemons.is_dockerd_of(layout, record.dockerd):
                self._say(f"{node}: stopping dockerd (pid {record.dockerd.pid})")
                grace = max(1.0, min(GRACEFUL_STOP_SECONDS, self._left(deadline) / 2))
                if not daemons.stop_dockerd(layout, record.dockerd, grace):
                    self._say(f"{node}: dockerd did not stop within {grace:.0f} s; killing it")
                    kill_and_wait([record.dockerd])
            self._start_node(state, layout, record, deadline)
            self._wait_node_ready(state, layout, record, deadline)

    def partition(self, node: str) -> None:
        """Cut NODE off the lab network (its veth's host end goes down): Swarm traffic to and from it stops, its
        dockerd and containers keep running, and its Engine still answers on its unix socket. ``heal`` (or
        ``up``, which mends everything) ends it."""
        self._set_partitioned(node, partitioned=True)

    def heal(self, node: str) -> None:
        """End a partition of NODE (its veth's host end comes up again)."""
        self._set_partitioned(node, partitioned=False)

    def _set_partitioned(self, node: str, *, partitioned: bool) -> None:
        self._require_host()
        self._existing_state()  # before locking: the lock would create the state dir of a missing lab
        with locked(self.state_dir):
            state = self._existing_state()
            layout, _ = self._node(state, node)
            network.set_link(layout.veth_host, up=not partitioned)
            self._say(f"{node}: {'partitioned (link down)' if partitioned else 'healed (link up)'}")

    def set_node_memory(self, node: str, limit_bytes: int | None) -> None:
        """Set one node's memory limit (its cgroup parent's memory.limit_in_bytes); None: unlimited."""
        self._require_host()
        self._existing_state()  # before locking: the lock would create the state dir of a missing lab
        with locked(self.state_dir):
            state = self._existing_state()
            layout, record = self._node(state, node)
            memory.set_limit(layout, limit_bytes)
            record.memory_limit_bytes = limit_bytes
            self._save(state)
            # At once rather than at the writer's next tick: a caller reads the exporter right after this.
            memory.write_meminfo(layout, memory.host_mem_total())
            self._say(f"{node}: memory limit {memory.format_size(limit_bytes)}")

    def build_orcastra_image(self) -> orcastra_image.OrcastraImage:
        """Build Orcastra's image by the repository's Dockerfile on node1 (offline: a Debian base made by
        mmdebstrap, wheels made here), push it to the lab registry and record it, so ``env`` exports
        ORCASTRA_LAB_ORCASTRA_IMAGE. The lab must be up; building again replaces the recorded image."""
        self._require_host()
        self.env()  # a clear error when the lab is not up, before the lock (which would create its dir)
        with locked(self.state_dir):
            state = self._existing_state()
            built = orcastra_image.build_and_push(self.layout, self.layout.node(1), self._say)
            state.orcastra_image = built.ref
            self._save(state)
        self._say(built.summary())
        return built

    def build_node_exporter_image(self) -> node_exporter_image.NodeExporterImage:
        """Build the node_exporter image of deploy/node-exporter.yml (Debian's binary on Orcastra's base) on
        node1, push it to the lab registry and record it, so ``env`` exports ORCASTRA_LAB_NODE_EXPORTER_IMAGE.
        A tag the registry already holds (same binary, same recipe) is not built again."""
        self._require_host()
        self.env()  # a clear error when the lab is not up, before the lock (which would create its dir)
        with locked(self.state_dir):
            state = self._existing_state()
            built = node_exporter_image.build_and_push(self.layout, self.layout.node(1), self._say)
            state.node_exporter_image = built.ref
            self._save(state)
        self._say(built.summary())
        return built

    def down(self) -> None:
        """Remove exactly what this lab created. Safe to run twice and on a partly-up lab."""
        self._require_host()
        if not self.state_dir.exists():
            self._say(f"lab {self.name}: nothing to remove ({self.state_dir} does not exist)")
            return
        with locked(self.state_dir):
            state = load_state(self.layout.state_file) or LabState(name=self.name, state_dir=str(self.state_dir))
            problems = self._teardown(state)
            if problems:
                # Keep the state file so a second ``down`` can try again.
                raise LabError(f"lab {self.name}: down left things behind:\n" + "\n".join(f"  - {p}" for p in problems))
            shutil.rmtree(self.state_dir, ignore_errors=True)
        for empty in (self.layout.container_socket_dir, self.layout.container_socket_dir.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()
        if self.state_dir.parent == DEFAULT_BASE_DIR:
            # The shared parent goes too once the last lab in it is down (rmdir fails while others exist).
            with contextlib.suppress(OSError):
                DEFAULT_BASE_DIR.rmdir()
        self._say(f"lab {self.name} is down")

    # --- up, step by step ---------------------------------------------------------------------------------

    def _ensure_network(self, state: LabState) -> None:
        layout = self.layout
        if state.bridge is None:
            # A bridge or address we did not record belongs to someone else (another lab, say).
            if network.link_exists(layout.bridge):
                raise LabError(f"interface {layout.bridge} exists but lab {self.name} did not create it")
            others = {k: v for k, v in network.addresses_in_subnet(layout.subnet).items() if k != layout.bridge}
            if others:
                taken = ", ".join(f"{k} ({v})" for k, v in others.items())
                raise LabError(f"subnet {layout.subnet} of lab {self.name} is already in use on this host: {taken}")
            state.bridge = layout.bridge
            state.bridge_address = layout.bridge_address
            self._save(state)
        if not network.link_exists(layout.bridge):
            self._say(f"creating bridge {layout.bridge} ({layout.bridge_address}/24)")
        network.create_bridge(layout.bridge, layout.bridge_address, layout.subnet)

        rule = network.forward_rule(layout.bridge)
        if state.iptables_rule is None:
            state.iptables_rule = rule
            self._save(state)
        network.insert_forward_rule(rule)

        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            node = layout.node(record.index)
            if record.netns is None or record.veth_host is None:
                record.netns, record.veth_host = node.netns, node.veth_host
                self._save(state)
            if not network.node_interface_ready(node) or not network.link_exists(node.veth_host):
                self._say(f"{node.name}: namespace {node.netns}, veth {node.veth_host}, address {node.address}")
            network.create_netns(node)
            network.plug_node(node, layout.bridge, layout.subnet)

    def _ensure_registry(self, state: LabState, deadline: float) -> None:
        layout = self.layout
        if not registry.is_running(layout, state.registry):
            self._say(f"starting registry on {layout.registry}")
            state.registry = registry.start(layout)
            self._save(state)
        wait_for(
            lambda: registry.is_ready(layout),
            timeout=self._left(deadline),
            what=f"the lab registry on {layout.registry}",
            on_timeout=lambda: log_tail(layout.registry_log),
        )

    def _ensure_daemons(self, state: LabState, deadline: float) -> None:
        if state.cgroup_root is None:
            state.cgroup_root = self.layout.cgroup_root
            self._save(state)
        started: list[tuple[NodeLayout, NodeRecord]] = []
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            node = self.layout.node(record.index)
            if daemons.is_dockerd_of(node, record.dockerd):
                continue
            self._spawn_dockerd(state, node, record, deadline)
            started.append((node, record))
        # Daemons start in parallel; wait for all of them here.
        for node, record in started:
            self._wait_ping(node, record.dockerd, deadline)

    def _ensure_memory(self, state: LabState, node_memory: int | None, deadline: float) -> None:
        """Each node's memory limit, its procfs view, the writer keeping the views current, and one
        node_exporter per node serving its view on the node's address."""
        layout = self.layout
        if node_memory is not None:
            for record in state.nodes.values():
                record.memory_limit_bytes = node_memory
            self._save(state)
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            memory.set_limit(layout.node(record.index), record.memory_limit_bytes)
        # The first views are written here so each exporter answers with real numbers from its first scrape.
        memory.refresh_all(layout, state)
        if not memory.is_writer_of(layout, state.meminfo_writer):
            self._say("starting the per-node meminfo writer")
            state.meminfo_writer = memory.start_writer(layout)
            self._save(state)
        started: list[NodeLayout] = []
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            node = layout.node(record.index)
            if memory.is_exporter_of(node, record.node_exporter):
                continue
            self._say(f"{node.name}: starting node_exporter on {node.address}")
            record.node_exporter = memory.start_exporter(node)
            self._save(state)
            started.append(node)
        for node in started:
            self._wait_exporter(node, deadline)

    def _wait_exporter(self, node: NodeLayout, deadline: float) -> None:
        wait_for(
            lambda: memory.exporter_answers(node),
            timeout=self._left(deadline),
            what=f"{node.name}'s node_exporter on {node.exporter_url}",
            on_timeout=lambda: log_tail(node.exporter_log),
        )

    def _ensure_image(self, state: LabState) -> None:
        layout = self.layout
        if registry.has_image(layout):
            state.image = layout.image
            self._save(state)
            return
        self._say(f"building {layout.image} from busybox and pushing it")
        image.build_and_push(layout, layout.node(1))
        if not registry.has_image(layout):
            raise LabError(f"{layout.image} was pushed but the registry does not list it; see {layout.registry_log}")
        state.image = layout.image
        self._save(state)

    def _ensure_swarm(self, state: LabState, deadline: float) -> None:
        first = self.layout.node(1)
        with swarm.engine(first.docker_host) as client:
            local = swarm.local_swarm(client)
            if local.state == "inactive":
                self._say(f"{first.name}: swarm init (advertise {first.address})")
                swarm.init(client, first.address)
                local = swarm.local_swarm(client)
            if local.state != "active" or not local.is_manager:
                raise LabError(
                    f"{first.name} is not an active swarm manager (state {local.state}"
                    + (f": {local.error}" if local.error else "")
                    + f"); run `orcastra lab down --name {self.name}` and up again"
                )
            state.nodes[first.name].swarm_node_id = local.node_id
            state.swarm = True
            self._save(state)

        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            if record.index != 1:
                self._ensure_member(state, self.layout.node(record.index), record, deadline)
        self._ensure_roles(state)
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            self._wait_node_ready(state, self.layout.node(record.index), record, deadline)

    def _ensure_member(self, state: LabState, node: NodeLayout, record: NodeRecord, deadline: float) -> None:
        """Join ``node`` to the swarm unless it is in it; a join stuck in "pending" is retried from scratch.

        Seen here: a join that timed out never recovered by its own background retry, while
        ``swarm leave --force`` and a fresh join did.
        """
        first = self.layout.node(1)
        manager_addr = f"{first.address}:{SWARM_PORT}"
        for attempt in range(1, 4):
            with swarm.engine(node.docker_host, timeout=swarm.JOIN_TIMEOUT_SECONDS) as client:
                local = swarm.local_swarm(client)
                if local.state == "active":
                    self._record_node_id(state, record, local.node_id)
                    return
                if local.state in ("pending", "error"):
                    swarm.leave(client)
                with swarm.engine(first.docker_host) as manager:
                    tokens = swarm.join_tokens(manager)
                role = "manager" if record.role == "manager" else "worker"
                self._say(
                    f"{node.name}: joining the swarm as {role}" + (f" (attempt {attempt})" if attempt > 1 else "")
                )
                message = swarm.join(client, manager_addr, tokens[role], node.address)

                def joined(c: swarm.Client = client) -> swarm.LocalSwarm | None:
                    now = swarm.local_swarm(c)
                    return now if now.state == "active" else None

                try:
                    local = wait_for(joined, timeout=min(JOIN_RETRY_AFTER_SECONDS, self._left(deadline)), what="join")
                except LabError:
                    if time.monotonic() >= deadline:
                        raise LabError(
                            f"{node.name} could not join the swarm at {manager_addr}: {message or 'timed out'}\n"
                            + log_tail(node.log)
                        ) from None
                    continue
                self._record_node_id(state, record, local.node_id)
                return
        raise LabError(
            f"{node.name} could not join the swarm at {manager_addr} after 3 attempts\n" + log_tail(node.log)
        )

    def _record_node_id(self, state: LabState, record: NodeRecord, node_id: str) -> None:
        """Remember the node's Swarm ID; after a fresh join, drop the stale entry the old ID left behind."""
        old = record.swarm_node_id
        if old and old != node_id:
            with swarm.engine(self.layout.node(1).docker_host) as manager:
                swarm.remove_node(manager, old)
        record.swarm_node_id = node_id
        self._save(state)

    def _ensure_roles(self, state: LabState) -> None:
        """Promote nodes that should be managers (``up --managers`` grew); never demote."""
        with swarm.engine(self.layout.node(1).docker_host) as manager:
            listed = {n.id: n for n in swarm.list_nodes(manager)}
            for record in state.nodes.values():
                current = listed.get(record.swarm_node_id or "")
                if record.role == "manager" and current is not None and current.role != "manager":
                    self._say(f"{record.name}: promoting to manager")
                    swarm.promote(manager, current)

    # --- nodes -------------------------------------------------------------------------------------------

    def _spawn_dockerd(self, state: LabState, node: NodeLayout, record: NodeRecord, deadline: float) -> None:
        ended = daemons.end_leftovers(node)
        if ended:
            self._say(f"{node.name}: ended {ended} leftover process(es) of the previous dockerd")
        daemons.clear_pidfile(node, timeout=max(1.0, self._left(deadline)))
        self._say(f"{node.name}: starting dockerd")
        record.dockerd = daemons.start_dockerd(node, self.layout.registry)
        self._save(state)

    def _start_node(self, state: LabState, node: NodeLayout, record: NodeRecord, deadline: float) -> None:
        self._spawn_dockerd(state, node, record, deadline)
        self._wait_ping(node, record.dockerd, deadline)

    def _wait_ping(self, node: NodeLayout, dockerd: ProcessRecord | None, deadline: float) -> None:
        def answered() -> bool:
            if swarm.answers_ping(node.docker_host):
                return True
            if dockerd is not None and not is_alive(dockerd):
                raise LabError(f"{node.name}: dockerd exited during start-up; log {node.log}:\n{log_tail(node.log)}")
            return False

        wait_for(
            answered,
            timeout=self._left(deadline),
            what=f"{node.name}'s dockerd to answer /_ping",
            on_timeout=lambda: f"log {node.log}:\n{log_tail(node.log)}",
        )

    def _wait_node_ready(self, state: LabState, node: NodeLayout, record: NodeRecord, deadline: float) -> None:
        """Without a swarm: the daemon answers. With one: a manager lists the node as ready."""
        self._wait_ping(node, record.dockerd, deadline)
        if not state.swarm or record.swarm_node_id is None:
            return
        node_id = record.swarm_node_id

        def ready() -> bool:
            listed = {n.id: n for n in self._try_list_nodes(state)}
            current = listed.get(node_id)
            return current is not None and current.state == "ready"

        wait_for(
            ready,
            timeout=self._left(deadline),
            interval=0.5,
            what=f"{node.name} to be Ready in the swarm",
            on_timeout=lambda: f"log {node.log}:\n{log_tail(node.log)}",
        )
        self._say(f"{node.name}: ready")

    def _try_list_nodes(self, state: LabState) -> list[swarm.SwarmNode]:
        """The swarm's nodes from the first manager that answers; empty when none does."""
        for record in sorted(state.nodes.values(), key=lambda r: r.index):
            if record.role != "manager":
                continue
            node = self.layout.node(record.index)
            if not daemons.is_dockerd_of(node, record.dockerd):
                continue
            try:
                with swarm.engine(node.docker_host, timeout=10) as manager:
                    return swarm.list_nodes(manager)
            except LabError:
                continue
        return []

    # --- down ---------------------------------------------------------------------------------------------

    def _teardown(self, state: LabState) -> list[str]:  # noqa: PLR0912 - one step per kind of thing the lab recorded, in tear-down order
        """Remove everything recorded (and everything under the lab dir); returns what could not be removed."""
        layout = self.layout
        problems: list[str] = []
        node_layouts = [layout.node(r.index) for r in state.nodes.values()]
        # dockerd first: it would restart a containerd that dies under it.
        first_round = [r.dockerd for r in state.nodes.values() if r.dockerd is not None]
        first_round += pids_with_path_in_cmdline(self.state_dir, ("dockerd",))
        if first_round:
            self._say("stopping daemons")
        kill_and_wait(first_round)
        shim_sockets = [p for n in node_layouts for p in daemons.shim_sockets(n)]
        for node in node_layouts:
            try:
                daemons.end_leftovers(node)
            except LabError as e:
                problems.append(str(e))
        memory_processes = [state.meminfo_writer] + [r.node_exporter for r in state.nodes.values()]
        survivors = kill_and_wait(
            ([state.registry] if state.registry else [])
            + [r for r in memory_processes if r is not None]
            + pids_with_path_in_cmdline(
                self.state_dir, (*daemons.NODE_PROGRAMS, *REGISTRY_PROGRAMS, *memory.MEMORY_PROGRAMS)
            )
        )
        problems += [f"process {r.pid} would not die" for r in survivors]

        still_mounted = unmount_all_under(self.state_dir)
        problems += [f"still mounted: {p}" for p in still_mounted]
        for sock in shim_sockets:
            sock.unlink(missing_ok=True)

        for record in state.nodes.values():
            if record.netns:
                network.delete_netns(record.netns)
            if record.veth_host:
                network.delete_link(record.veth_host)
            if record.netns and network.netns_exists(record.netns):
                problems.append(f"netns {record.netns} remains")
        if state.iptables_rule:
            network.delete_forward_rule(state.iptables_rule)
            if network.forward_rule_present(state.iptables_rule):
                problems.append(f"iptables rule {' '.join(state.iptables_rule)} remains")
        if state.bridge:
            network.delete_link(state.bridge)
            if network.link_exists(state.bridge):
                problems.append(f"bridge {state.bridge} remains")
        if state.cgroup_root:
            remaining = remove_cgroups(state.cgroup_root)
            problems += [f"cgroup {p} remains" for p in remaining]
        if not problems and mounts_under(self.state_dir):
            problems.append(f"mounts remain under {self.state_dir}")
        return problems

    # --- helpers ------------------------------------------------------------------------------------------

    def _require_host(self) -> None:
        require_root()
        require_programs()

    def _load_or_new(self) -> LabState:
        state = load_state(self.layout.state_file)
        if state is None:
            state = LabState(name=self.name, state_dir=str(self.state_dir))
        elif state.name != self.name:
            raise LabError(f"{self.state_dir} holds lab {state.name!r}, not {self.name!r}")
        return state

    def _existing_state(self) -> LabState:
        state = load_state(self.layout.state_file)
        if state is None or not state.nodes:
            raise LabError(f"lab {self.name} is not up (no state in {self.state_dir}); run: {self._up_command()}")
        return state

    def _node(self, state: LabState, name: str) -> tuple[NodeLayout, NodeRecord]:
        record = state.nodes.get(name)
        index = node_index(name)
        if record is None or index is None:
            known = ", ".join(state.node_names())
            raise LabError(f"unknown node {name!r} in lab {self.name}; known nodes: {known}")
        return self.layout.node(index), record

    def _env(self, state: LabState) -> LabEnv:
        hosts = {
            r.name: self.layout.node(r.index).docker_host for r in sorted(state.nodes.values(), key=lambda r: r.index)
        }
        exporters = {
            r.name: self.layout.node(r.index).exporter_url for r in sorted(state.nodes.values(), key=lambda r: r.index)
        }
        return LabEnv(
            docker_host=hosts["node1"],
            registry=self.layout.registry,
            image=state.image or self.layout.image,
            node_hosts=hosts,
            node_exporters=exporters,
            container_socket=str(self.layout.container_socket_dir / "docker.sock"),
            orcastra_image=state.orcastra_image,
            node_exporter_image=state.node_exporter_image,
        )

    def _up_command(self) -> str:
        return "orcastra lab up" + ("" if self.name == DEFAULT_NAME else f" --name {self.name}")

    def _save(self, state: LabState) -> None:
        save_state(self.layout.state_file, state)

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())
