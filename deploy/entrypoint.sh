#!/bin/sh
# Orcastra's entrypoint: run as the unprivileged user orcastra (uid 10001) with the Docker socket's group
# added, whatever that group's number is on this node (it differs between distributions and hosts, which is
# why a fixed group_add in a stack file is fragile for a global service). Started as root, it drops to that
# user with setpriv (util-linux, in every Debian image); started as another user (`user:` in the stack), it
# runs as that user. ORCASTRA_RUN_AS_ROOT=1 keeps root (for node features that need it).
# The earlier tool ran as root, and its users' mounts (its command file's directory, LOG_TO_FILE's log) were
# made for root: with its config directory mounted (legacy mode, docs/migrating.md) root is kept unless
# ORCASTRA_RUN_AS_ROOT=0 says otherwise, so switching the image breaks nothing.
set -eu
legacy=0
if [ -d "${ORCASTRA_LEGACY_DIR:-/etc/swarm-orchestration}" ]; then
    legacy=1
fi
if [ "$(id -u)" = 0 ] && [ "${ORCASTRA_RUN_AS_ROOT:-$legacy}" != 1 ]; then
    socket=${DOCKER_HOST:-unix:///var/run/docker.sock}
    socket=${socket#unix://}
    groups=10001
    if [ -S "$socket" ]; then
        groups="10001,$(stat -c %g "$socket")"
    fi
    exec setpriv --reuid=10001 --regid=10001 --groups="$groups" --inh-caps=-all -- orcastra "$@"
fi
exec orcastra "$@"
