#!/usr/bin/env bash
# `make demo`: brings up a 3-node lab Swarm, deploys a stack whose services need node labels, runs Orcastra
# once and shows the labels it set and the services now running where they belong.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lab up: 3 dockerd nodes in their own network namespaces, a registry, a busybox image"
orcastra lab up --nodes 3
eval "$(orcastra lab env)"

step "deploy examples/lab-stack.yml as stack 'demo' (its services need labels no node has yet)"
docker stack deploy -c examples/lab-stack.yml demo >/dev/null
sleep 2
docker service ls --filter label=com.docker.stack.namespace=demo

step "orcastra plan: what Orcastra would change, and why"
orcastra --config examples/lab-demo.yml plan

step "orcastra run --once: apply it"
orcastra --config examples/lab-demo.yml run --once

step "orcastra status: nodes and their labels (* = set by Orcastra)"
orcastra --config examples/lab-demo.yml status

step "where the demo services run now"
for i in $(seq 1 60); do
  running=$(docker service ps demo_web demo_worker --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running' || true)
  [ "$running" -ge 3 ] && break
  sleep 1
done
docker service ps demo_web demo_worker --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}'

step "done"
echo "The lab is still up. Try: eval \"\$(orcastra lab env)\"; orcastra --config examples/lab-demo.yml run"
echo "Remove everything it created with: make lab-down"
