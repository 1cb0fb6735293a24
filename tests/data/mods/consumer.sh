#!/bin/bash
# A consumer of the mod cache, written from docs/mods.md ("The contract"), which follows LinuxServer's
# docker-mods.v3 (3.20250104, run_mods): the registry and FILENAME from each DOCKER_MODS item, the cache file
# <cache>/<FILENAME>.tar.xz taken when its sha256 is the registry's layer digest (online) or as it is (offline),
# checked with `tar -tzf` and extracted over the root. Test code: never shipped.
#
# usage: DOCKER_MODS=... consumer.sh CACHE ROOT [DIGESTS]
#   DIGESTS: a file of "FILENAME sha256:<hex>" lines, what the registry says now (absent or not listed: offline).
# prints one line per item: "<FILENAME> <decision>", decision one of found-in-modcache, offline-from-modcache,
# offline-not-found, would-download, locked, invalid-tarball; then "applied" when the mod was extracted.
set -u
CACHE=$1
ROOT=$2
DIGESTS=${3:-/dev/null}
for DOCKER_MOD in $(echo "${DOCKER_MODS}" | tr '|' '\n'); do
    case "${DOCKER_MOD}" in
    linuxserver/* ) ;;
    docker.io/linuxserver/* ) DOCKER_MOD="${DOCKER_MOD#docker.io/*}" ;;
    ghcr.io/linuxserver/* ) DOCKER_MOD="${DOCKER_MOD#ghcr.io/*}" ;;
    docker.io/* ) DOCKER_MOD="${DOCKER_MOD#docker.io/*}" ;;
    * )
        MOD="${DOCKER_MOD%/*}"
        if [[ $MOD == */* ]]; then
            REGISTRY="${MOD%%/*}"
            DOCKER_MOD="${DOCKER_MOD#"$REGISTRY"/*}"
        elif [[ ${DOCKER_MOD%%/*} =~ \. ]]; then
            DOCKER_MOD="${DOCKER_MOD##*/}"
        fi
        ;;
    esac
    unset TAG TAGSHA
    if [[ ${DOCKER_MOD} == *:*@* ]]; then
        ENDPOINT="${DOCKER_MOD%%:*}"; FULLTAG="${DOCKER_MOD#*:}"; TAG="${FULLTAG%@*}"; TAGSHA="${DOCKER_MOD#*@}"
    elif [[ ${DOCKER_MOD} == *@* ]]; then
        ENDPOINT="${DOCKER_MOD%%@*}"; TAGSHA="${DOCKER_MOD#*@}"
    elif [[ ${DOCKER_MOD} == *:* ]]; then
        ENDPOINT="${DOCKER_MOD%%:*}"; TAG="${DOCKER_MOD#*:}"
    else
        ENDPOINT="${DOCKER_MOD}"; TAG="latest"
    fi
    USERNAME="${DOCKER_MOD%%/*}"
    REPO="${ENDPOINT#*/}"
    FILENAME="${USERNAME}.${REPO}${TAG:+.${TAG}}${TAGSHA:+.${TAGSHA#*:}}"
    FILE="${CACHE}/${FILENAME}.tar.xz"
    SHALAYER=$(awk -v f="${FILENAME}" '$1 == f {print $2}' "${DIGESTS}")
    MOD_OFFLINE=""
    [[ -z "${SHALAYER}" ]] && MOD_OFFLINE="true"
    if [[ -f "${FILE}" ]] && [[ -n "${SHALAYER}" ]] && [[ "${SHALAYER}" =~ $(sha256sum "${FILE}" | cut -f1 -d" ") ]]; then
        echo "${FILENAME} found-in-modcache"
    elif [[ -f "${FILE}" ]] && [[ "${MOD_OFFLINE}" = "true" ]]; then
        echo "${FILENAME} offline-from-modcache"
    elif [[ ! -f "${FILE}" ]] && [[ "${MOD_OFFLINE}" = "true" ]]; then
        echo "${FILENAME} offline-not-found"
        continue
    elif [[ -f "${CACHE}/${FILENAME}.lock" ]]; then
        echo "${FILENAME} locked"
        continue
    else
        echo "${FILENAME} would-download"
        continue
    fi
    if ! tar -tzf "${FILE}" >/dev/null 2>&1; then
        echo "${FILENAME} invalid-tarball"
        continue
    fi
    mkdir -p "${ROOT}/.mod"
    tar xzf "${FILE}" -C "${ROOT}/.mod"
    shopt -s dotglob
    cp -R "${ROOT}/.mod"/* "${ROOT}/"
    shopt -u dotglob
    rm -rf "${ROOT}/.mod"
    echo "${FILENAME} applied"
done
