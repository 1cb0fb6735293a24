"""deploy/node-exporter.yml and the lab's node_exporter image without a daemon: the stack file carries the label
keys the discovery reads and the mounts it promises; the lab image's tag follows its content."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orcastra.domain.labels import NODE_EXPORTER_PORT_LABEL, NODE_EXPORTER_ROLE, REBALANCE_LABEL, ROLE_LABEL
from orcastra_lab import LabEnv
from orcastra_lab import node_exporter_image as nei
from orcastra_lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "deploy" / "node-exporter.yml"
DOCKER_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def service() -> dict[str, Any]:
    compose = yaml.safe_load(STACK_FILE.read_text())
    assert list(compose["services"]) == ["node-exporter"]
    found: dict[str, Any] = compose["services"]["node-exporter"]
    return found


def test_the_stack_file_labels_what_the_discovery_reads() -> None:
    spec = service()
    labels = spec["deploy"]["labels"]
    assert labels[ROLE_LABEL] == NODE_EXPORTER_ROLE
    assert labels[REBALANCE_LABEL] == "false"
    # The label and the listen address take the same variable: they cannot disagree.
    assert labels[NODE_EXPORTER_PORT_LABEL] == "${NODE_EXPORTER_PORT:-9100}"
    assert "--web.listen-address=:${NODE_EXPORTER_PORT:-9100}" in spec["command"]
    assert spec["deploy"]["mode"] == "global"


def test_the_stack_file_mounts_the_host_read_only_on_the_hosts_network() -> None:
    spec = service()
    mounts = {m["target"]: m for m in spec["volumes"]}
    assert {t: (m["source"], m["read_only"]) for t, m in mounts.items()} == {
        "/host/proc": ("/proc", True),
        "/host/sys": ("/sys", True),
        "/host/root": ("/", True),
    }
    assert mounts["/host/root"]["bind"]["propagation"] == "rslave"
    for flag in ("--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root"):
        assert flag in spec["command"]
    networks = yaml.safe_load(STACK_FILE.read_text())["networks"]
    assert [networks[n] for n in spec["networks"]] == [{"external": True, "name": "host"}]


def test_the_lab_image_keeps_the_upstream_entrypoint() -> None:
    assert 'ENTRYPOINT ["/bin/node_exporter"]' in nei.DOCKERFILE.splitlines()


def test_the_tag_follows_the_binary(tmp_path: Path) -> None:
    binary = tmp_path / "node_exporter"
    binary.write_bytes(b"one")
    first = nei.image_tag(binary)
    assert DOCKER_TAG_RE.match(first)
    assert nei.image_tag(binary) == first
    binary.write_bytes(b"two")
    assert nei.image_tag(binary) != first


def test_a_missing_binary_is_a_lab_error_with_an_install_hint(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="apt-get install prometheus-node-exporter"):
        nei.build_and_push(None, None, lambda _m: None, binary=tmp_path / "absent")  # type: ignore[arg-type]


@pytest.mark.parametrize("image", [None, "192.168.1.1:5000/orcastra/node-exporter:lab-0123456789ab"])
def test_env_exports_the_node_exporter_image_once_built(image: str | None) -> None:
    env = LabEnv(
        docker_host="unix:///s", registry="r:5000", image="r:5000/i:lab", node_hosts={}, node_exporter_image=image
    )
    assert ("ORCASTRA_LAB_NODE_EXPORTER_IMAGE=" in env.exports()) is (image is not None)
    if image:
        assert f"export ORCASTRA_LAB_NODE_EXPORTER_IMAGE={image}" in env.exports()
