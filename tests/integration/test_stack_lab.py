"""Orcastra deployed as users deploy it (issue 12): the image built by the repository's Dockerfile, pushed to
the lab registry, and ``docker stack deploy -c deploy/stack.yml`` on a lab of its own with 3 managers and a
worker: a controller replica on each manager, an agent on every node.

What is asserted is what the Swarm did: where tasks run, which labels nodes carry, the lease's holder, each
container's health. The figures (cold start, failover, footprints) are printed for the README's report.
Tests run in file order and share the deployment; the last one kills a node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from orcastra_lab import Lab, LabEnv
from orcastra_lab import stack as lab_stack

from . import hygiene_steps as hygiene
from . import mods_steps as mods
from . import node_exporter_steps as node_exporter
from .util import do_through_swarm, node_labels, running_nodes, set_node_labels, wait_for

# Another name runs a second copy beside it (a helper session testing a branch while CI-like runs go on).
LAB_NAME = os.environ.get("ORCASTRA_TEST_STACK_LAB", "stack")
MANAGERS = ("node1", "node2", "node3")
WORKER = "node4"
LEASE_TTL_SECONDS = 15.0
APP_STACK = "app"

pytestmark = [pytest.mark.timeout(1200)]

CONFIG = """\
stack: app
api:
  listen: 0.0.0.0:9180
  token_file: /run/secrets/orcastra-api-token
commands:
  file: /var/lib/orcastra/commands.yml
logging:
  format: json
leader_election:
  ttl_seconds: 15
reconcile:
  resync_interval_seconds: 10
agent:
  report_poll_interval_seconds: 5
{mods}hygiene:
  gc:
    min_image_age_seconds: 0
    grace_period_seconds: 20
    keep_per_repository: 1
    pace_seconds: 0
  autoheal:
    enabled: true
    max_restarts: 2
    backoff_initial_seconds: 2
    backoff_max_seconds: 4
    resync_interval_seconds: 10
  logrotate:
    enabled: true
    schedule: "* * * * *"
    config_dirs: [/etc/orcastra/logrotate.d]
nodes:
  node4:
    labels: {zone: a}
anchors:
  db:
    dependents: [web]
""".replace("{mods}", mods.mods_config(LAB_NAME))

APP = """\
version: "3.8"
services:
  db:
    image: ${ORCASTRA_LAB_IMAGE}
    deploy:
      placement:
        constraints: [node.labels.dbhome == true]
  web:
    image: ${ORCASTRA_LAB_IMAGE}
  probe:
    image: ${ORCASTRA_LAB_IMAGE}
"""


@dataclass
class Site:
    lab: Lab
    env: LabEnv
    image: str
    workdir: Path

    def host(self, node: str) -> str:
        return self.env.node_hosts[node]

    def api(self, node: str = "node1") -> docker.APIClient:
        return docker.APIClient(base_url=self.host(node), version="auto", timeout=30)

    def docker(self, *argv: str, node: str = "node1", check: bool = True, stderr: bool = False) -> str:
        """``docker ARGV`` against ``node``: its stdout (and stderr, where a container's logs go, with ``stderr``)."""
        env = {**os.environ, "DOCKER_HOST": self.host(node), "ORCASTRA_LAB_IMAGE": self.env.image}
        done = subprocess.run(["docker", *argv], env=env, capture_output=True, text=True, timeout=180, check=False)
        if check:
            assert done.returncode == 0, f"docker {' '.join(argv)}: {done.stderr}"
        return done.stdout + (done.stderr if stderr else "")

    def deploy(self, config: str = CONFIG, node: str = "node1") -> None:
        lab_stack.deploy(
            self.lab.layout, self.host(node), self.image, config, container_socket=self.env.container_socket
        )

    def holder(self, node: str = "node1") -> str | None:
        return lab_stack.lease_holder(self.lab.layout, self.host(node))


def _leader_node(holder: str | None) -> str | None:
    """The node a holder id names: the stack's hostname template makes it ``orcastra-<node>:<pid>:<rand>``."""
    match = re.match(r"orcastra-(node\d+):", holder or "")
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab = Lab(name=LAB_NAME, progress=lambda m: print(f"lab: {m}", flush=True))
    env = lab.up(nodes=4, managers=3, swarm=True)
    started = time.monotonic()
    image = lab.build_orcastra_image().ref
    print(f"\nFIGURE image build and push: {time.monotonic() - started:.1f} s ({image})", flush=True)
    workdir = tmp_path_factory.mktemp("stack")
    s = Site(lab=lab, env=env, image=image, workdir=workdir)
    (workdir / "app.yml").write_text(APP)
    set_node_labels_by_name(s, MANAGERS[0], {"dbhome": "true"})
    s.docker("stack", "deploy", "-c", str(workdir / "app.yml"), APP_STACK)
    yield s
    if os.environ.get("ORCASTRA_LAB_KEEP") != "1":
        lab.down()


def set_node_labels_by_name(s: Site, hostname: str, labels: dict[str, str], node: str = "node1") -> None:
    api = s.api(node)
    try:
        merged = {**node_labels(api)[hostname], **labels}
        set_node_labels(api, hostname, merged)
    finally:
        api.close()


def _containers(s: Site, node: str, service: str) -> list[dict[str, object]]:
    api = s.api(node)
    try:
        found: list[dict[str, object]] = api.containers(filters={"label": f"com.docker.swarm.service.name={service}"})
        return found
    finally:
        api.close()


def _health(s: Site, node: str, service: str) -> str | None:
    containers = _containers(s, node, service)
    if not containers:
        return None
    api = s.api(node)
    try:
        state = api.inspect_container(containers[0]["Id"])["State"]
        return str(state.get("Health", {}).get("Status"))
    finally:
        api.close()


def test_stack_deploys_and_goes_healthy(site: Site) -> None:
    started = time.monotonic()
    site.deploy()
    holder = wait_for("a leader", site.holder, timeout=120, interval=0.5)
    print(f"\nFIGURE cold start (stack deploy -> lease held): {time.monotonic() - started:.1f} s", flush=True)
    api = site.api()
    try:
        wait_for(
            "a controller on each manager",
            lambda: sorted(running_nodes(api, "orcastra_controller")) == list(MANAGERS),
            timeout=120,
        )
        wait_for(
            "an agent on each node",
            lambda: sorted(running_nodes(api, "orcastra_agent")) == [*MANAGERS, WORKER],
            timeout=120,
        )
    finally:
        api.close()
    for node in MANAGERS:
        wait_for(
            f"{node}'s controller healthy",
            lambda n=node: _health(site, n, "orcastra_controller") == "healthy",
            timeout=90,
            interval=1,
        )
    assert _leader_node(holder) in MANAGERS
    logs = site.docker("service", "logs", "--raw", "orcastra_controller", stderr=True)
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records, logs[-2000:]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("leader" in r["message"] for r in records)
    # The static label of the config is on node4, set by the deployed controller.
    api = site.api()
    try:
        wait_for("node4 labelled zone=a", lambda: node_labels(api)[WORKER].get("zone") == "a", timeout=60)
    finally:
        api.close()


def test_status_names_the_leader(site: Site, tmp_path: Path) -> None:
    config = tmp_path / "client.yml"
    config.write_text("stack: app\n")
    done = subprocess.run(
        [sys.executable, "-m", "orcastra", "--config", str(config), "status"],
        env={**os.environ, "DOCKER_HOST": site.host("node2")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("Leader: orcastra-node"), done.stdout


def test_controller_colocates_the_anchor_group(site: Site) -> None:
    api = site.api()
    try:
        wait_for(
            "web on db's node",
            lambda: running_nodes(api, "app_web") == running_nodes(api, "app_db") == [MANAGERS[0]],
            timeout=90,
        )
    finally:
        api.close()


def _exec(site: Site, node: str, service: str, *argv: str) -> str:
    container = _containers(site, node, service)[0]["Id"]
    return site.docker("exec", str(container), *argv, node=node)


def _agent_reports(site: Site, via: str) -> dict[str, dict[str, object]]:
    """Node -> the agent's last good report, as the controller replica on ``via`` has it (orcastra status)."""
    try:
        status = json.loads(_exec(site, via, "orcastra_controller", "orcastra", "status", "--json"))
    except AssertionError:
        return {}
    found: dict[str, dict[str, object]] = {}
    for agent in status.get("agents", []):
        entry = agent.get("entry") or {}
        if entry.get("up") and entry.get("report"):
            found[str(agent["node"])] = entry["report"]
    return found


def _agent_diagnostics(site: Site, via: str, node: str) -> str:
    """What ``via``'s controller says of ``node``'s agent, the agent's tasks, and its last log lines."""
    try:
        status = json.loads(_exec(site, via, "orcastra_controller", "orcastra", "status", "--json"))
        rows = [a for a in status.get("agents", []) if a.get("node") == node]
    except (AssertionError, IndexError, ValueError) as e:
        rows = [f"no status from {via}: {e}"]
    tasks = site.docker("service", "ps", "--no-trunc", "orcastra_agent", check=False)
    logs = site.docker("service", "logs", "--raw", "--tail", "20", "orcastra_agent", check=False, stderr=True)
    return f"DIAG {via}'s view of {node}'s agent: {rows}\nDIAG tasks:\n{tasks}\nDIAG agent logs:\n{logs[-3000:]}"


def _proc_figures(site: Site, node: str, service: str, seconds: float) -> tuple[float, float]:
    """(VmRSS in MiB, % of one core over ``seconds``) of the service's container's main process on ``node``."""
    api = site.api(node)
    try:
        pid = api.inspect_container(_containers(site, node, service)[0]["Id"])["State"]["Pid"]
    finally:
        api.close()

    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    first = ticks()
    time.sleep(seconds)
    used = (ticks() - first) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return rss_kib / 1024, 100.0 * used / seconds


def test_agent_on_every_node_reports_and_survives_its_dockerd_restart(site: Site) -> None:
    reports = wait_for(
        "a report from every node's agent",
        lambda: (r := _agent_reports(site, "node2")) and sorted(r) == [*MANAGERS, WORKER] and r,
        timeout=90,
        interval=2,
    )
    agent_rss, agent_cpu = _proc_figures(site, WORKER, "orcastra_agent", 30.0)
    ctl_rss, ctl_cpu = _proc_figures(site, "node2", "orcastra_controller", 10.0)
    print(
        f"\nFIGURE idle footprint: agent {agent_rss:.1f} MiB RSS, {agent_cpu:.3f} % of a core (30 s);"
        f" controller replica {ctl_rss:.1f} MiB RSS, {ctl_cpu:.2f} % of a core (10 s)",
        flush=True,
    )
    assert agent_rss < 30.0
    started_before = reports[WORKER]["started_at"]
    site.lab.restart(WORKER)
    restarted = time.monotonic()
    try:
        # 17-40 s here; the overlay's peer tables can take longer to converge on a loaded machine.
        wait_for(
            f"{WORKER}'s agent back and reporting",
            lambda: (r := _agent_reports(site, "node2").get(WORKER)) and r["started_at"] != started_before,
            timeout=240,
            interval=2,
        )
    except AssertionError:
        print(_agent_diagnostics(site, "node2", WORKER), flush=True)
        raise
    print(f"\nFIGURE agent reporting again {time.monotonic() - restarted:.1f} s after its dockerd restart", flush=True)


def _controller_spec(site: Site, node: str = "node1") -> dict[str, object]:
    return json.loads(site.docker("service", "inspect", "orcastra_controller", "--format", "{{json .Spec}}", node=node))


def _config_names(spec: dict[str, object]) -> list[str]:
    template = spec["TaskTemplate"]
    assert isinstance(template, dict)
    return [c["ConfigName"] for c in template["ContainerSpec"].get("Configs", [])]


def _update_state(site: Site) -> str:
    out = site.docker("service", "inspect", "orcastra_controller", "--format", "{{json .UpdateStatus}}")
    status = json.loads(out) or {}
    return str(status.get("State", ""))


def _on(site: Site, node: str) -> hygiene.Docker:
    return lambda *argv, **kw: site.docker(*argv, node=node, **kw)


def test_gc_removes_exactly_what_the_rules_allow_and_a_dry_run_nothing(site: Site) -> None:
    docker = _on(site, WORKER)
    scene = hygiene.build_gc_scene(docker, _on(site, "node1"), site.env.image)
    before = (hygiene.container_ids(docker), hygiene.image_ids(docker), hygiene.volume_names(docker))
    dry = _exec(site, "node2", "orcastra_controller", "orcastra", "gc", "--node", WORKER, "--dry-run")
    print(f"\n{dry}", flush=True)
    assert f"{WORKER}: 5 would remove" in dry, dry
    after_dry = (hygiene.container_ids(docker), hygiene.image_ids(docker), hygiene.volume_names(docker))
    assert after_dry == before
    started = time.monotonic()
    done = _exec(site, "node2", "orcastra_controller", "orcastra", "gc", "--node", WORKER, "--apply")
    print(f"\n{done}\nFIGURE gc run on {WORKER}: {time.monotonic() - started:.1f} s", flush=True)
    containers, images, volumes = before
    assert containers - hygiene.container_ids(docker) == {scene.old_container}
    assert images - hygiene.image_ids(docker) == {*scene.repo_ids[:2], scene.dangling_image}
    assert set(scene.kept_images) <= hygiene.image_ids(docker)
    assert volumes - hygiene.volume_names(docker) == {scene.anonymous_volume}
    assert scene.named_volume in hygiene.volume_names(docker)
    site.docker("service", "rm", "gc-svc0")


def _autoheal(site: Site) -> dict[str, object]:
    report = _agent_reports(site, "node2").get(WORKER) or {}
    return dict(report.get("autoheal") or {})  # type: ignore[call-overload]


def test_autoheal_restarts_an_unhealthy_container_within_its_cap_and_leaves_swarm_tasks_to_swarm(site: Site) -> None:
    docker, image = _on(site, WORKER), site.env.image
    labels = {"orcastra.autoheal": "true", "orcastra.autoheal.stop_timeout": "1"}  # `sleep` ignores SIGTERM
    healed = hygiene.unhealthy_container(docker, image, "heal-me", labels)
    ignored = hygiene.unhealthy_container(docker, image, "heal-not-me", {})
    first, other = hygiene.started_at(docker, healed), hygiene.started_at(docker, ignored)
    started = time.monotonic()
    wait_for("a first restart", lambda: hygiene.started_at(docker, healed) != first, timeout=60, interval=0.5)
    print(f"\nFIGURE autoheal: restarted {time.monotonic() - started:.1f} s after the container started", flush=True)
    wait_for("autoheal gives up", lambda: "heal-me" in (_autoheal(site).get("given_up") or ()), timeout=90, interval=1)
    assert _autoheal(site)["restarts"] == 2
    last = hygiene.started_at(docker, healed)
    time.sleep(10)
    assert hygiene.started_at(docker, healed) == last  # capped: nothing more
    assert hygiene.started_at(docker, ignored) == other  # not opted in: never touched
    # A Swarm task that turns unhealthy: Swarm replaces it; autoheal reports it and does not restart it.
    site.docker(
        "service", "create", "--detach", "--name", "heal-svc", "--constraint", f"node.hostname=={WORKER}",
        "--container-label", "orcastra.autoheal=true", "--health-cmd", "test -f /nonexistent",
        "--health-interval", "1s", "--health-retries", "1", image, "sleep", "3600",
    )  # fmt: skip
    try:
        wait_for(
            "Swarm replacing the unhealthy task",
            lambda: "unhealthy" in site.docker("service", "ps", "--no-trunc", "heal-svc"),
            timeout=90,
            interval=1,
        )
        wait_for("autoheal's report of it", lambda: int(_autoheal(site).get("swarm_left") or 0) >= 1, timeout=60)
        assert _autoheal(site)["restarts"] == 2
    finally:
        site.docker("service", "rm", "heal-svc", check=False)
        docker("rm", "-f", healed, ignored, check=False)


def _logrotate_run_since(site: Site, node: str, since: float) -> dict[str, object] | None:
    """The last log rotation in ``node``'s agent report, once an agent started after ``since`` has made one
    (its run at start: the state file alone keeps it from rotating again)."""
    report = _agent_reports(site, "node2").get(node) or {}
    last = report.get("logrotate")
    if float(str(report.get("started_at", 0))) <= since or not isinstance(last, dict):
        return None
    return last


def test_logrotate_rotates_a_mounted_log_once_per_period_across_an_agent_restart(site: Site, tmp_path: Path) -> None:
    """A host log directory and a logrotate config mounted into the agents (root kept for them): the worker's
    log, last rotated 40 days ago by the state in its agent's volume, is rotated once (monthly) by the agent
    that starts with the mounts; the application writes on; the agent restarts and runs again at start:
    nothing more is rotated, and exactly one audit line says so."""
    scene = hygiene.build_logrotate_scene(tmp_path / "lr", [*MANAGERS, WORKER], WORKER)
    hygiene.seed_logrotate_state(_on(site, WORKER), days_ago=40)
    started = time.monotonic()
    update = ["service", "update", "--detach", *scene.mount_args(), "--env-add", "ORCASTRA_RUN_AS_ROOT=1"]
    site.docker(*update, "orcastra_agent")
    try:
        wait_for("the mounted log rotated", lambda: scene.rotated() == ["app.log.1.gz"], timeout=120, interval=0.5)
        print(f"\nFIGURE logrotate: rotated {time.monotonic() - started:.1f} s after the mounts were added", flush=True)
        scene.write_log()
        restarted = time.time()
        site.docker("service", "update", "--detach", "--force", "orcastra_agent")
        last = wait_for(
            f"a run of {WORKER}'s restarted agent in its report",
            lambda: _logrotate_run_since(site, WORKER, restarted),
            timeout=150,
            interval=2,
        )
        print(f"\nFIGURE logrotate: restart and its run {time.time() - restarted:.1f} s", flush=True)
        assert (last["rotated"], last["error"]) == (0, ""), last
        assert scene.rotated() == ["app.log.1.gz"]
        assert (scene.log_dir / "app.log").stat().st_size > 0
        logs = site.docker("service", "logs", "--raw", "orcastra_agent", stderr=True)
        assert logs.count(f"logrotate: rotated {hygiene.LOG_DIR_IN_AGENT}/app.log") == 1, logs[-3000:]
    except AssertionError:
        print(_agent_diagnostics(site, "node2", WORKER), flush=True)
        raise
    finally:
        # The next test's deploy resets the agent's spec anyway; this keeps a kept lab (ORCASTRA_LAB_KEEP)
        # from holding mounts of a temporary directory.
        restore = ["service", "update", "--detach", *scene.unmount_args(), "--env-rm", "ORCASTRA_RUN_AS_ROOT"]
        site.docker(*restore, "orcastra_agent", check=False)


def test_mod_caches_hold_exactly_the_referenced_mods_and_survive_a_registry_outage(site: Site) -> None:
    work = site.workdir / "mods"
    reg = mods.start_registries(work, LAB_NAME)
    image, node3, node4 = site.env.image, _on(site, "node3"), _on(site, WORKER)
    try:
        node4("run", "-d", "--name", "mods-user", "-e", f"DOCKER_MODS={reg.ref(reg.alpha)}", image, "sleep", "3600")
        service_mods = f"{reg.ref(reg.beta)}|{reg.plain.host}/mods/multi|{reg.ref(reg.gamma, reg.authed)}"
        site.docker(
            "service", "create", "--detach", "--name", "mods-svc", "--replicas", "0",
            "--env", f"DOCKER_MODS={service_mods}", image, "sleep", "3600",
        )  # fmt: skip
        caches = {name: mods.cache_dir(d) for name, d in (("node3", node3), (WORKER, node4))}
        everywhere = {"mods.beta.v1.tar.xz": reg.beta, "mods.multi.latest.tar.xz": reg.multi}
        everywhere["mods.gamma.v1.tar.xz"] = reg.gamma
        wanted = {"node3": everywhere, WORKER: {**everywhere, "mods.alpha.v1.tar.xz": reg.alpha}}
        expected = {n: {f: m.layer_digest for f, m in w.items()} for n, w in wanted.items()}
        started = time.monotonic()

        def refreshed() -> bool:  # the services' mods reach the agents with the next facts (5 s here)
            ok, _ = mods.refresh_everywhere(site.host("node1"), work)
            return ok and all(mods.cache_files(caches[n]) == expected[n] for n in caches)

        wait_for("every node's cache to hold exactly its mods", refreshed, timeout=90, interval=3)
        print(f"\nFIGURE mod caches filled on 4 nodes in {time.monotonic() - started:.1f} s", flush=True)
        for node, files in wanted.items():  # byte for byte what the registry serves
            for name, mod in files.items():
                assert (caches[node] / name).read_bytes() == mod.layer, (node, name)
        # The tag moves: the next refresh brings the new digest.
        new_alpha = mods.push_new_alpha(reg)
        ok, said = mods.refresh_everywhere(site.host("node1"), work)
        assert ok, said
        assert mods.cache_files(caches[WORKER])["mods.alpha.v1.tar.xz"] == new_alpha.layer_digest
        # Nothing names alpha any more: kept through the grace (5 s), then pruned.
        node4("rm", "-f", "mods-user")
        assert mods.refresh_everywhere(site.host("node1"), work)[0]
        assert "mods.alpha.v1.tar.xz" in mods.cache_files(caches[WORKER])
        time.sleep(6)
        assert mods.refresh_everywhere(site.host("node1"), work)[0]
        assert "mods.alpha.v1.tar.xz" not in mods.cache_files(caches[WORKER])
        # The registries go away: the refresh says so, and the cache stays as it was, file for file.
        before = {p.name: mods.stat_of(p) for p in caches[WORKER].iterdir()}
        reg.stop()
        ok, said = mods.refresh_everywhere(site.host("node1"), work)
        print(f"\n{said}", flush=True)
        assert not ok
        assert "failed" in said
        assert {p.name: mods.stat_of(p) for p in caches[WORKER].iterdir()} == before
        # LinuxServer's consumer, offline, takes the cached mod and applies it.
        root = work / "root"
        out = mods.consume_offline(caches[WORKER], root, service_mods)
        assert "offline-from-modcache" in out, out
        assert (root / "usr/share/beta/VERSION").read_text() == "1"
    finally:
        reg.stop()
        site.docker("service", "rm", "mods-svc", check=False)
        node4("rm", "-f", "mods-user", check=False)


def test_node_exporter_deployed_with_the_stack_feeds_orcastra_plan(site: Site, tmp_path: Path) -> None:
    """deploy/node-exporter.yml deployed into Orcastra's stack: `orcastra plan` shows every node's memory with no
    exporter URL configured, from a controller's container (overlay) and from this host alike."""
    started = time.monotonic()
    image = site.lab.build_node_exporter_image().ref
    built = time.monotonic()
    lab_stack.deploy(
        site.lab.layout,
        site.host("node1"),
        site.image,
        CONFIG,
        container_socket=site.env.container_socket,
        extra_files=[lab_stack.stack_file(node_exporter.FILE)],
        extra_variables=node_exporter.variables(image),
    )
    nodes = [*MANAGERS, WORKER]
    api = site.api()
    try:
        wait_for(
            "a node-exporter task on each node",
            lambda: sorted(running_nodes(api, node_exporter.SERVICE)) == nodes,
            timeout=90,
            interval=0.5,
        )
        deployed = time.monotonic()
        found = wait_for("node2's controller", lambda: _containers(site, "node2", "orcastra_controller"), timeout=90)
        controller = str(found[0]["Id"])
        (tmp_path / "plan.yml").write_text(node_exporter.plan_config(CONFIG))
        site.docker("cp", str(tmp_path / "plan.yml"), f"{controller}:{node_exporter.CONTAINER_CONFIG}", node="node2")
        argv = ("orcastra", "--config", node_exporter.CONTAINER_CONFIG, "plan", "--json")
        inside = site.docker("exec", controller, *argv, node="node2")
        (tmp_path / "client.yml").write_text(node_exporter.HOST_CONFIG)
        outside = subprocess.run(
            [sys.executable, "-m", "orcastra", "--config", str(tmp_path / "client.yml"), "plan", "--json"],
            env={**os.environ, "DOCKER_HOST": site.host("node1")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert outside.returncode == 0, outside.stderr
        planned = time.monotonic()
        for where, plan in (("in the controller's container", inside), ("on the host", outside.stdout)):
            memory = node_exporter.node_memory(plan)
            assert sorted(memory) == nodes, (where, memory)
            assert all(used is not None and 0 < used < 100 for used in memory.values()), (
                where,
                memory,
                node_exporter.memory_findings(plan),
            )
        rss, cpu = _proc_figures(site, WORKER, node_exporter.SERVICE, 3.0)
    finally:
        api.close()
        site.docker("service", "rm", node_exporter.SERVICE, check=False)
    print(
        f"\nFIGURE node_exporter with the stack: image {built - started:.1f} s, deploy -> a task on each node"
        f" {deployed - built:.1f} s, two plans {planned - deployed:.1f} s; memory {memory};"
        f" idle exporter {rss:.1f} MiB RSS, {cpu:.2f} % of a core",
        flush=True,
    )


def test_config_change_rolls_out_and_a_broken_one_is_refused(site: Site) -> None:
    changed = CONFIG.replace("labels: {zone: a}", "labels: {zone: b}")
    started = time.monotonic()
    site.deploy(changed)
    api = site.api()
    try:
        wait_for(
            "node4 relabelled zone=b", lambda: node_labels(api)[WORKER].get("zone") == "b", timeout=240, interval=1
        )
        print(f"\nFIGURE config change (deploy -> label applied): {time.monotonic() - started:.1f} s", flush=True)
        wait_for("the rolling update completed", lambda: _update_state(site) == "completed", timeout=240, interval=2)
        good = _config_names(_controller_spec(site))
        # A broken config (an unknown key): the first new replica exits at once, the update rolls back, and a
        # replica with the last good config keeps the lease all along.
        site.deploy(changed + "no_such_key: 1\n")
        wait_for("the update rolled back", lambda: _update_state(site) == "rollback_completed", timeout=300, interval=2)
        assert _config_names(_controller_spec(site)) == good
        assert site.holder() is not None
        # The replica the failed update replaced runs again with the last good config (health first: ~10 s).
        wait_for(
            "a controller on each manager again",
            lambda: sorted(running_nodes(api, "orcastra_controller")) == list(MANAGERS),
            timeout=90,
        )
        assert node_labels(api)[WORKER].get("zone") == "b"
    finally:
        api.close()


def _force_update(site: Site, service: str, node: str) -> int:
    out = site.docker("service", "inspect", service, "--format", "{{.Spec.TaskTemplate.ForceUpdate}}", node=node)
    return int(out.strip())


def _send_restart(site: Site, config: Path, node: str) -> subprocess.CompletedProcess[str]:
    return do_through_swarm(site.host(node), config, "restart", "app_probe")


def test_rolling_image_update_keeps_one_leader_and_runs_each_command_once(site: Site, tmp_path: Path) -> None:
    """``docker service update --image`` of the controller (stop-first, one replica at a time) while commands
    arrive through the Swarm: each runs exactly once, and the lease is never without a holder for long."""
    import threading

    next_image = site.image + "-next"
    site.docker("tag", site.image, next_image)
    site.docker("push", next_image)
    config = tmp_path / "client.yml"
    config.write_text("stack: app\n")
    before = _force_update(site, "app_probe", "node2")
    holders: list[tuple[float, str | None]] = []
    done = threading.Event()

    def watch_lease() -> None:
        while not done.is_set():
            holders.append((time.monotonic(), site.holder("node2")))
            time.sleep(0.25)

    watcher = threading.Thread(target=watch_lease, daemon=True)
    watcher.start()
    started = time.monotonic()
    site.docker("service", "update", "--detach", "--image", next_image, "orcastra_controller", node="node2")
    results: list[subprocess.CompletedProcess[str]] = []
    senders = []
    while _update_state(site) != "completed" and time.monotonic() - started < 300:
        sender = threading.Thread(target=lambda: results.append(_send_restart(site, config, "node3")))
        sender.start()
        senders.append(sender)
        time.sleep(4.0)
    updated = time.monotonic() - started
    for sender in senders:
        sender.join(timeout=200)
    done.set()
    watcher.join(timeout=5)
    assert _update_state(site) == "completed"
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results if r.returncode]
    assert _force_update(site, "app_probe", "node2") == before + len(results)
    distinct = [h for i, (_, h) in enumerate(holders) if h and (i == 0 or holders[i - 1][1] != h)]
    print(
        f"\nFIGURE rolling image update of 3 controller replicas: {updated:.0f} s, {len(results)} commands sent"
        f" during it, each ran once; lease holders in turn: {len(distinct)}",
        flush=True,
    )
    assert site.image + "-next" in json.dumps(_controller_spec(site, "node2"))


def _node_state(site: Site, hostname: str, via: str) -> str:
    """The node's state as a manager sees it ("unknown" while the managers elect a Raft leader: killing the
    node that leads Raft makes the others answer 500 "context deadline exceeded" for a few seconds)."""
    api = site.api(via)
    try:
        for node in api.nodes():
            if node["Description"]["Hostname"] == hostname:
                return str(node["Status"]["State"])
        return "absent"
    except docker.errors.APIError:
        return "unknown"
    finally:
        api.close()


def _running_nodes(api: docker.APIClient, service: str) -> list[str] | None:
    """``running_nodes``, or None while the managers cannot answer (a Raft election)."""
    try:
        return running_nodes(api, service)
    except docker.errors.APIError:
        return None


def test_killing_the_leaders_node_hands_over_and_the_group_follows(site: Site) -> None:
    """The node of the leader replica loses power (dockerd SIGKILLed); the anchor runs there too. Another
    replica must lead within the lease's ttl after the Swarm marks the node Down, and the group follow its
    anchor to the node it is rescheduled on."""
    doomed = _leader_node(site.holder())
    assert doomed in MANAGERS
    via = next(n for n in MANAGERS if n != doomed)
    api = site.api(via)
    try:
        # Only the doomed node may run db, then (without moving it) the worker may too: its only way out.
        for hostname in MANAGERS:
            set_node_labels_by_name(site, hostname, {"dbhome": "true" if hostname == doomed else "false"}, node=via)
        site.docker("service", "update", "--detach", "--force", "app_db", node=via)
        wait_for(
            "db and web on the leader's node",
            lambda: running_nodes(api, "app_web") == running_nodes(api, "app_db") == [doomed],
            timeout=120,
            interval=0.5,
        )
        set_node_labels_by_name(site, WORKER, {"dbhome": "true"}, node=via)
        before = site.holder(via)
        killed = time.monotonic()
        site.lab.kill(doomed)
        wait_for(f"{doomed} Down", lambda: _node_state(site, doomed, via) == "down", timeout=90, interval=0.5)
        down = time.monotonic()
        holder = wait_for(
            "a new leader", lambda: (h := site.holder(via)) not in (None, before) and h, timeout=90, interval=0.25
        )
        led = time.monotonic()
        assert _leader_node(holder) in MANAGERS
        assert _leader_node(holder) != doomed
        wait_for(
            "web follows db to the worker",
            lambda: _running_nodes(api, "app_web") == _running_nodes(api, "app_db") == [WORKER],
            timeout=120,
            interval=0.5,
        )
        followed = time.monotonic()
    finally:
        api.close()
    print(
        f"\nFIGURE leader node killed: node Down after {down - killed:.1f} s, new leader after {led - killed:.1f} s"
        f" ({led - down:+.1f} s after Down; ttl {LEASE_TTL_SECONDS:g} s), group on its new node after"
        f" {followed - killed:.1f} s",
        flush=True,
    )
    assert led - down <= LEASE_TTL_SECONDS + 2.0
