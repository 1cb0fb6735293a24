"""Orcastra's image without a daemon: the Dockerfile's promises, the base recipe, the lab's exports."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from orcastra.config.load import CONFIG_PATH_VAR
from orcastra_lab import LabEnv
from orcastra_lab import orcastra_image as oi

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def final_stage(text: str) -> list[str]:
    lines = instructions(text)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def test_default_version_build_arg_is_the_projects_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}" in instructions(DOCKERFILE)


@pytest.mark.parametrize(
    "expected",
    [
        'HEALTHCHECK --interval=10s --timeout=3s --retries=3 --start-period=20s CMD ["orcastra", "health"]',
        "STOPSIGNAL SIGTERM",
        'ENTRYPOINT ["orcastra-entrypoint"]',
        'CMD ["run"]',
        "COPY deploy/entrypoint.sh /usr/local/bin/orcastra-entrypoint",
        "FROM ${BASE}",
    ],
    ids=["healthcheck", "stopsignal", "entrypoint", "cmd", "non-root", "base-arg"],
)
def test_final_stage_has(expected: str) -> None:
    assert expected in final_stage(DOCKERFILE)


def test_final_stage_installs_nothing_but_a_missing_logrotate_and_labels_the_oci_keys() -> None:
    stage = " ".join(final_stage(DOCKERFILE))
    assert "pip install" not in stage
    # apt only where the base lacks logrotate: the lab's base has it, and its build has no network.
    apt = [line for line in final_stage(DOCKERFILE) if "apt-get" in line]
    assert len(apt) == 1
    assert apt[0].startswith("RUN if [ -x /usr/sbin/logrotate ] || command -v logrotate >/dev/null; then exit 0; fi;")
    assert "install -y --no-install-recommends logrotate anacron" in apt[0]
    assert {"logrotate", "anacron"} <= set(oi.BASE_PACKAGES)
    for key in ("version", "source", "licenses", "title", "description"):
        assert f"org.opencontainers.image.{key}=" in stage
    assert 'org.opencontainers.image.licenses="MIT"' in stage


def test_the_config_path_variable_the_dockerfile_names_is_the_products() -> None:
    # The image relies on the product's default path (setting the variable would make the file mandatory).
    assert CONFIG_PATH_VAR in DOCKERFILE
    assert "/etc/orcastra/orcastra.yml" in DOCKERFILE


def test_dockerignore_lets_only_the_source_and_the_wheels_through() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!src", "!pyproject.toml", "!README.md", "!dist/wheels"} <= set(lines)


def test_base_key_changes_with_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = oi.base_key()
    assert before == oi.base_key()
    monkeypatch.setattr(oi, "BASE_PACKAGES", (*oi.BASE_PACKAGES, "curl"))
    assert oi.base_key() != before


def test_mmdebstrap_argv_writes_a_tarball_and_purges_perl_in_its_hook() -> None:
    argv = oi.mmdebstrap_argv(Path("/cache/base-x.partial-1.tar"))
    assert argv[:3] == ["mmdebstrap", "--variant=essential", "--format=tar"]
    assert "--include=python3-minimal,python3,python3-venv,tzdata,usr-is-merged,logrotate,anacron" in argv
    hook = next(a for a in argv if a.startswith("--customize-hook="))
    assert "dpkg --purge usrmerge" in hook
    assert '"$1"/var/log/*' in hook
    assert argv[-4:] == ["/cache/base-x.partial-1.tar", *oi.MIRRORS]


def test_missing_mmdebstrap_is_a_lab_error_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(oi.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(oi.shutil, "which", lambda _name: None)
    with pytest.raises(oi.LabError, match="apt-get install mmdebstrap"):
        oi.ensure_base_tarball(lambda _m: None)


@pytest.mark.parametrize(
    ("image", "exported"),
    [(None, False), ("192.168.1.1:5000/orcastra/orcastra:0.1.0", True)],
    ids=["not-built", "built"],
)
def test_env_exports_orcastra_image_once_built(image: str | None, exported: bool) -> None:
    env = LabEnv(docker_host="unix:///s", registry="r:5000", image="r:5000/i:lab", node_hosts={}, orcastra_image=image)
    assert ("ORCASTRA_LAB_ORCASTRA_IMAGE=" in env.exports()) is exported
    if image:
        assert f"export ORCASTRA_LAB_ORCASTRA_IMAGE={image}" in env.exports()


def test_build_log_tail_keeps_the_last_lines() -> None:
    log = "\n".join(f"step {i}" for i in range(40))
    tail = oi._tail(log, lines=3).splitlines()
    assert tail == ["  | step 37", "  | step 38", "  | step 39"]
