"""The lab's network: one Linux bridge, one network namespace and veth pair per node, one FORWARD rule.

The /24 exists only on the bridge and the namespaces get no default route, so nothing a node does can
leave the machine. Each function here does one idempotent ``ip``/``iptables`` step; recording what was
created is the caller's job (see ``core``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from orcastra_lab.errors import LabError
from orcastra_lab.host import run
from orcastra_lab.layout import NodeLayout

SYS_CLASS_NET = Path("/sys/class/net")


def link_exists(name: str) -> bool:
    return (SYS_CLASS_NET / name).exists()


def netns_exists(name: str) -> bool:
    return (Path("/var/run/netns") / name).exists()


def addresses_in_subnet(subnet: str) -> dict[str, str]:
    """Host interfaces that carry an IPv4 address inside ``subnet``: interface -> address."""
    net = ipaddress.ip_network(subnet)
    found: dict[str, str] = {}
    for line in run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            iface = ipaddress.ip_interface(fields[3])
            if iface.ip in net:
                found[fields[1]] = str(iface.ip)
    return found


def create_bridge(bridge: str, address: str, subnet: str) -> None:
    """Create the bridge (if missing) with ``address`` on it and bring it up."""
    prefix = ipaddress.ip_network(subnet).prefixlen
    if not link_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    if addresses_in_subnet(subnet).get(bridge) != address:
        run(["ip", "addr", "replace", f"{address}/{prefix}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def forward_rule(bridge: str) -> list[str]:
    """dockerd sets the FORWARD policy to DROP (and bridge-nf-call-iptables=1), which silently drops
    traffic between the veths of one bridge: this rule lets the bridge forward to itself."""
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def forward_rule_present(rule: list[str]) -> bool:
    return run(["iptables", "-C", *rule], check=False).returncode == 0


def insert_forward_rule(rule: list[str]) -> None:
    if not forward_rule_present(rule):
        chain, *spec = rule
        run(["iptables", "-I", chain, "1", *spec])


def delete_forward_rule(rule: list[str]) -> None:
    # -D removes one copy per call; loop in case an interrupted run inserted it twice.
    for _ in range(10):
        if not forward_rule_present(rule):
            return
        run(["iptables", "-D", *rule], check=False)


def create_netns(node: NodeLayout) -> None:
    if not netns_exists(node.netns):
        run(["ip", "netns", "add", node.netns])
    run(["ip", "-n", node.netns, "link", "set", "lo", "up"])


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def node_interface_ready(node: NodeLayout) -> bool:
    """eth0 exists in the node's namespace with the node's address."""
    proc = run(["ip", "-n", node.netns, "-o", "-4", "addr", "show", "dev", "eth0"], check=False)
    return proc.returncode == 0 and f" {node.address}/" in proc.stdout


def plug_node(node: NodeLayout, bridge: str, subnet: str) -> None:
    """Create the node's veth pair: host end on the bridge, other end as eth0 with the node's address.

    No default route is added in the namespace on purpose: the node can reach the bridge's /24 and
    nothing else.
    """
    prefix = ipaddress.ip_network(subnet).prefixlen
    if not node_interface_ready(node):
        if link_exists(node.veth_peer):
            run(["ip", "link", "del", node.veth_peer])
        if not link_exists(node.veth_host):
            run(["ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_peer])
        if link_exists(node.veth_peer):
            run(["ip", "link", "set", node.veth_peer, "netns", node.netns])
            run(["ip", "-n", node.netns, "link", "set", node.veth_peer, "name", "eth0"])
        if not node_interface_ready(node):
            run(["ip", "-n", node.netns, "addr", "add", f"{node.address}/{prefix}", "dev", "eth0"])
        run(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
    if not link_exists(node.veth_host):
        raise LabError(f"{node.name}: veth {node.veth_host} is missing although eth0 exists in {node.netns}")
    run(["ip", "link", "set", node.veth_host, "master", bridge, "up"])


def set_link(name: str, up: bool) -> None:
    """Bring a host-side link down (a partition: the node's Swarm traffic stops at the bridge) or up again."""
    if not link_exists(name):
        raise LabError(f"link {name} does not exist")
    run(["ip", "link", "set", name, "up" if up else "down"])


def link_up(name: str) -> bool:
    try:
        flags = int((SYS_CLASS_NET / name / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)  # IFF_UP
