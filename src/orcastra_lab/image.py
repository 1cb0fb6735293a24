"""The lab's image: busybox-static in an otherwise empty rootfs, imported into a node and pushed.

``docker import`` needs no base image and no Docker Hub. The default command sleeps forever (and stops at
once on SIGTERM), so a service created with just the image keeps a running task. The push goes from the
node's daemon (in its namespace) to the lab registry over the bridge.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from orcastra_lab.errors import LabError
from orcastra_lab.host import INSTALL_HINT, run
from orcastra_lab.layout import LabLayout, NodeLayout

# Sleeps forever, but ends at once on SIGTERM: a bare `sleep` as PID 1 ignores SIGTERM, so every task stop
# (an update, a move, a node restart) would wait out Docker's 10 s stop timeout before the SIGKILL.
IMAGE_CMD = """CMD ["/bin/sh","-c","trap 'exit 0' TERM INT; sleep infinity & wait"]"""
# Applets the project's tests and examples rely on; every other applet busybox lists is linked too.
REQUIRED_APPLETS = (
    "sh",
    "sleep",
    "cat",
    "dd",
    "head",
    "tail",
    "httpd",
    "mount",
    "ls",
    "echo",
    "wget",
    "ps",
    "kill",
    "true",
    "false",
    "env",
    "free",
    "hostname",
    "grep",
    "mkdir",
    "rm",
)
IMPORT_TIMEOUT_SECONDS = 120.0

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def busybox_path() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise LabError(f"busybox not found; install it with: {INSTALL_HINT}")
    return Path(found)


def build_rootfs(rootfs: Path) -> None:
    """/bin/busybox plus a symlink per applet (at the path busybox itself lists), /etc basics, /tmp."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    (rootfs / "bin").mkdir(parents=True)
    busybox = busybox_path()
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    listed = run([str(busybox), "--list-full"]).stdout.split()
    links = set(listed) | {f"bin/{applet}" for applet in REQUIRED_APPLETS}
    for rel in sorted(links):
        if Path(rel).name == "busybox":
            continue
        link = rootfs / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    for rel, text in ETC_FILES.items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(text)
    for rel in ("proc", "sys", "dev", "root", "var", "run"):
        (rootfs / rel).mkdir(exist_ok=True)
    (rootfs / "tmp").mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def docker_host_env(layout: LabLayout, docker_host: str) -> dict[str, str]:
    """The environment for ``docker`` CLI calls against ``docker_host``, with a CLI config dir of the lab's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
    layout.docker_config_dir.mkdir(parents=True, exist_ok=True)
    return env | {"DOCKER_HOST": docker_host, "DOCKER_CONFIG": str(layout.docker_config_dir)}


def docker_cli_env(layout: LabLayout, node: NodeLayout) -> dict[str, str]:
    """``docker_host_env`` against one node."""
    return docker_host_env(layout, node.docker_host)


def import_image(layout: LabLayout, node: NodeLayout, rootfs: Path) -> None:
    """``tar -C rootfs -c . | docker import -c CMD - REF`` against ``node``."""
    layout.docker_config_dir.mkdir(parents=True, exist_ok=True)
    env = docker_cli_env(layout, node)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        try:
            imported = subprocess.run(
                ["docker", "import", "-c", IMAGE_CMD, "-", layout.image],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                env=env,
                timeout=IMPORT_TIMEOUT_SECONDS,
                check=False,
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
        tar_rc = tar.wait(timeout=IMPORT_TIMEOUT_SECONDS)
    if tar_rc != 0 or imported.returncode != 0:
        raise LabError(f"docker import of {layout.image} into {node.name} failed: {imported.stderr.strip()}")


def push_image(layout: LabLayout, node: NodeLayout) -> None:
    run(["docker", "push", layout.image], env=docker_cli_env(layout, node), timeout=IMPORT_TIMEOUT_SECONDS)


def build_and_push(layout: LabLayout, node: NodeLayout) -> None:
    """Build the rootfs, import it into ``node`` and push it to the lab registry; remove the rootfs."""
    rootfs = layout.image_build_dir / "rootfs"
    try:
        build_rootfs(rootfs)
        import_image(layout, node, rootfs)
        push_image(layout, node)
    finally:
        shutil.rmtree(layout.image_build_dir, ignore_errors=True)
