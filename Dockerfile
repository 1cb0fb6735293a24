# Orcastra's container image.
#
#   docker build -t orcastra .                       # with Docker Hub and PyPI: python:3.11-slim, deps from PyPI
#   docker build --build-arg BASE=REF --network none -t orcastra .   # offline: a base with python3 + venv,
#                                                    # and dist/wheels/ in the context (see docs/deploy.md)
#
# When dist/wheels/ holds wheels (Orcastra's own and its pinned dependencies, made on a machine with PyPI by
# `pip wheel --wheel-dir dist/wheels .`), everything is installed from them and nothing is fetched; otherwise
# Orcastra is built from this source tree and its dependencies come from PyPI. Only the classic `docker build`
# features are used (no RUN --mount, no COPY --chmod), so Docker 20.10's builder builds it as well as BuildKit.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# Only what .dockerignore lets through: pyproject, README, LICENSE, src/ and dist/wheels/.
COPY . /src
RUN set -eu; \
    python3 -m venv /opt/orcastra; \
    if ls /src/dist/wheels/*.whl >/dev/null 2>&1; then \
        /opt/orcastra/bin/pip install --no-cache-dir --no-index --find-links /src/dist/wheels orcastra; \
    else \
        /opt/orcastra/bin/pip install --no-cache-dir /src; \
    fi; \
    # pip and setuptools only served the install; the running image needs neither.
    /opt/orcastra/bin/pip uninstall --yes --quiet pip setuptools; \
    /opt/orcastra/bin/orcastra --version

FROM ${BASE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/orcastra/orcastra
LABEL org.opencontainers.image.title="orcastra" \
      org.opencontainers.image.description="A controller for Docker Swarm: anchor-following, node labels, memory-aware rebalancing." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# A user of its own (the base may have no useradd, so /etc/passwd and /etc/group are written directly). The
# container starts as root only to learn the Docker socket's group on its node, then the entrypoint drops to
# this user with that group added (deploy/entrypoint.sh): `docker stack deploy` has no group_add, and the
# socket's group number differs between hosts, so a fixed group in a stack file would be fragile.
# Debian's logrotate, for the agent's log rotation (docs/hygiene.md). The lab's offline base already has it (and
# builds with --network none), so apt runs only on a base without it, such as python:3.11-slim. anacron
# satisfies logrotate's "cron | anacron | ..." dependency with the least (cron brings passwd and adduser);
# nothing starts it: the agent schedules logrotate itself.
RUN if [ -x /usr/sbin/logrotate ] || command -v logrotate >/dev/null; then exit 0; fi; \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends logrotate anacron \
 && rm -rf /var/lib/apt/lists/*
RUN echo 'orcastra:x:10001:10001:Orcastra:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'orcastra:x:10001:' >> /etc/group \
 && mkdir -p /etc/orcastra /var/lib/orcastra /modcache \
 && chown 10001:10001 /var/lib/orcastra /modcache
COPY deploy/entrypoint.sh /usr/local/bin/orcastra-entrypoint
COPY --from=build /opt/orcastra /opt/orcastra

# The configuration is read from /etc/orcastra/orcastra.yml when it exists (Orcastra's default path; mount it
# there, or set ORCASTRA_CONFIG to another path, which then must exist) and from ORCASTRA_* variables.
ENV PATH=/opt/orcastra/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# `orcastra health` asks the running Orcastra's /healthz on api.listen (127.0.0.1:9180 by default): exit 0 or 1.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 --start-period=20s CMD ["orcastra", "health"]
# On SIGTERM Orcastra finishes its cycle and releases its leader lease before it exits.
STOPSIGNAL SIGTERM
# Runs `orcastra ARGS` as uid 10001 (+ the socket's group); ORCASTRA_RUN_AS_ROOT=1 keeps root.
ENTRYPOINT ["orcastra-entrypoint"]
CMD ["run"]
