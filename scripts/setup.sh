#!/usr/bin/env bash
# Installs what Orcastra and its lab need on Debian 12 (run as root): Debian packages for the lab (mmdebstrap
# makes the base of Orcastra's image in the lab, see docs/deploy.md), and a virtualenv (.venv) with Orcastra
# and its pinned tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io docker-registry busybox-static mmdebstrap iptables iproute2 util-linux make prometheus prometheus-node-exporter socat openssl openssh-server openssh-client logrotate)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The lab runs its own dockerd processes; a system dockerd started by the package is not needed.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.orcastra-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Orcastra and its tools into .venv"
  # (grep drops pip's warnings about this machine's optional local package indexes)
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
  touch "$stamp"
fi
