"""Orcastra's image, built by the real Dockerfile on a lab node (offline: mmdebstrap base, host-built wheels)
and pushed to the lab registry; then run as a container against its node's Engine until Docker calls it
healthy. On a lab of its own (``img``, one node), torn down at the end.

Prints the figures docs/deploy.md quotes: base and build time, image size, cold start to the first cycle.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from orcastra_lab import Lab, LabEnv
from orcastra_lab.orcastra_image import IMAGE_REPOSITORY, OrcastraImage

from .conftest import KEEP_ENV
from .util import wait_for

pytestmark = pytest.mark.lab

LAB_NAME = "img"
MAX_IMAGE_BYTES = 150_000_000
CONFIG = "logging:\n  debug: true\n"  # the first cycle's "cycle 1 (leader): ..." line is a debug line


@pytest.fixture(scope="module")
def img_lab() -> Iterator[tuple[Lab, LabEnv]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, a bridge, iptables, dockerd)")
    lab = Lab(name=LAB_NAME)
    env = lab.up(nodes=1, managers=1, swarm=True)
    yield lab, env
    if os.environ.get(KEEP_ENV) != "1":
        lab.down()


@pytest.fixture(scope="module")
def built(img_lab: tuple[Lab, LabEnv]) -> OrcastraImage:
    lab, _ = img_lab
    image = lab.build_orcastra_image()
    print(f"\nimage {image.summary()}")
    return image


@pytest.fixture(scope="module")
def client(img_lab: tuple[Lab, LabEnv]) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=img_lab[1].docker_host, version="auto", timeout=60)
    try:
        yield c
    finally:
        c.close()


def registry_has(registry: str, repository: str, tag: str) -> bool:
    host, port = registry.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
        conn.request("HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": accept})
        return conn.getresponse().status == 200
    finally:
        conn.close()


def test_image_is_pushed_small_non_root_with_healthcheck_and_labels(
    img_lab: tuple[Lab, LabEnv], built: OrcastraImage, client: docker.DockerClient
) -> None:
    lab, _ = img_lab
    assert built.ref == f"{lab.layout.registry}/{IMAGE_REPOSITORY}:{built.version}"
    assert registry_has(lab.layout.registry, IMAGE_REPOSITORY, built.version)
    assert lab.env().orcastra_image == built.ref
    assert f"export ORCASTRA_LAB_ORCASTRA_IMAGE={built.ref}" in lab.env().exports()

    attrs = client.images.get(built.ref).attrs
    assert attrs["Size"] < MAX_IMAGE_BYTES, f"{attrs['Size'] / 1e6:.1f} MB"
    config = attrs["Config"]
    assert config["Healthcheck"]["Test"] == ["CMD", "orcastra", "health"]
    assert config["Entrypoint"] == ["orcastra-entrypoint"]
    assert config["Cmd"] == ["run"]
    assert config["StopSignal"] == "SIGTERM"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == built.version
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    for key in ("title", "description", "source"):
        assert labels[f"org.opencontainers.image.{key}"]

    version = client.containers.run(built.ref, ["--version"], remove=True).decode()
    assert f"version {built.version}" in version
    # No compiler, no pip left in the final image.
    tools = "for t in gcc cc pip pip3; do command -v $t; done; ls /root/.cache/pip 2>/dev/null; true"
    assert client.containers.run(built.ref, entrypoint=["sh", "-c", tools], remove=True).decode().strip() == ""


def test_container_runs_a_cycle_and_becomes_healthy(
    img_lab: tuple[Lab, LabEnv], built: OrcastraImage, client: docker.DockerClient
) -> None:
    lab, env = img_lab
    # The socket is root:docker on the node: the entrypoint gives the unprivileged user that group, whatever its
    # number (no group_add here, as none is possible in a stack file).
    socket_gid = lab.layout.node(1).socket.stat().st_gid
    with tempfile.TemporaryDirectory(prefix="orcastra-image-test-") as tmp:
        config = Path(tmp) / "orcastra.yml"
        config.write_text(CONFIG)
        Path(tmp).chmod(0o755)
        config.chmod(0o644)
        container = client.containers.create(
            built.ref,
            # The image's own check (orcastra health), probed every second rather than every 10 s: the Engine
            # keeps the image's test command when only the timings are given.
            healthcheck={"interval": 1_000_000_000},
            volumes={
                env.container_socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
                str(config): {"bind": "/etc/orcastra/orcastra.yml", "mode": "ro"},
            },
        )
        try:
            started = time.monotonic()
            container.start()
            wait_for("the first cycle", lambda: "cycle 1 " in container.logs().decode(), timeout=30, interval=0.05)
            cold_start = time.monotonic() - started

            def health() -> str | None:
                container.reload()
                status = str(container.attrs["State"]["Health"]["Status"])
                assert status != "unhealthy", container.logs().decode()[-2000:]
                return status if status == "healthy" else None

            wait_for("Docker to call the container healthy", health, timeout=45, interval=0.5)
            healthy_after = time.monotonic() - started
            print(f"\ncold start to first cycle {cold_start:.2f} s; healthy after {healthy_after:.1f} s")
            container.reload()
            assert container.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "orcastra", "health"]
            assert "leader" in container.logs().decode()
            status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
            ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines() if ":" in line}
            assert ids["Uid"][0] == "10001", status
            assert str(socket_gid) in ids["Groups"], status
            container.stop(timeout=10)
            assert "lease orcastra-leader released" in container.logs().decode()
        finally:
            container.remove(force=True)


def test_the_earlier_tools_compose_service_runs_with_only_the_image_changed(
    img_lab: tuple[Lab, LabEnv], built: OrcastraImage, client: docker.DockerClient
) -> None:
    """Issue 13's one-line switch: examples/legacy/docker-compose.yml's service (its environment, ./config at
    /etc/swarm-orchestration, the socket) with this image. It says legacy mode, runs as root as the earlier tool
    did (its users' mounts were made for root), and goes healthy."""
    _, env = img_lab
    example = Path(__file__).resolve().parents[2] / "examples" / "legacy"
    compose = yaml.safe_load((example / "docker-compose.yml").read_text())["services"]["orcastra"]
    environment = dict(item.split("=", 1) for item in compose["environment"])
    with tempfile.TemporaryDirectory(prefix="orcastra-legacy-test-") as tmp:
        config = Path(tmp) / "config"
        shutil.copytree(example / "config", config)
        for path in [Path(tmp), config, *config.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        container = client.containers.create(
            built.ref,
            environment=environment,
            healthcheck={"interval": 1_000_000_000},
            volumes={
                env.container_socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
                str(config): {"bind": "/etc/swarm-orchestration", "mode": "ro"},
            },
        )
        try:
            container.start()
            wait_for("legacy mode", lambda: "legacy mode: found" in container.logs().decode(), timeout=30)

            def healthy() -> bool:
                container.reload()
                return bool(container.attrs["State"]["Health"]["Status"] == "healthy")

            wait_for("healthy", healthy, timeout=45, interval=0.5)
            status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            assert uid == "0", status
            assert "Traceback" not in container.logs().decode()
            # TZ, which the earlier tool's users set, is the container's time zone (tzdata is in the image).
            zone = client.containers.run(
                built.ref,
                entrypoint=["python3", "-c", "import time; print(time.strftime('%Z'))"],
                environment={"TZ": "Europe/Paris"},
                remove=True,
            )
            assert zone.decode().strip() in ("CET", "CEST")
        finally:
            container.remove(force=True)
