#!/usr/bin/env bash
# `make demo`: brings up a 3-node lab Swarm, deploys a stack with an anchor group and a service that needs a
# node label, runs Orcastra, shows the group colocated, then kills the anchor's node and shows the group
# following it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CONFIG=examples/lab-demo.yml
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
group_node() {  # the node where demo_db and its dependents run together, or nothing
  orcastra --config "$CONFIG" status --json | python3 -c '
import json, sys
g = next((g for g in json.load(sys.stdin)["groups"] if g["anchor"] == "demo_db"), None)
print(g["anchor_nodes"][0] if g and g["colocated"] else "")'
}
wait_group() {  # wait until the group is colocated (on $1 if given)
  for _ in $(seq 1 120); do
    n=$(group_node); if [ -n "$n" ] && { [ -z "${1:-}" ] || [ "$n" = "$1" ]; }; then echo "$n"; return 0; fi; sleep 1
  done
  echo "the group did not get colocated; see $LOG" >&2; return 1
}

step "lab up: 3 dockerd nodes in their own network namespaces, a registry, a busybox image"
orcastra lab up --nodes 3
eval "$(orcastra lab env)"

step "deploy examples/lab-stack.yml as stack 'demo'"
docker stack deploy -c examples/lab-stack.yml demo >/dev/null
docker stack services demo

step "orcastra plan: what Orcastra would change, and why"
orcastra --config "$CONFIG" plan

step "orcastra run (in the background; log in $PWD/.demo-orcastra.log)"
LOG=$PWD/.demo-orcastra.log
orcastra --config "$CONFIG" run >"$LOG" 2>&1 &
ORCA=$!
trap 'kill $ORCA 2>/dev/null || true' EXIT
node=$(wait_group)
echo "anchor group colocated on $node"
orcastra --config "$CONFIG" status
echo; curl -s http://127.0.0.1:9180/healthz 2>/dev/null || python3 -c 'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:9180/healthz").read().decode())'

step "power loss on $node (orcastra lab kill $node): Swarm moves db, Orcastra moves its dependents after it"
orcastra lab kill "$node"
start=$(date +%s)
other=$([ "$node" = node2 ] && echo node3 || echo node2)
wait_group "$other" >/dev/null
echo "group colocated on $other after $(( $(date +%s) - start )) s (Swarm itself needs ~15 s to notice the node is down)"
orcastra lab start "$node"
orcastra --config "$CONFIG" status
echo; echo "what Orcastra did (its audit lines):"; grep -o '"target": "[^"]*", "change": "[^"]*"' "$LOG" | tail -n 12 || true

step "done"
kill $ORCA; wait $ORCA 2>/dev/null || true
echo "The lab is still up. Try: eval \"\$(.venv/bin/orcastra lab env)\"; .venv/bin/orcastra --config $CONFIG run"
echo "Remove everything the lab created with: make lab-down"
