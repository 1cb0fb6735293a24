"""The lab's image registry: ``docker-registry serve`` on the bridge address, storage in the lab dir.

There is no Docker Hub here. A service whose image exists only in one daemon's local store takes ~45 s
to create (registry lookups time out) and may run different images on different nodes; with the lab
registry every node pulls the same pushed image at once. The daemons reach it across the bridge from
their namespaces, over plain HTTP, hence ``--insecure-registry`` on every dockerd.
"""

from __future__ import annotations

import http.client

import yaml

from orcastra_lab.host import cmdline, is_alive, spawn_detached
from orcastra_lab.layout import IMAGE_REPOSITORY, IMAGE_TAG, REGISTRY_PORT, LabLayout
from orcastra_lab.state import ProcessRecord

HTTP_TIMEOUT_SECONDS = 3.0
MANIFEST_MEDIA_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


def write_config(layout: LabLayout) -> None:
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.registry_dir / "data")},
            "delete": {"enabled": True},
        },
        # Only on the bridge address: reachable from the lab's namespaces and this host, nowhere else.
        "http": {"addr": layout.registry},
    }
    layout.registry_dir.mkdir(parents=True, exist_ok=True)
    layout.registry_config.write_text(yaml.safe_dump(config, sort_keys=False))


def start(layout: LabLayout) -> ProcessRecord:
    write_config(layout)
    return spawn_detached(["docker-registry", "serve", str(layout.registry_config)], layout.registry_log)


def is_running(layout: LabLayout, record: ProcessRecord | None) -> bool:
    """That process is alive and is this lab's registry (its argument is the lab's config file)."""
    return record is not None and is_alive(record) and str(layout.registry_config) in cmdline(record.pid)


def _status(layout: LabLayout, method: str, path: str, headers: dict[str, str] | None = None) -> int | None:
    conn = http.client.HTTPConnection(layout.bridge_address, REGISTRY_PORT, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def is_ready(layout: LabLayout) -> bool:
    """The registry answers its API root (``GET /v2/`` is 200 without auth)."""
    return _status(layout, "GET", "/v2/") == 200


def has_image(layout: LabLayout) -> bool:
    """The lab image's manifest is in the registry (so every node can pull it)."""
    return has_manifest(layout, IMAGE_REPOSITORY, IMAGE_TAG)


def has_manifest(layout: LabLayout, repository: str, tag: str) -> bool:
    """``repository:tag`` is in the lab registry."""
    path = f"/v2/{repository}/manifests/{tag}"
    return _status(layout, "HEAD", path, {"Accept": MANIFEST_MEDIA_TYPES}) == 200
