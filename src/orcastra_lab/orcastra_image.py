"""Orcastra's own image, built on a lab node by the repository's real Dockerfile, offline, and pushed.

The lab's daemons have no route out, and there is no Docker Hub here, so the two things the Dockerfile
takes from outside are made on the host:

- the base (``BASE``): a Debian 12 root filesystem with python3 and venv, made by ``mmdebstrap`` from
  Debian's packages, pruned (no docs, man pages, locales, perl) and ``docker import``-ed into the node. The
  tarball is cached under ``/var/cache/orcastra-lab`` keyed by a hash of its recipe, so only the first build
  on a machine pays the ~30 s of mmdebstrap;
- the wheels: ``pip wheel`` of Orcastra and its pinned dependencies into the build context's
  ``dist/wheels/`` (the dependencies' wheels are cached the same way, keyed by pyproject's pins).

The build itself runs with ``--network none`` on the node's dockerd (Docker 20.10's classic builder), the
image is tagged ``<lab registry>/orcastra/orcastra:<version>`` and pushed to the lab registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from orcastra_lab.errors import LabError
from orcastra_lab.host import run
from orcastra_lab.image import docker_cli_env
from orcastra_lab.layout import LabLayout, NodeLayout

CACHE_DIR = Path("/var/cache/orcastra-lab")
CACHE_DIR_ENV = "ORCASTRA_LAB_CACHE_DIR"
IMAGE_REPOSITORY = "orcastra/orcastra"
BASE_REPOSITORY = "orcastra-lab/base"
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# python3 (the interpreter and its standard library) and python3-venv (the build stage makes the venv);
# tzdata, so TZ works as with the earlier tool and with python:3.11-slim (reboot windows, log times).
# usr-is-merged: init-system-helpers needs "usrmerge | usr-is-merged"; without it apt picks usrmerge,
# which pulls in all of perl (~50 MB).
# logrotate: the agent's log rotation runs Debian's (docs/hygiene.md). It depends on "cron | anacron |
# cron-daemon | systemd-sysv": apt would pick cron, which brings passwd, adduser and libsemanage (+3.6 MB in
# the base); anacron is the smallest of them (+0.3 MB with logrotate and libpopt0) and never runs: no init
# starts it, the agent schedules logrotate itself.
BASE_PACKAGES = ("python3-minimal", "python3", "python3-venv", "tzdata", "usr-is-merged", "logrotate", "anacron")
# The essential set is resolved before --include is seen, so usrmerge and perl still come; purged at the end.
BASE_PURGE = (
    "usrmerge",
    "libfile-find-rule-perl",
    "libnumber-compare-perl",
    "libtext-glob-perl",
    "perl",
    "libperl5.36",
    "perl-modules-5.36",
)
# dpkg never unpacks these (copyright files are kept: the licences travel with the image).
BASE_PATH_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/bash-completion/*",
    # iconv's converters: Python has its own codecs.
    "path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
)
BASE_CLEANUP = (
    "/var/cache/debconf/*-old",
    "/var/lib/dpkg/*-old",
    "/var/log/*",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/apt/lists/*",
)
MMDEBSTRAP_TIMEOUT_SECONDS = 300.0
BUILD_TIMEOUT_SECONDS = 300.0
BUILD_LOG_TAIL_LINES = 15
MMDEBSTRAP_HINT = "apt-get install mmdebstrap (or run scripts/setup.sh)"

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class OrcastraImage:
    """A built and pushed image, with what it cost."""

    ref: str
    version: str
    size_bytes: int
    base_seconds: float  # mmdebstrap and import of the base; ~0 when both were already there
    wheels_seconds: float  # the build context: pip wheel of Orcastra (and of its dependencies, once)
    build_seconds: float  # docker build and push
    total_seconds: float  # base and wheels run side by side, so less than the sum

    def summary(self) -> str:
        return (
            f"{self.ref}: {self.size_bytes / 1e6:.1f} MB in {self.total_seconds:.1f} s (base {self.base_seconds:.1f} s "
            f"and wheels {self.wheels_seconds:.1f} s side by side, build and push {self.build_seconds:.1f} s)"
        )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or CACHE_DIR)


def repo_root() -> Path:
    """The source checkout the lab runs from (the Dockerfile sits at its root)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Dockerfile").is_file() or not (root / "pyproject.toml").is_file():
        raise LabError(f"no Dockerfile and pyproject.toml in {root}: building the image needs a source checkout")
    return root


def project_version(root: Path) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def base_key() -> str:
    """Names the base tarball and image: any change to the recipe makes a new one."""
    return _digest(SUITE, MIRRORS, BASE_PACKAGES, BASE_PURGE, BASE_PATH_EXCLUDES, BASE_CLEANUP)


# --- the base ------------------------------------------------------------------------------------------------


def mmdebstrap_argv(target: Path) -> list[str]:
    """mmdebstrap's command line (its customize hook gets the root directory as $1)."""
    hook = f'chroot "$1" dpkg --purge {" ".join(BASE_PURGE)} >/dev/null && rm -rf '
    hook += " ".join(f'"$1"{path}' for path in BASE_CLEANUP)
    argv = ["mmdebstrap", "--variant=essential", "--format=tar", "--include=" + ",".join(BASE_PACKAGES), "--quiet"]
    argv += [f"--dpkgopt={opt}" for opt in BASE_PATH_EXCLUDES]
    argv += [f"--customize-hook={hook}", SUITE, str(target), *MIRRORS]
    return argv


def ensure_base_tarball(progress: Progress) -> Path:
    """The cached base tarball, made by mmdebstrap when missing (written aside, then renamed into place)."""
    tarball = cache_dir() / f"base-{base_key()}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise LabError(f"mmdebstrap not found (it builds the image's base from Debian's packages); {MMDEBSTRAP_HINT}")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(f"{tarball.stem}.partial-{os.getpid()}.tar")
    progress(f"building the base {tarball.name} with mmdebstrap (once per machine; ~30 s)")
    try:
        proc = _run_logged(mmdebstrap_argv(partial), timeout=MMDEBSTRAP_TIMEOUT_SECONDS, what="mmdebstrap")
        if proc.returncode != 0:
            raise LabError(f"mmdebstrap failed (exit {proc.returncode}):\n{_tail(proc.stdout)}")
        partial.replace(tarball)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        partial.unlink(missing_ok=True)
    return tarball


def ensure_base_image(layout: LabLayout, node: NodeLayout, progress: Progress) -> str:
    """The base as an image in ``node``'s store (imported from the cached tarball when missing)."""
    ref = f"{BASE_REPOSITORY}:{base_key()}"
    env = docker_cli_env(layout, node)
    if run(["docker", "image", "inspect", ref], env=env, check=False).returncode == 0:
        return ref
    tarball = ensure_base_tarball(progress)
    progress(f"{node.name}: importing {tarball.name} as {ref}")
    run(["docker", "import", str(tarball), ref], env=env, timeout=MMDEBSTRAP_TIMEOUT_SECONDS)
    return ref


# --- the build context ------------------------------------------------------------------------------------


def _pip_wheel(args: Sequence[str], what: str) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", *args]
    proc = _run_logged(argv, timeout=BUILD_TIMEOUT_SECONDS, what=what)
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}):\n{_tail(proc.stdout)}")


def dependency_wheels(root: Path, progress: Progress) -> Path:
    """Wheels of Orcastra's pinned dependencies (and theirs), cached by the pins and the Python version."""
    pins = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    wheels = cache_dir() / f"wheels-{_digest(pins, sys.version_info[:2])}"
    if wheels.is_dir():
        return wheels
    progress(f"pip wheel of {len(pins)} pinned dependencies into {wheels}")
    partial = wheels.with_name(f"{wheels.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _pip_wheel(["--wheel-dir", str(partial), *pins], what="pip wheel of the dependencies")
        partial.rename(wheels)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return wheels


def write_context(root: Path, context: Path, progress: Progress) -> None:
    """Dockerfile, .dockerignore, the entrypoint and dist/wheels/ (Orcastra's wheel, built from a copy of the
    source, so the checkout gets no build/ or egg-info, plus the cached dependency wheels)."""
    wheels = context / "dist" / "wheels"
    wheels.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "deploy/entrypoint.sh"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, context / name)
    source = context.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(root / name, source / name)
    shutil.copytree(root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for wheel in dependency_wheels(root, progress).glob("*.whl"):
        os.link(wheel, wheels / wheel.name)
    _pip_wheel(["--no-deps", "--wheel-dir", str(wheels), str(source)], "pip wheel .")


# --- build and push -------------------------------------------------------------------------------------------


def docker_build(env: dict[str, str], context: Path, ref: str, build_args: dict[str, str]) -> None:
    """The Dockerfile on the dockerd ``env`` points at, offline; a failure carries the last lines of its log."""
    # The classic builder: the docker CLI here has no buildx, and the nodes' Engine (20.10) builds it fine.
    env = {**env, "DOCKER_BUILDKIT": "0"}
    argv = ["docker", "build", "--network", "none", "--tag", ref]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    proc = _run_logged([*argv, str(context)], timeout=BUILD_TIMEOUT_SECONDS, what="docker build", env=env)
    if proc.returncode != 0:
        raise LabError(f"docker build of {ref} failed (exit {proc.returncode}):\n{_tail(proc.stdout)}")


def image_size(layout: LabLayout, node: NodeLayout, ref: str) -> int:
    env = docker_cli_env(layout, node)
    return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", ref], env=env).stdout.strip())


def build_and_push(layout: LabLayout, node: NodeLayout, progress: Progress) -> OrcastraImage:
    """Base and wheels (side by side: one waits on Debian's mirror, the other on pip), then ``docker build``
    on ``node`` and ``docker push`` to the lab registry."""
    root = repo_root()
    version = project_version(root)
    ref = f"{layout.registry}/{IMAGE_REPOSITORY}:{version}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orcastra-image-") as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        context = Path(tmp) / "context"
        base_future = pool.submit(_timed, ensure_base_image, layout, node, progress)
        context_future = pool.submit(_timed, write_context, root, context, progress)
        wheels_seconds = context_future.result()[1]
        base, base_seconds = base_future.result()
        build_started = time.monotonic()
        progress(f"{node.name}: docker build of {ref} (BASE={base}, --network none)")
        docker_build(docker_cli_env(layout, node), context, ref, {"BASE": base, "VERSION": version})
    progress(f"pushing {ref}")
    run(["docker", "push", ref], env=docker_cli_env(layout, node), timeout=BUILD_TIMEOUT_SECONDS)
    now = time.monotonic()
    return OrcastraImage(
        ref=ref,
        version=version,
        size_bytes=image_size(layout, node, ref),
        base_seconds=base_seconds,
        wheels_seconds=wheels_seconds,
        build_seconds=now - build_started,
        total_seconds=now - started,
    )


# --- helpers --------------------------------------------------------------------------------------------------


def _timed(func: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.monotonic()
    return func(*args), time.monotonic() - started


def _run_logged(
    argv: Sequence[str], *, timeout: float, what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run with stdout and stderr in one text (a build log), never raising on a non-zero exit."""
    try:
        return subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise LabError(f"{what}: {argv[0]} not found") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{what} did not finish within {timeout:.0f} s") from e


def _tail(log: str, lines: int = BUILD_LOG_TAIL_LINES) -> str:
    tail = [line for line in log.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  | {line}" for line in tail) if tail else "  (no output)"
