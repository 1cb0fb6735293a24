"""The mod manager on the stack lab (issue 15), as steps the stack test calls: two registries of the test's own
on the lab's bridge (one plain, one behind a token server), LinuxServer-style mods pushed to them (one layer
holding a file tree; one multi-platform index), and what a node's cache directory holds.

The agents reach the registries from their containers over the lab's bridge address, as a real node reaches
ghcr.io: the registries' ports are fixed so the stack's config can name them (``insecure_registries``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orcastra_lab.auth_registry import LocalRegistry, TokenServer
from orcastra_lab.layout import BRIDGE_HOST_OCTET, subnet_octet
from orcastra_lab.mod_images import PushedMod, Pusher

from .util import do_through_swarm

PLAIN_PORT, AUTH_PORT, TOKEN_PORT = 5101, 5102, 5103
CONSUMER = Path(__file__).resolve().parents[1] / "data" / "mods" / "consumer.sh"

Docker = Callable[..., str]


def bridge_address(lab_name: str) -> str:
    return f"192.168.{subnet_octet(lab_name)}.{BRIDGE_HOST_OCTET}"


def mods_config(lab_name: str) -> str:
    """The ``mods:`` section of the stack test's config."""
    bridge = bridge_address(lab_name)
    return f"""\
mods:
  enabled: true
  insecure_registries: ["{bridge}:{PLAIN_PORT}", "{bridge}:{AUTH_PORT}"]
  prune_grace_seconds: 5
  attempts: 1
  connect_timeout_seconds: 2
"""


@dataclass
class ModSite:
    plain: LocalRegistry
    authed: LocalRegistry
    token: TokenServer
    alpha: PushedMod
    beta: PushedMod
    multi: PushedMod  # the linux/amd64 entry of the index
    gamma: PushedMod  # behind token auth (anonymous pull)

    def ref(self, mod: PushedMod, registry: LocalRegistry | None = None) -> str:
        return f"{(registry or self.plain).host}/{mod.repository}:{mod.tag}"

    def stop(self) -> None:
        for server in (self.plain, self.authed, self.token):
            with contextlib.suppress(Exception):  # already stopped by the outage step
                server.stop()


def _files(name: str, version: str) -> dict[str, bytes]:
    """A mod's file tree as LinuxServer's are laid out (an s6 init script and a payload)."""
    script = f"#!/bin/sh\necho '{name} {version} applied'\n".encode()
    return {f"etc/cont-init.d/98-{name}": script, f"usr/share/{name}/VERSION": version.encode()}


def start_registries(work: Path, lab_name: str) -> ModSite:
    """The two registries and their token server on the lab's bridge, the mods pushed; all stopped again if
    any step fails (they are processes of the test's own)."""
    bridge = bridge_address(lab_name)
    for sub in ("token", "plain", "authed"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    token = TokenServer(work / "token", users={"pusher": "s3cret"}, port=TOKEN_PORT, address=bridge)
    plain = LocalRegistry(work / "plain", port=PLAIN_PORT, address=bridge)
    authed = LocalRegistry(work / "authed", token=token, port=AUTH_PORT, address=bridge)
    started: list[TokenServer | LocalRegistry] = []
    try:
        for server in (token, plain, authed):
            server.start()
            started.append(server)
        pusher = Pusher(plain.base_url)
        by_platform = {"linux/amd64": _files("multi", "amd64"), "linux/arm64": _files("multi", "arm64")}
        multi = pusher.push_multi_platform_mod("mods/multi", "latest", by_platform)
        return ModSite(
            plain=plain,
            authed=authed,
            token=token,
            alpha=pusher.push_mod("mods/alpha", "v1", _files("alpha", "1")),
            beta=pusher.push_mod("mods/beta", "v1", _files("beta", "1")),
            multi=multi["linux/amd64"],
            # Pushed with credentials; pulled anonymously (the token server grants anonymous pulls).
            gamma=Pusher(authed.base_url, "pusher", "s3cret").push_mod("mods/gamma", "v1", _files("gamma", "1")),
        )
    except BaseException:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        raise


def push_new_alpha(site: ModSite) -> PushedMod:
    """The tag ``mods/alpha:v1`` moved to new content."""
    return Pusher(site.plain.base_url).push_mod("mods/alpha", "v1", _files("alpha", "2"))


def cache_dir(docker: Docker) -> Path:
    """The node's ``orcastra_modcache`` volume, as the host sees it."""
    return Path(docker("volume", "inspect", "orcastra_modcache", "--format", "{{.Mountpoint}}").strip())


def cache_files(directory: Path) -> dict[str, str]:
    """Cache file name -> "sha256:<hex>" of what it holds (temporary and lock files left out)."""
    return {
        p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.name.endswith(".tar.xz") and not p.name.startswith(".")
    }


def stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def consume_offline(cache: Path, root: Path, docker_mods: str) -> str:
    """LinuxServer's consumer (written from docs/mods.md, tests/data/mods/consumer.sh) with no registry."""
    done = subprocess.run(
        ["bash", str(CONSUMER), str(cache), str(root)],
        env={**os.environ, "DOCKER_MODS": docker_mods},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def refresh_everywhere(docker_host: str, workdir: Path) -> tuple[bool, str]:
    """``orcastra do --swarm refresh-mods`` from the host through a manager: (it succeeded, what it said)."""
    config = workdir / "client.yml"
    config.write_text("stack: app\n")
    done = do_through_swarm(docker_host, config, "refresh-mods")
    return done.returncode == 0, done.stdout + done.stderr
