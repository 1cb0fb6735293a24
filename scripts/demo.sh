#!/usr/bin/env bash
# `make demo`: Orcastra the way a Swarm operator runs it, on the local lab. Brings up a 5-node lab Swarm
# (3 managers, 2 workers), builds Orcastra's image by the Dockerfile, pushes it to the lab registry and deploys
# deploy/stack.yml (a controller on each manager, an agent on every node); then deploys a stack with an anchor
# group, shows the group colocated, sends a command through the Swarm, kills the anchor's node and shows the
# group following it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CLIENT=$PWD/.demo-client.yml   # the CLI's own config on this host: the stack's name, nothing else
printf 'stack: demo\n' >"$CLIENT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
group_node() {  # the node where demo_db and its dependents run together, or nothing
  orcastra --config "$CLIENT" status --json | python3 -c '
import json, sys
g = next((g for g in json.load(sys.stdin)["groups"] if g["anchor"] == "demo_db"), None)
print(g["anchor_nodes"][0] if g and g["colocated"] else "")'
}
wait_group() {  # wait until the group is colocated (on $1 if given)
  for _ in $(seq 1 120); do
    n=$(group_node); if [ -n "$n" ] && { [ -z "${1:-}" ] || [ "$n" = "$1" ]; }; then echo "$n"; return 0; fi; sleep 1
  done
  echo "the group did not get colocated; see: docker service logs orcastra_controller" >&2; return 1
}

step "lab up --with-orcastra: 5 dockerd nodes (3 managers), a registry, Orcastra's image, deploy/stack.yml"
orcastra lab up --nodes 5 --managers 3 --with-orcastra --orcastra-config examples/lab-deployed.yml
eval "$(orcastra lab env)"
docker stack services orcastra
docker service ps orcastra_controller --format '{{.Name}} on {{.Node}}: {{.CurrentState}}' --filter desired-state=running

step "deploy examples/lab-stack.yml as stack 'demo'"
docker stack deploy -c examples/lab-stack.yml demo >/dev/null
docker stack services demo
node=$(wait_group)
echo "anchor group colocated on $node"

step "orcastra status (the leader from the lease, nodes, groups, agents), and the controller's JSON logs"
orcastra --config "$CLIENT" status
docker service logs --raw orcastra_controller 2>&1 | grep '"message"' | tail -n 5

step "a command through the Swarm: the leader takes it wherever it runs (orcastra do --swarm restart demo_cache)"
orcastra --config "$CLIENT" do --swarm restart demo_cache

step "power loss on $node (orcastra lab kill $node): Swarm moves db, Orcastra moves its dependents after it"
orcastra lab kill "$node"
start=$(date +%s)
other=$([ "$node" = node4 ] && echo node5 || echo node4)
wait_group "$other" >/dev/null
echo "group colocated on $other after $(( $(date +%s) - start )) s (Swarm itself needs ~15 s to notice the node is down)"
orcastra lab start "$node"
orcastra --config "$CLIENT" status

step "done"
echo "The lab and Orcastra's stack are still up. Try: eval \"\$(.venv/bin/orcastra lab env)\"; docker service logs orcastra_controller"
echo "Remove everything the lab created with: make lab-down"
