"""The node_exporter image the lab deploys with Orcastra's stack (deploy/node-exporter.yml): Debian's
``prometheus-node-exporter`` binary, as installed on this host, on the mmdebstrap base of Orcastra's image.

There is no Docker Hub or quay.io here. Debian's build is linked against glibc alone (``ldd``: libc.so.6 and
the loader), which the base has, so the image is the base plus one layer: the binary as /bin/node_exporter,
run as nobody, behind the same entrypoint as the Prometheus project's image, so the stack file's arguments
work with either. The nodes already hold the base's layer (Orcastra's agent runs on every node), so a pull is
the binary's 14 MB.

The tag is a digest of the content (the binary, this recipe, the base's recipe): a new binary makes a new tag,
so a node never runs an older image it kept under the same tag, and a tag the registry already holds is not
built again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from orcastra_lab import orcastra_image, registry
from orcastra_lab.errors import LabError
from orcastra_lab.host import run
from orcastra_lab.image import docker_cli_env
from orcastra_lab.layout import LabLayout, NodeLayout

BINARY = Path("/usr/bin/prometheus-node-exporter")
IMAGE_REPOSITORY = "orcastra/node-exporter"
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY node_exporter /bin/node_exporter
USER 65534:65534
EXPOSE 9100
ENTRYPOINT ["/bin/node_exporter"]
"""
PUSH_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class NodeExporterImage:
    """The image in the lab registry: built now, or found there already (``built`` False)."""

    ref: str
    built: bool
    seconds: float

    def summary(self) -> str:
        return f"{self.ref}: " + (f"built and pushed in {self.seconds:.1f} s" if self.built else "already pushed")


def image_tag(binary: Path = BINARY) -> str:
    """``lab-<digest of the binary, the Dockerfile and the base's recipe>``."""
    content = hashlib.sha256(binary.read_bytes()).hexdigest()
    recipe = json.dumps([content, DOCKERFILE, orcastra_image.base_key()])
    return "lab-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]


def build_and_push(
    layout: LabLayout, node: NodeLayout, progress: orcastra_image.Progress, binary: Path = BINARY
) -> NodeExporterImage:
    """``docker build`` on ``node`` (``--network none``) and ``docker push``, unless the registry has the tag."""
    started = time.monotonic()
    if not binary.is_file():
        raise LabError(f"{binary} not found: apt-get install prometheus-node-exporter (or run scripts/setup.sh)")
    tag = image_tag(binary)
    ref = f"{layout.registry}/{IMAGE_REPOSITORY}:{tag}"
    if registry.has_manifest(layout, IMAGE_REPOSITORY, tag):
        return NodeExporterImage(ref, built=False, seconds=time.monotonic() - started)
    base = orcastra_image.ensure_base_image(layout, node, progress)
    env = docker_cli_env(layout, node)
    with tempfile.TemporaryDirectory(prefix="orcastra-node-exporter-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE)
        shutil.copy2(binary, context / "node_exporter")
        progress(f"{node.name}: docker build of {ref} ({binary} on {base}, --network none)")
        orcastra_image.docker_build(env, context, ref, {"BASE": base})
    progress(f"pushing {ref}")
    run(["docker", "push", ref], env=env, timeout=PUSH_TIMEOUT_SECONDS)
    return NodeExporterImage(ref, built=True, seconds=time.monotonic() - started)
