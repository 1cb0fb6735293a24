"""Every operator command (except `reboot`, covered by the reboot lab) through each of its three channels, on
the real lab Swarm: the command file, `orcastra do` (the CLI) and the HTTP API with its bearer token.

Each test asserts what the Swarm really did (a service's ForceUpdate counter, a node's availability, the Swarm
label `orcastra.paused`, a node label put back) and what the channel reported (the results file record, the
CLI's exit code and output, the API's JSON). Unknown services and nodes, and commands that are not commands,
are errors through every channel. A command file that is not YAML, or not a list, is reported with its name
and line, runs nothing, and does not stop the daemon; once fixed, its commands run.

Two daemons serve the module: one acting (it owns the lease `chtest-lease`; no event mode and a long resync,
so nothing but a command changes the Swarm: a label removed by hand stays removed until `relabel`), and one
`run --dry-run` whose node memory comes from a stand-in node_exporter served by this test, so that `rebalance`
has a move to plan, and must change nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from orcastra.domain.labels import OWNED_LABELS_KEY, PAUSED_LABEL
from orcastra.features.rebalance.pins import pin_label_key
from orcastra_lab import LabEnv

from .util import (
    free_port,
    node_labels,
    nodes_by_hostname,
    run_orcastra,
    running_nodes,
    set_node_labels,
    start_orcastra,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.lab

APP = "chtest_app"  # restarted by `restart`
MEM = "chtest_mem"  # the one unit the dry-run `rebalance` may move (its reservation is its memory estimate)
MEM_RESERVATION = 128 * 2**20
LEASE = "chtest-lease"
TOKEN = "chtest-token-7c1e"
STATIC_NODE = "node3"
STATIC_KEY = "chtest.static"
STATIC_VALUE = "yes"
DRAINED = "node3"
CHANNELS = ["file", "cli", "api"]
GIB = 2**30

CONFIG = """
stack: chtest
nodes:
  {static_node}:
    labels: {{{static_key}: "{static_value}"}}
commands:
  file: {commands}
api:
  listen: 127.0.0.1:{port}
  token: {token}
leader_election:
  lease_name: {lease}
  ttl_seconds: 5
reconcile:
  event_mode: false
  resync_interval_seconds: 3600
audit:
  path: {audit}
"""

DRY_CONFIG = """
stack: chtest
commands:
  file: {commands}
api:
  listen: 127.0.0.1:{port}
  token: {token}
reconcile:
  event_mode: false
  resync_interval_seconds: 3600
rebalance:
  sources:
    engine_stats: false
    node_exporter:
{exporters}
audit:
  path: {audit}
"""


# --- a stand-in node_exporter: 1 GiB per node, the "hot" node 90 % used, the others 10 % -------------------


class MemoryExporter:
    def __init__(self) -> None:
        self.hot: str | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                used = 0.9 if self.path.strip("/") == owner.hot else 0.1
                body = (
                    f"node_memory_MemTotal_bytes {GIB}\nnode_memory_MemAvailable_bytes {int(GIB * (1 - used))}\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, hostname: str) -> str:
        return f"http://127.0.0.1:{self.port}/{hostname}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the channels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a channel reported: ok or not, its text, and the channel-specific detail."""

    ok: bool
    text: str
    code: int  # CLI exit code; API HTTP status; file: 0 ok / 1 error


@dataclass
class Orcastra:
    """One running daemon and the three ways to give it commands."""

    env: LabEnv
    config: Path
    commands: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    seen: set[str] = field(default_factory=set)

    @property
    def results(self) -> Path:
        return self.commands.with_name(self.commands.name + ".results.jsonl")

    def records(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        out = []
        for line in self.results.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # empty, or being written right now: the next look reads it whole
                continue
        return out

    def file_results(self) -> list[dict[str, Any]]:
        """Result records of commands taken from the file, and reports about the file itself."""
        from_file = {r["id"] for r in self.records() if r["type"] == "started" and r.get("source") == "file"}
        return [r for r in self.records() if r["type"] == "result" and (r["id"] in from_file or "file" in r)]

    def new_file_results(self) -> list[dict[str, Any]]:
        return [r for r in self.file_results() if r["id"] not in self.seen]

    def mark_seen(self) -> None:
        self.seen |= {r["id"] for r in self.file_results()}

    def via_file(self, entry: str) -> Reply:
        self.mark_seen()
        self.commands.write_text(f"- {entry}\n", encoding="utf-8")
        (record,) = wait_for(f"the result of {entry!r} in {self.results.name}", self.new_file_results, timeout=60)
        self.seen.add(record["id"])
        assert self.commands.read_text() == "", "a taken command is removed from the file"
        return Reply(
            record["result"] == "ok", f"{record['command']}: {record['message']}", int(record["result"] != "ok")
        )

    def via_cli(self, entry: str) -> Reply:
        done = run_orcastra(["--config", str(self.config), "do", *entry.split()], self.env.docker_host, timeout=120)
        return Reply(done.returncode == 0, (done.stdout + done.stderr).strip(), done.returncode)

    def via_api(self, entry: str) -> Reply:
        words = entry.split()
        body: dict[str, str] = {"command": words[0]}
        if len(words) > 1:
            body[{"restart": "service"}.get(words[0], "node")] = words[1]
        status, payload = self.post(body, token=TOKEN)
        if status == 200:
            assert payload["command"] == entry
            assert payload["id"]
            assert payload["time"]
            return Reply(payload["result"] == "ok", f"{payload['command']}: {payload['message']}", status)
        return Reply(False, str(payload.get("error")), status)

    def post(self, body: object, token: str | None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/commands", data=json.dumps(body).encode(), method="POST"
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"{}")

    def send(self, channel: str, entry: str) -> Reply:
        assert self.alive(), f"orcastra died; see {self.log}"
        sender: dict[str, Callable[[str], Reply]] = {"file": self.via_file, "cli": self.via_cli, "api": self.via_api}
        return sender[channel](entry)

    def healthz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                body: dict[str, Any] = json.loads(r.read())
                return body
        except urllib.error.HTTPError as e:  # 503: not healthy, but it answers
            with e:
                unhealthy: dict[str, Any] = json.loads(e.read() or b"{}")
                return unhealthy
        except (OSError, ValueError):
            return {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start(o: Orcastra, *args: str) -> None:
    o.proc = start_orcastra(["--config", str(o.config), "run", *args], o.env.docker_host, o.log)


def wait_leader(o: Orcastra) -> None:
    wait_for(f"{o.config.name} up (see {o.log})", lambda: o.healthz().get("role") == "leader", timeout=60)


# --- Swarm state ---------------------------------------------------------------------------------------


def force_update(api: docker.APIClient, service: str = APP) -> int:
    return int(api.inspect_service(service)["Spec"]["TaskTemplate"].get("ForceUpdate") or 0)


def availability(api: docker.APIClient, hostname: str) -> str:
    return str(nodes_by_hostname(api)[hostname]["Spec"]["Availability"])


def set_availability(api: docker.APIClient, hostname: str, value: str) -> None:
    for _ in range(5):
        node = nodes_by_hostname(api)[hostname]
        if node["Spec"]["Availability"] == value:
            return
        try:
            api.update_node(node["ID"], node["Version"]["Index"], node_spec=dict(node["Spec"], Availability=value))
            return
        except docker.errors.APIError:
            continue
    raise AssertionError(f"could not set {hostname} {value}")


def swarm_labels(api: docker.APIClient) -> dict[str, str]:
    return dict(api.inspect_swarm()["Spec"].get("Labels") or {})


def without_static_label(labels: dict[str, str]) -> dict[str, str]:
    """The node's labels without our static label, and without it in Orcastra's ownership record."""
    out = {k: v for k, v in labels.items() if k != STATIC_KEY}
    owned = [k for k in out.get(OWNED_LABELS_KEY, "").split(",") if k.strip() and k.strip() != STATIC_KEY]
    if owned:
        out[OWNED_LABELS_KEY] = ",".join(owned)
    else:
        out.pop(OWNED_LABELS_KEY, None)
    return out


# --- the module's daemons ------------------------------------------------------------------------------


@dataclass
class Channels:
    acting: Orcastra
    dry: Orcastra
    exporter: MemoryExporter


@pytest.fixture(scope="module")
def ch(lab_env: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channels]:
    d = tmp_path_factory.mktemp("channels")
    (d / "dry").mkdir()
    api = docker.APIClient(base_url=lab_env.docker_host, version="auto", timeout=30)
    exporter = MemoryExporter()
    acting = Orcastra(lab_env, d / "orcastra.yml", d / "commands.yml", free_port(), d / "acting.log")
    dry = Orcastra(lab_env, d / "dry" / "orcastra.yml", d / "dry" / "commands.yml", free_port(), d / "dry.log")
    acting.config.write_text(
        CONFIG.format(
            static_node=STATIC_NODE,
            static_key=STATIC_KEY,
            static_value=STATIC_VALUE,
            commands=acting.commands,
            port=acting.port,
            token=TOKEN,
            lease=LEASE,
            audit=d / "audit.jsonl",
        ),
        encoding="utf-8",
    )
    exporters = "\n".join(f"      {h}: {exporter.url(h)}" for h in sorted(nodes_by_hostname(api)))
    dry.config.write_text(
        DRY_CONFIG.format(
            commands=dry.commands, port=dry.port, token=TOKEN, exporters=exporters, audit=d / "dry" / "audit.jsonl"
        ),
        encoding="utf-8",
    )
    try:
        api.create_service({"ContainerSpec": {"Image": lab_env.image}}, name=APP)
        api.create_service(
            {
                "ContainerSpec": {"Image": lab_env.image},
                "Resources": {"Reservations": {"MemoryBytes": MEM_RESERVATION}},
                # Off the node the drain tests drain, so it stays where the stand-in exporter says it is hot.
                "Placement": {"Constraints": [f"node.hostname!={DRAINED}"]},
            },
            name=MEM,
        )
        start(acting)
        start(dry, "--dry-run")
        (exporter.hot,) = wait_for(f"{MEM} running", lambda: running_nodes(api, MEM), timeout=60)
        wait_leader(acting)
        wait_leader(dry)
        yield Channels(acting, dry, exporter)
    finally:
        for o in (acting, dry):
            if o.proc is not None:
                stop_process(o.proc)
        exporter.close()
        for name in (APP, MEM, LEASE):
            for s in api.services(filters={"name": name}):
                if s["Spec"]["Name"] == name:
                    api.remove_service(s["ID"])
        set_availability(api, DRAINED, "active")
        labels = node_labels(api)[STATIC_NODE]
        if without_static_label(labels) != labels:
            set_node_labels(api, STATIC_NODE, without_static_label(labels))
        if PAUSED_LABEL in swarm_labels(api):
            swarm = api.inspect_swarm()
            spec = dict(swarm["Spec"])
            spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != PAUSED_LABEL}
            api.update_swarm(version=swarm["Version"]["Index"], swarm_spec=spec)
        api.close()


# --- every command, every channel ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS)
def test_sync(ch: Channels, channel: str) -> None:
    reply = ch.acting.send(channel, "sync")
    assert reply.ok, reply
    assert reply.code in (0, 200)
    assert "sync: reconciled:" in reply.text


@pytest.mark.parametrize("channel", CHANNELS)
def test_relabel_puts_back_a_static_label(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    # The daemon sets the static label at its first cycle; then take it off by hand (no event mode: the
    # daemon does not notice, so only the command can put it back).
    wait_for(f"{STATIC_KEY} on {STATIC_NODE}", lambda: node_labels(docker_api)[STATIC_NODE].get(STATIC_KEY))
    # ...once no cycle is about to run (one triggered at start-up, say), which would put it back by itself.
    wait_for("no cycle for a moment", lambda: (ch.acting.healthz().get("last_good_cycle_age_seconds") or 0) >= 0.5)
    labels = node_labels(docker_api)[STATIC_NODE]
    set_node_labels(docker_api, STATIC_NODE, {k: v for k, v in labels.items() if k != STATIC_KEY})
    assert STATIC_KEY not in node_labels(docker_api)[STATIC_NODE]
    reply = ch.acting.send(channel, "relabel")
    assert reply.ok, reply
    assert reply.text.startswith("relabel: reconciled: ")
    assert f"node/{STATIC_NODE} labels {STATIC_KEY}={STATIC_VALUE} (ok)" in reply.text
    assert node_labels(docker_api)[STATIC_NODE].get(STATIC_KEY) == STATIC_VALUE


@pytest.mark.parametrize("channel", CHANNELS)
def test_restart_forces_an_update(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    before = force_update(docker_api)
    reply = ch.acting.send(channel, f"restart {APP}")
    assert reply.ok, reply
    assert f"service/{APP}" in reply.text
    assert force_update(docker_api) == before + 1


@pytest.mark.parametrize("channel", CHANNELS)
def test_restart_of_an_unknown_service_is_an_error(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    before = force_update(docker_api)
    reply = ch.acting.send(channel, "restart chtest_nosuch")
    assert not reply.ok
    assert "no service 'chtest_nosuch'" in reply.text
    assert reply.code == {"file": 1, "cli": 1, "api": 200}[channel]
    assert force_update(docker_api) == before


@pytest.mark.parametrize("channel", CHANNELS)
def test_drain_and_activate(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    try:
        drained = ch.acting.send(channel, f"drain {DRAINED}")
        assert drained.ok, drained
        assert f"node/{DRAINED} availability drain" in drained.text
        assert availability(docker_api, DRAINED) == "drain"
        activated = ch.acting.send(channel, f"activate {DRAINED}")
        assert activated.ok, activated
        assert f"node/{DRAINED} availability active" in activated.text
        assert availability(docker_api, DRAINED) == "active"
    finally:
        set_availability(docker_api, DRAINED, "active")


@pytest.mark.parametrize("channel", CHANNELS)
def test_unknown_node_is_an_error(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    for command in ("drain", "activate"):
        reply = ch.acting.send(channel, f"{command} node99")
        assert not reply.ok
        assert "no node 'node99'" in reply.text
        assert reply.code == {"file": 1, "cli": 1, "api": 200}[channel]
    assert availability(docker_api, DRAINED) == "active"


@pytest.mark.parametrize("channel", CHANNELS)
def test_pause_and_resume(ch: Channels, channel: str, docker_api: docker.APIClient) -> None:
    try:
        paused = ch.acting.send(channel, "pause")
        assert paused.ok, paused
        assert "paused" in paused.text
        assert swarm_labels(docker_api).get(PAUSED_LABEL) == "true"
        # While paused, a command that runs the automatic machinery says so instead of pretending it ran.
        refused = ch.acting.send(channel, "sync")
        assert not refused.ok
        assert "paused: resume first" in refused.text
        resumed = ch.acting.send(channel, "resume")
        assert resumed.ok, resumed
        assert PAUSED_LABEL not in swarm_labels(docker_api)
    finally:
        if PAUSED_LABEL in swarm_labels(docker_api):  # the later tests need it running
            ch.acting.post({"command": "resume"}, token=TOKEN)


@pytest.mark.parametrize("channel", CHANNELS)
def test_rebalance_in_dry_run_plans_and_changes_nothing(
    ch: Channels, channel: str, docker_api: docker.APIClient
) -> None:
    (ch.exporter.hot,) = wait_for(f"{MEM} running", lambda: running_nodes(docker_api, MEM), timeout=60)
    version = docker_api.inspect_service(MEM)["Version"]["Index"]
    reply = ch.dry.send(channel, "rebalance")
    assert reply.ok, reply
    # What it would do: pin the unit to another node (a node label and a placement constraint).
    assert "rebalance: would: " in reply.text
    assert f"service/{MEM}" in reply.text
    assert pin_label_key(MEM) in reply.text
    assert docker_api.inspect_service(MEM)["Version"]["Index"] == version
    assert all(pin_label_key(MEM) not in labels for labels in node_labels(docker_api).values())
    assert running_nodes(docker_api, MEM) == [ch.exporter.hot]


@pytest.mark.parametrize("channel", CHANNELS)
def test_bootstrap_without_inventory_says_so(ch: Channels, channel: str) -> None:
    reply = ch.acting.send(channel, "bootstrap")
    assert not reply.ok
    assert "bootstrap: no inventory" in reply.text
    assert "nodes.<host>.endpoint" in reply.text


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_command_that_is_not_one_is_refused(ch: Channels, channel: str) -> None:
    if channel == "api":
        status, payload = ch.acting.post({"command": "frobnicate"}, token=TOKEN)
        assert (status, payload["error"].startswith("unknown command 'frobnicate'")) == (400, True)
        status, payload = ch.acting.post({"command": "sync"}, token="wrong")
        assert (status, payload["error"]) == (401, "missing or wrong bearer token")
        return
    reply = ch.acting.send(channel, "frobnicate now")
    assert not reply.ok
    assert "unknown command 'frobnicate'" in reply.text
    assert reply.code == {"file": 1, "cli": 2}[channel]


# --- a command file that cannot be read as commands ----------------------------------------------------


def test_malformed_command_file_is_reported_and_nothing_runs(ch: Channels, docker_api: docker.APIClient) -> None:
    o = ch.acting
    before = force_update(docker_api)
    cases = [
        # (text, what the report says, the line it names)
        (f"- restart {APP}\n- [restart {APP}\n", "is not valid YAML: line 3", 3),
        (f"# restart it\nrestart: {APP}\n", "line 2: expected a list of commands", 2),
    ]
    for text, problem, line in cases:
        o.mark_seen()
        o.commands.write_text(text, encoding="utf-8")
        (report,) = wait_for(f"a report on {text!r}", o.new_file_results, timeout=30)
        o.seen.add(report["id"])
        assert report["result"] == "error"
        assert report["file"] == str(o.commands)
        assert report["line"] == line
        assert str(o.commands) in report["message"]
        assert problem in report["message"]
        assert report["message"].endswith("nothing was run")
        # Left as it is, not reported again (not even when touched), the daemon keeps serving.
        time.sleep(0.6)
        o.commands.touch()
        time.sleep(1.2)
        assert o.new_file_results() == []
        assert o.commands.read_text() == text
        assert o.alive()
        assert o.healthz().get("role") == "leader"
        assert force_update(docker_api) == before
    # The operator fixes it: its command runs, once.
    reply = o.via_file(f"restart {APP}")
    assert reply.ok, reply
    assert force_update(docker_api) == before + 1
