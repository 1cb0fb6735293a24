"""Steps of the stack lab's node_exporter test: deploy/node-exporter.yml deployed into Orcastra's stack, and
each node's memory read back from ``orcastra plan --json``, which found the exporters by their service label
(no exporter URL in any configuration)."""

from __future__ import annotations

import json
from typing import Any

import yaml

# Every lab node's namespace already runs the lab's own node_exporter on <node address>:9100.
PORT = 9110
SERVICE = "orcastra_node-exporter"
FILE = "node-exporter.yml"
# In the container, where `orcastra plan` reads the test's configuration.
CONTAINER_CONFIG = "/tmp/orcastra-plan.yml"
HOST_CONFIG = "stack: app\nrebalance:\n  enabled: true\n"


def variables(image: str) -> dict[str, str]:
    """The stack file's variables on the lab: the image built from Debian's package, and the port."""
    return {"NODE_EXPORTER_IMAGE": image, "NODE_EXPORTER_PORT": str(PORT)}


def plan_config(config_text: str) -> str:
    """The deployed configuration with rebalancing on (``plan`` shows node memory only then); it must name no
    node memory source, or the test would prove nothing."""
    data: dict[str, Any] = yaml.safe_load(config_text)
    rebalance = data.setdefault("rebalance", {})
    sources = rebalance.get("sources") or {}
    assert not sources.get("node_exporter"), sources
    assert "prometheus" not in sources, sources
    rebalance["enabled"] = True
    return yaml.safe_dump(data, sort_keys=False)


def node_memory(plan_json: str) -> dict[str, float | None]:
    """Node -> used % from ``orcastra plan --json`` (None: no memory data for it)."""
    plan = json.loads(plan_json)
    return {str(n["node"]): n["used_percent"] for n in plan["rebalance"]["nodes"]}


def memory_findings(plan_json: str) -> list[str]:
    """The plan's rebalance warnings, for a failure message."""
    plan = json.loads(plan_json)
    return [f"{f['subject']}: {f['message']}" for f in plan["rebalance"]["findings"] if f["level"] == "warning"]
