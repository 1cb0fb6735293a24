"""A drop-in replacement for the earlier Orcastra (issue 13), on a lab of its own ("legacy": 3 nodes, 1 manager).

Orcastra runs as a process on the host against the lab's manager, with only what an earlier-tool user gives it:
the earlier variables (seed values), the earlier config directory (``ORCASTRA_LEGACY_DIR`` stands for
``/etc/swarm-orchestration``), no ``orcastra.yml`` (``ORCASTRA_CONFIG`` unset, the default path absent) and the
earlier command file (``ORCASTRA_LEGACY_COMMAND_FILE`` stands for ``/mnt/commands/...``). What is asserted is
what the Swarm did: node labels, where tasks run, service constraints, the Swarm's paused label.

Tests run in file order and share the lab and the stack "leg": compose-style setup and failover ->
remove_all_labels (same process) -> the combined swarm.yml layout (a second process) -> the old command names
and SIGHUP (that process) -> ``orcastra migrate`` on a cluster prepared the old way (stack "old", CLI only).
The lab is torn down at the end of the module unless ORCASTRA_LAB_KEEP=1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.config.load import DEFAULT_CONFIG_PATH
from orcastra.domain.labels import PAUSED_LABEL
from orcastra.features.colocation.plan import anchor_constraint, anchor_label_key
from orcastra_lab import Lab, LabEnv

from .util import deployed_stack, group_node, node_labels, running_nodes, set_node_labels, stop_process, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

LAB_NAME = "legacy"
STACK = "leg"
DB, WEB, KV, KVCLIENT = f"{STACK}_db", f"{STACK}_web", f"{STACK}_kv", f"{STACK}_kvclient"
NODES = ("node1", "node2", "node3")
GROUPS = {DB: {WEB: 2}, KV: {KVCLIENT: 1}}
# Every variable the earlier tool read, and ours that name its paths: none may leak in from the caller.
EARLIER_PREFIXES = ("GC_", "MOD_MANAGER_", "REBALANCE_", "ORCASTRA_")
EARLIER_VARS = frozenset(
    {
        *("TZ", "STACK_NAME", "BOOTSTRAP_MODE", "LOOP_INTERVAL", "PRUNE_UNKNOWN_LABELS", "RELABEL_TIME"),
        *("EVENT_MODE", "POLLING_MODE", "RESTART_DEPENDENTS", "COMMAND_FILE", "NODES_FILE", "DEPENDENCIES_FILE"),
        *("LOG_TO_FILE", "DRY_RUN", "RUN_ONCE", "DEBUG"),
    }
)
# The seed compose service's environment (examples/legacy/docker-compose.yml), STACK_NAME set to this test's
# stack. RELABEL_TIME (an earlier variable, default 60) is 5: with EVENT_MODE=false the resync is the only
# trigger, and the module must stay within CI's budget.
COMPOSE_ENV = {"STACK_NAME": STACK, "DEBUG": "true", "EVENT_MODE": "false", "POLLING_MODE": "true", "RELABEL_TIME": "5"}
WAIT_SECONDS = 90.0
# A dependent's task seen "pending" for longer than this (first to last sighting) had no node to go to: the
# scheduler places a schedulable task within milliseconds (the lab measured ~1.3 s from label to running).
PENDING_GRACE_SECONDS = 2.0
# Swarm's errors for a task that has no node: none fits its constraints, or its node stopped fitting them (the
# constraint enforcer, seen acting within ~1 s of a label removal; see notes/swarm-lab.md).
NO_NODE_ERRORS = ("no suitable node", "no longer meets constraints")
# How long the task poll goes on after `migrate --apply` returns: the enforcer acts on the last step's label
# removal after the command is done.
WATCH_AFTER_SECONDS = 5.0

STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        # never on node1: the test kills the anchor's node and node1 is the lab's first manager
        constraints: [node.hostname != node1]
  web:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
  kv:
    image: ${ORCASTRA_LAB_IMAGE}
  kvclient:
    image: ${ORCASTRA_LAB_IMAGE}
"""

# The seed's dependencies.yml shapes: an anchor with its settings (``services``), and a plain list.
DEPENDENCIES_YML = """
db:
  retry_intervals: [ 2, 10, 60 ]
  restart_dependents: true
  services:
  - web
kv: [ kvclient ]
"""

# The seed's nodes.yml layout: leader, advertise_addr, nodes with ip/labels (list form), options.
NODES_YML = """
leader: node1
advertise_addr: {ip1}
nodes:
  node1:
    ip: {ip1}
    labels: [ homelab, ubuntu ]
  node2:
    ip: {ip2}
    labels: [ homelab, zfs ]
  node3:
    ip: {ip3}
    labels: [ homelab ]
options:
  prune_unknown_labels: false
"""
NODES_YML_LABELS = {"node1": {"homelab", "ubuntu"}, "node2": {"homelab", "zfs"}, "node3": {"homelab"}}

# The combined layout. The nodes' ``endpoint`` is Orcastra's key (a bootstrap needs an Engine to observe each
# node; the earlier tool reached them otherwise): the layout is the earlier one.
SWARM_YML = """
leader: node1
advertise_addr: {ip1}
nodes:
  node1:
    ip: {ip1}
    endpoint: {host1}
    labels: {{ rack: a }}
  node2:
    ip: {ip2}
    endpoint: {host2}
    labels: [ ssd ]
  node3:
    ip: {ip3}
    endpoint: {host3}
    labels: {{ rack: b }}
options:
  prune_unknown_labels: false
dependencies:
  db:
    services: [ web ]
  kv: [ kvclient ]
"""
SWARM_YML_LABELS = {"node1": {"rack": "a"}, "node2": {"ssd": "true"}, "node3": {"rack": "b"}}


def clean_env(docker_host: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any earlier-tool or Orcastra variable, plus DOCKER_HOST and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in EARLIER_VARS and not k.startswith(EARLIER_PREFIXES)}
    env["DOCKER_HOST"] = docker_host
    env.update(extra)
    return env


@dataclass
class Orca:
    """The lab, a work dir, and the one ``orcastra run`` of the moment (a new one stops the previous one)."""

    lab: Lab
    env: LabEnv
    dir: Path
    api: docker.APIClient
    proc: subprocess.Popen[bytes] | None = None
    kind: str = ""
    log_path: Path = field(default_factory=Path)

    @property
    def legacy_commands(self) -> Path:
        return self.dir / "commands" / "swarm-orchestration.command.yml"

    @property
    def results(self) -> Path:
        return self.legacy_commands.parent / (self.legacy_commands.name + ".results.jsonl")

    def addresses(self) -> dict[str, str]:
        return {s.name: s.address for s in self.lab.status()}

    def start(self, kind: str, config_dir: Path, extra: Mapping[str, str]) -> None:
        self.stop()
        env = clean_env(
            self.env.docker_host,
            {
                "ORCASTRA_LEGACY_DIR": str(config_dir),
                "ORCASTRA_LEGACY_COMMAND_FILE": str(self.legacy_commands),
                **extra,
            },
        )
        self.log_path = self.dir / f"run-{kind}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orcastra", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.kind = kind
        wait_for(f"{kind}: the leader lease", lambda: "is the leader" in self.log() or self.died(), timeout=60)
        assert not self.died(), f"orcastra ({kind}) exited with {self.proc.returncode}:\n{self.log()[-3000:]}"

    def died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            self.kind = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def assert_alive(self) -> None:
        assert self.proc is not None, f"no orcastra process ({self.kind})"
        assert self.proc.poll() is None, f"orcastra ({self.kind}) stopped:\n{self.log()[-3000:]}"

    def cycles(self) -> int:
        return self.log().count("cycle triggered by:")

    def result_records(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        lines = [json.loads(x) for x in self.results.read_text().splitlines() if x.strip()]
        return [x for x in lines if x.get("type") == "result" and x.get("result") in ("ok", "error")]

    def run_command(self, line: str, timeout: float = 60) -> dict[str, Any]:
        """Append ``- LINE`` to the earlier command file, as trigger-bootstrap.sh does, and wait for its result."""
        before = len(self.result_records())
        with self.legacy_commands.open("a", encoding="utf-8") as f:
            f.write(f"- {line}\n")
        records = wait_for(
            f"the result of {line!r} in {self.results}",
            lambda: self.result_records()[before:],
            timeout=timeout,
        )
        return records[0]

    def write_compose_config(self) -> Path:
        d = self.dir / "config-compose"
        d.mkdir(exist_ok=True)
        ip = self.addresses()
        (d / "nodes.yml").write_text(NODES_YML.format(ip1=ip["node1"], ip2=ip["node2"], ip3=ip["node3"]))
        (d / "dependencies.yml").write_text(DEPENDENCIES_YML)
        return d

    def start_compose(self) -> None:
        self.start("compose", self.write_compose_config(), COMPOSE_ENV)


@pytest.fixture(scope="module")
def orca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orca]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, a bridge, iptables, dockerd)")
    # No Orcastra config file at all: ORCASTRA_CONFIG is never passed (clean_env), and the default must be absent.
    assert not DEFAULT_CONFIG_PATH.exists(), f"{DEFAULT_CONFIG_PATH} exists: these tests need a host without it"
    lab = Lab(name=LAB_NAME, progress=lambda m: print(f"lab: {m}", flush=True))
    started = time.monotonic()
    env = lab.up(nodes=3, managers=1, swarm=True)
    print(f"\nFIGURE lab up: {time.monotonic() - started:.1f} s", flush=True)
    d = tmp_path_factory.mktemp("legacy")
    (d / "commands").mkdir()
    api = docker.APIClient(base_url=env.docker_host, version="auto", timeout=30)
    o = Orca(lab, env, d, api)
    try:
        demote_all_but_node1(api)
        with deployed_stack(env, api, STACK, STACK_FILE, d):
            yield o
            o.stop()
    finally:
        o.stop()
        api.close()
        if os.environ.get("ORCASTRA_LAB_KEEP") != "1":
            lab.down()


def groups_colocated(api: docker.APIClient) -> dict[str, str] | None:
    """anchor -> its node, when every anchor group of the stack runs together on one labelled node."""
    where = {anchor: group_node(api, anchor, deps) for anchor, deps in GROUPS.items()}
    return where if all(where.values()) else None  # type: ignore[return-value]


def roles(api: docker.APIClient) -> dict[str, str]:
    return {n["Description"]["Hostname"]: n["Spec"]["Role"] for n in api.nodes()}


def demote_all_but_node1(api: docker.APIClient) -> None:
    """Back to the lab's shape (node1 the one manager) when a kept lab still has the managers a bootstrap made."""
    for node in api.nodes():
        if node["Description"]["Hostname"] != "node1" and node["Spec"]["Role"] == "manager":
            api.update_node(node["ID"], node["Version"]["Index"], node_spec={**node["Spec"], "Role": "worker"})
    wait_for("node1 the only manager", lambda: roles(api) == {"node1": "manager", "node2": "worker", "node3": "worker"})


def has_labels(api: docker.APIClient, expected: Mapping[str, Mapping[str, str]]) -> bool:
    labels = node_labels(api)
    return all(labels.get(h, {}).get(k) == v for h, want in expected.items() for k, v in want.items())


def test_compose_setup_starts_in_legacy_mode_labels_colocates_and_follows_the_anchor(orca: Orca) -> None:
    """The seed's compose environment and ./config (nodes.yml, dependencies.yml in the seed's shapes), no
    orcastra.yml: Orcastra says "legacy mode", puts nodes.yml's labels on the nodes, colocates both anchor
    groups (settings form and list form), and after the anchor's node is killed, the anchor's label and its
    dependents follow the anchor to the node where Swarm runs it again."""
    started = time.monotonic()
    orca.start_compose()
    config_dir = orca.dir / "config-compose"
    log = orca.log()
    assert f"legacy mode: found {config_dir}/nodes.yml, {config_dir}/dependencies.yml" in log, log[-3000:]
    assert "bootstrap.mode=watch" in log, log[-3000:]
    assert "commands.file=/mnt/commands/swarm-orchestration.command.yml" in log, log[-3000:]

    expected = {h: dict.fromkeys(keys, "true") for h, keys in NODES_YML_LABELS.items()}
    wait_for(f"nodes.yml's labels {expected}", lambda: has_labels(orca.api, expected), timeout=WAIT_SECONDS)
    where = wait_for("both anchor groups colocated", lambda: groups_colocated(orca.api), timeout=WAIT_SECONDS)
    print(f"\nFIGURE legacy start to colocated: {time.monotonic() - started:.1f} s ({where})", flush=True)
    orca.assert_alive()

    victim = where[DB]
    killed = time.monotonic()
    orca.lab.kill(victim)
    try:
        moved = wait_for(
            f"{DB}'s group running together away from {victim}",
            lambda: (n := group_node(orca.api, DB, GROUPS[DB])) not in (None, victim) and n,
            timeout=WAIT_SECONDS,
        )
        print(f"\nFIGURE failover (kill to group together on {moved}): {time.monotonic() - killed:.1f} s", flush=True)
        assert orca.api.inspect_node(victim)["Status"]["State"] == "down"
        assert anchor_label_key(DB) not in node_labels(orca.api)[victim]
    finally:
        orca.lab.start(victim)
    orca.assert_alive()


def test_remove_all_labels_is_refused_while_anchors_run_and_forced_pauses(orca: Orca) -> None:
    """``bootstrap_swarm`` with the seed's nodes.yml (no endpoints) has an error result that says why (nothing
    was done). ``remove_all_labels`` from the earlier command file: refused while the anchors run (the result names
    them and says why); ``remove_all_labels --force`` removes every label Orcastra owns (static labels from
    nodes.yml, anchor labels, the ownership record), sets the Swarm label orcastra.paused, and two cycles later
    the labels are still gone; ``resume`` puts them back and the groups are colocated again."""
    if orca.kind != "compose" or orca.died():
        orca.start_compose()
    wait_for("both anchor groups colocated", lambda: groups_colocated(orca.api), timeout=WAIT_SECONDS)
    before = node_labels(orca.api)

    # The seed's nodes.yml has no endpoints: trigger-bootstrap.sh's line is answered, with the reason.
    bootstrap = orca.run_command("bootstrap_swarm")
    assert (bootstrap["result"], bootstrap["command"]) == ("error", "bootstrap"), bootstrap
    assert "no node in the configuration has an endpoint" in bootstrap["message"], bootstrap

    refused = orca.run_command("remove_all_labels")
    assert refused["result"] == "error", refused
    assert "anchors run" in refused["message"], refused
    assert DB in refused["message"], refused
    assert KV in refused["message"], refused
    assert node_labels(orca.api) == before, "a refused remove_all_labels changed node labels"
    assert PAUSED_LABEL not in (orca.api.inspect_swarm()["Spec"].get("Labels") or {})

    try:
        _forced_removal_pauses(orca)
    finally:
        resumed = orca.run_command("resume")
    assert resumed["result"] == "ok", resumed
    assert PAUSED_LABEL not in (orca.api.inspect_swarm()["Spec"].get("Labels") or {})
    wait_for("both anchor groups colocated after resume", lambda: groups_colocated(orca.api), timeout=WAIT_SECONDS)
    orca.assert_alive()


def _forced_removal_pauses(orca: Orca) -> None:
    forced = orca.run_command("remove_all_labels --force")
    assert forced["result"] == "ok", forced
    assert "paused first" in forced["message"], forced
    # GET /swarm: the Swarm's own labels (the docker CLI shows none of them: `docker info` has no Spec.Labels).
    assert (orca.api.inspect_swarm()["Spec"].get("Labels") or {}).get(PAUSED_LABEL), "no orcastra.paused label"

    def owned_left() -> dict[str, list[str]]:
        owned = {k for keys in NODES_YML_LABELS.values() for k in keys}
        return {
            h: sorted(k for k in labels if k.startswith("orcastra.") or k in owned)
            for h, labels in node_labels(orca.api).items()
            if any(k.startswith("orcastra.") or k in owned for k in labels)
        }

    assert owned_left() == {}, f"labels Orcastra owns left after remove_all_labels --force: {owned_left()}"
    cycles = orca.cycles()
    wait_for("two more cycles while paused", lambda: orca.cycles() >= cycles + 2, timeout=30)
    assert owned_left() == {}, f"a paused Orcastra put labels back: {owned_left()}"
    assert "Orcastra paused by operator command" in orca.log()


def test_combined_swarm_yml_with_watch_and_threshold_60_starts_and_labels(orca: Orca) -> None:
    """The combined swarm.yml layout alone in the config dir, BOOTSTRAP_MODE=watch and
    REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT=60 (both config errors before issue 13): Orcastra starts without a
    config error, says legacy mode and what watch means, derives the rebalance target below 60, applies
    swarm.yml's labels, and its bootstrap (watch = loop + node events: one cycle at start) brings the managers
    to the target, min(3, largest odd <= 3 Ready nodes) = 3, as docs/bootstrap.md says (the earlier tool
    promoted too)."""
    d = orca.dir / "config-swarm"
    d.mkdir(exist_ok=True)
    ip, hosts = orca.addresses(), orca.env.node_hosts
    (d / "swarm.yml").write_text(
        SWARM_YML.format(
            ip1=ip["node1"],
            ip2=ip["node2"],
            ip3=ip["node3"],
            host1=hosts["node1"],
            host2=hosts["node2"],
            host3=hosts["node3"],
        )
    )
    orca.start(
        "swarm-yml",
        d,
        {**COMPOSE_ENV, "BOOTSTRAP_MODE": "watch", "REBALANCE_GLOBAL_MEM_THRESHOLD_PERCENT": "60"},
    )
    log = orca.log()
    assert f"legacy mode: found {d}/swarm.yml" in log, log[-3000:]
    assert "BOOTSTRAP_MODE=watch: heal the Swarm every LOOP_INTERVAL" in log, log[-3000:]
    assert "target" in log, log[-3000:]
    assert "config error" not in log.lower(), log[-3000:]
    wait_for(f"swarm.yml's labels {SWARM_YML_LABELS}", lambda: has_labels(orca.api, SWARM_YML_LABELS), timeout=60)
    wait_for("both anchor groups colocated", lambda: groups_colocated(orca.api), timeout=WAIT_SECONDS)
    wait_for("3 managers after the start's bootstrap", lambda: roles(orca.api) == dict.fromkeys(NODES, "manager"))
    orca.assert_alive()


def test_old_command_names_from_the_earlier_command_file_and_sighup(orca: Orca) -> None:
    """``relabel_all``, ``update_dependents`` and ``bootstrap_swarm`` appended one line at a time to the earlier
    command file (as trigger-bootstrap.sh appends): each has an "ok" result under today's name; SIGHUP re-reads
    the configuration (a swarm.yml change the hot reload cannot see is applied) and runs a bootstrap cycle, and
    the process keeps running."""
    if orca.kind != "swarm-yml" or orca.died():
        pytest.skip("needs the swarm.yml process of the previous test")
    assert f"also watching the earlier tool's command file {orca.legacy_commands}" in orca.log()
    wait_for("both anchor groups colocated", lambda: groups_colocated(orca.api), timeout=WAIT_SECONDS)

    relabel = orca.run_command("relabel_all")
    assert (relabel["result"], relabel["command"]) == ("ok", "relabel"), relabel
    dependents = orca.run_command("update_dependents")
    assert (dependents["result"], dependents["command"]) == ("ok", "update_dependents"), dependents
    assert "colocated" in dependents["message"], dependents  # every group is: nothing to restart
    bootstrap = orca.run_command("bootstrap_swarm", timeout=90)
    assert (bootstrap["result"], bootstrap["command"]) == ("ok", "bootstrap"), bootstrap
    assert "nothing to do" in bootstrap["message"], bootstrap  # the start's bootstrap did it all
    assert roles(orca.api) == dict.fromkeys(NODES, "manager")

    # A change the hot reload cannot see (same size, inode and modification time: the stamps it compares),
    # so only SIGHUP's re-read can bring node1's new label.
    swarm_yml = orca.dir / "config-swarm" / "swarm.yml"
    before = swarm_yml.stat()
    swarm_yml.write_text(swarm_yml.read_text().replace("rack: a", "rack: c"))
    os.utime(swarm_yml, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (swarm_yml.stat().st_size, swarm_yml.stat().st_ino) == (before.st_size, before.st_ino)
    cycles = orca.cycles()
    wait_for("a cycle after the unseen change", lambda: orca.cycles() > cycles, timeout=30)
    assert node_labels(orca.api)["node1"].get("rack") == "a", "the hot reload saw a change it cannot see"

    assert orca.proc is not None
    orca.proc.send_signal(signal.SIGHUP)

    def after_sighup() -> str:
        log = orca.log()
        at = log.find("SIGHUP: reloading the configuration")
        return log[at:] if at >= 0 else ""

    wait_for("the SIGHUP log line", after_sighup)
    # The cycle's own summary, logged by the loop's SIGHUP thread ("bootstrap: nothing to do" here).
    wait_for("the bootstrap cycle after SIGHUP", lambda: "orcastra.runtime.loop: bootstrap: " in after_sighup())
    wait_for("the configuration reloaded", lambda: "configuration reloaded from" in after_sighup())
    wait_for("node1's label from the re-read swarm.yml", lambda: has_labels(orca.api, {"node1": {"rack": "c"}}))
    orca.assert_alive()
    orca.stop()


OLD_STACK = "old"
OLD_DB, OLD_WEB = f"{OLD_STACK}_db", f"{OLD_STACK}_web"
OLD_STACK_FILE = """
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
  web:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      replicas: 2
      placement:
        constraints: [node.labels.db == true]   # written by hand, as the earlier tool's users did
"""


def no_node_error(task: dict[str, Any]) -> str:
    """Swarm's no-node error on a task: in ``Err``, or in ``Message`` (older swarmkits' constraint enforcer)."""
    status = task["Status"]
    text = f"{status.get('Err') or ''} {status.get('Message') or ''}"
    return text.strip() if any(e in text for e in NO_NODE_ERRORS) else ""


def running_tasks(api: docker.APIClient, service: str) -> set[str]:
    return {
        t["ID"]
        for t in api.tasks(filters={"service": service, "desired-state": "running"})
        if t["Status"]["State"] == "running"
    }


@dataclass
class TaskWatch:
    """Polls the dependent's tasks in a thread: per task, when it was first and last seen "pending", and every
    task seen "rejected" or with one of Swarm's NO_NODE_ERRORS."""

    host: str
    service: str
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    polls: int = 0
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        api = docker.APIClient(base_url=self.host, version="auto", timeout=10)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for t in api.tasks(filters={"service": self.service}):
                    state, err = t["Status"]["State"], no_node_error(t)
                    if state == "pending":
                        first, _ = self.pending.get(t["ID"], (now, now))
                        self.pending[t["ID"]] = (first, now)
                    if state == "rejected" or err:
                        self.rejected.append(f"{t['ID'][:12]} {state} {err}")
                self.polls += 1
                time.sleep(0.1)
        except Exception as e:  # reported by the test, which then fails
            self.error = repr(e)
        finally:
            api.close()

    def stop(self) -> None:
        self._stop.set()

    def stuck(self) -> dict[str, float]:
        return {
            tid[:12]: last - first
            for tid, (first, last) in self.pending.items()
            if last - first > PENDING_GRACE_SECONDS
        }


def test_migrate_moves_old_labels_and_constraints_without_a_dependent_ever_lacking_a_node(orca: Orca) -> None:
    """A cluster prepared the old way: the plain label ``db=true`` on the node where old_db runs and old_web
    (2 replicas) constrained by hand to ``node.labels.db==true``. ``orcastra migrate`` prints the plan and
    changes nothing (same labels, same service version); ``orcastra migrate --apply`` ends with
    ``orcastra.anchor.old_db`` on that node and ``node.labels.orcastra.anchor.old_db==true`` on old_web only
    (no ``db`` label anywhere, no old constraint), with old_web's 2 tasks running beside old_db.

    "Never without a schedulable node", checked by polling old_web's tasks every ~0.1 s from the start of
    ``--apply`` until WATCH_AFTER_SECONDS (5 s) after it returns: no task is ever seen in state "rejected" or
    with one of Swarm's NO_NODE_ERRORS ("no suitable node", "assigned node no longer meets constraints"), and
    no task is seen "pending" over a span (first to last sighting) longer than PENDING_GRACE_SECONDS (2 s; a
    schedulable task leaves "pending" within milliseconds). Afterwards no task in old_web's history carries
    such an error, and the 2 tasks running are the ones that ran before (nothing had to move: the old label
    was on the anchor's node). A second dry run finds nothing to migrate."""
    orca.stop()  # no daemon here: migrate is a one-shot command
    d = orca.dir / "config-old"
    d.mkdir(exist_ok=True)
    (d / "dependencies.yml").write_text("db: [ web ]\n")
    env = clean_env(orca.env.docker_host, {"ORCASTRA_LEGACY_DIR": str(d), "STACK_NAME": OLD_STACK})
    api = orca.api
    workdir = orca.dir / "old"
    workdir.mkdir(exist_ok=True)
    with deployed_stack(orca.env, api, OLD_STACK, OLD_STACK_FILE, workdir):
        home = wait_for(f"{OLD_DB} running", lambda: running_nodes(api, OLD_DB), timeout=WAIT_SECONDS)[0]
        set_node_labels(api, home, {**node_labels(api)[home], "db": "true"})
        wait_for(f"{OLD_WEB} on {home}", lambda: running_nodes(api, OLD_WEB) == [home, home], timeout=WAIT_SECONDS)

        def migrate(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "orcastra", "migrate", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )

        tasks_before = running_tasks(api, OLD_WEB)
        labels_before, version_before = node_labels(api), api.inspect_service(OLD_WEB)["Version"]["Index"]
        dry = migrate()
        assert dry.returncode == 0, dry.stderr
        for expected in ("step 1:", "dry run: nothing changed", anchor_label_key(OLD_DB), anchor_constraint(OLD_DB)):
            assert expected in dry.stdout, dry.stdout
        assert node_labels(api) == labels_before
        assert api.inspect_service(OLD_WEB)["Version"]["Index"] == version_before

        watch = TaskWatch(orca.env.docker_host, OLD_WEB)
        poller = threading.Thread(target=watch.run, name="task-watch", daemon=True)
        poller.start()
        started = time.monotonic()
        try:
            applied = migrate("--apply")
            took = time.monotonic() - started
            polls = watch.polls
            wait_for(
                f"{WATCH_AFTER_SECONDS:.0f} s more of task polls",
                lambda: time.monotonic() - started >= took + WATCH_AFTER_SECONDS and watch.polls > polls,
            )
        finally:
            watch.stop()
            poller.join(15)
        print(f"\nFIGURE migrate --apply: {took:.1f} s ({watch.polls} task polls)\n{applied.stdout}", flush=True)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "step 3:" in applied.stdout, applied.stdout
        assert "nothing to migrate" in applied.stdout, applied.stdout
        assert not watch.error, f"the task poll failed: {watch.error}"
        assert watch.polls > 10, f"the task poll hardly ran ({watch.polls} polls)"
        assert not watch.rejected, f"{OLD_WEB} tasks rejected during migrate: {watch.rejected}"
        assert not watch.stuck(), f"{OLD_WEB} tasks pending > {PENDING_GRACE_SECONDS} s: {watch.stuck()}"

        labels = node_labels(api)
        assert [h for h, ls in labels.items() if "db" in ls] == [], labels
        assert [h for h, ls in labels.items() if ls.get(anchor_label_key(OLD_DB)) == "true"] == [home], labels
        constraints = api.inspect_service(OLD_WEB)["Spec"]["TaskTemplate"]["Placement"].get("Constraints") or []
        assert anchor_constraint(OLD_DB) in constraints, constraints
        assert not [c for c in constraints if "node.labels.db" in c], constraints
        # The old label was on the anchor's node: nothing had to move, and Swarm updates a task in place when only
        # its placement changed and its node still fits. Every task of old_web's history (failed ones included).
        history = api.tasks(filters={"service": OLD_WEB})
        no_node = [t for t in history if t["Status"]["State"] == "rejected" or no_node_error(t)]
        assert not no_node, [t["Status"] for t in no_node]
        assert running_tasks(api, OLD_WEB) == tasks_before, "old_web's tasks were replaced during migrate"
        assert running_nodes(api, OLD_WEB) == [home, home]

        again = migrate()
        assert again.returncode == 0, again.stderr
        assert "nothing to migrate" in again.stdout, again.stdout
