"""``DOCKER_MODS`` values as people write them -> mod references and cache file names, checked against a
consumer written from docs/mods.md (tests/data/mods/consumer.sh: LinuxServer's registry choice and FILENAME):
the names must be the ones the consumer looks for. Malformed and hostile values give problems naming their
source, never a crash."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from orcastra.features.mods.reference import (
    DOCKER_HUB,
    LSCR,
    MAX_MODS_PER_VALUE,
    MAX_VALUE_CHARS,
    ModReference,
    docker_mods_of,
    parse_mods,
    parse_reference,
)

HEX = "f644" + "0" * 60
OTHER_HEX = "ab" * 32

# item -> (registry, repository, tag, digest, cache name)
ACCEPTED = {
    "linuxserver/mods:swag-dashboard": (
        LSCR,
        "linuxserver/mods",
        "swag-dashboard",
        None,
        "linuxserver.mods.swag-dashboard",
    ),
    "lscr.io/linuxserver/mods:universal-tshoot": (
        "lscr.io",
        "linuxserver/mods",
        "universal-tshoot",
        None,
        "linuxserver.mods.universal-tshoot",
    ),
    "ghcr.io/linuxserver/mods:code-server-python3": (
        LSCR,
        "linuxserver/mods",
        "code-server-python3",
        None,
        "linuxserver.mods.code-server-python3",
    ),
    "docker.io/linuxserver/mods:code-server-docker": (
        LSCR,
        "linuxserver/mods",
        "code-server-docker",
        None,
        "linuxserver.mods.code-server-docker",
    ),
    "ghcr.io/mentalfs/linuxserver-mods:freshrss-extensions": (
        "ghcr.io",
        "mentalfs/linuxserver-mods",
        "freshrss-extensions",
        None,
        "mentalfs.linuxserver-mods.freshrss-extensions",
    ),
    "ghcr.io/themepark-dev/theme.park:qbittorrent": (
        "ghcr.io",
        "themepark-dev/theme.park",
        "qbittorrent",
        None,
        "themepark-dev.theme.park.qbittorrent",
    ),
    "zjudgenie/docker-mods:universal-openssh": (
        DOCKER_HUB,
        "zjudgenie/docker-mods",
        "universal-openssh",
        None,
        "zjudgenie.docker-mods.universal-openssh",
    ),
    "docker.io/someone/mod": (DOCKER_HUB, "someone/mod", "latest", None, "someone.mod.latest"),
    "linuxserver/mods": (LSCR, "linuxserver/mods", "latest", None, "linuxserver.mods.latest"),
    f"ghcr.io/vuetorrent/vuetorrent-lsio-mod:2.35.0@sha256:{HEX}": (
        "ghcr.io",
        "vuetorrent/vuetorrent-lsio-mod",
        "2.35.0",
        f"sha256:{HEX}",
        f"vuetorrent.vuetorrent-lsio-mod.2.35.0.{HEX}",
    ),
    f"linuxserver/mods@sha256:{OTHER_HEX}": (
        LSCR,
        "linuxserver/mods",
        None,
        f"sha256:{OTHER_HEX}",
        f"linuxserver.mods.{OTHER_HEX}",
    ),
    "registry.example.com:5000/team/mod:1.0": ("registry.example.com:5000", "team/mod", "1.0", None, "team.mod.1.0"),
    "localhost:5000/user/mod": ("localhost:5000", "user/mod", "latest", None, "user.mod.latest"),
    "10.0.0.1:5000/orcastra/mod-a:v2": ("10.0.0.1:5000", "orcastra/mod-a", "v2", None, "orcastra.mod-a.v2"),
    "index.docker.io/user/mod:x": (DOCKER_HUB, "user/mod", "x", None, "user.mod.x"),
}


@pytest.mark.parametrize("item", list(ACCEPTED), ids=list(ACCEPTED))
def test_a_reference_gives_the_consumers_registry_and_file_name(item: str) -> None:
    registry, repository, tag, digest, name = ACCEPTED[item]
    got = parse_reference(item)
    assert isinstance(got, ModReference)
    assert (got.registry, got.repository, got.tag, got.digest, got.cache_name) == (
        registry,
        repository,
        tag,
        digest,
        name,
    )
    assert got.cache_file == name + ".tar.xz"
    assert got.lock_file == name + ".lock"
    assert got.manifest_ref == (digest or tag)


REFUSED = {
    "mods:swag-maxmind": "not a user/repository reference",  # linuxserver/docker-mods#585
    "DOCKER_MODS=linuxserver/mods:code-server-python3": "is not a repository name component",  # #812
    "my.registry/mod:tag": "not a user/repository reference",
    "ghcr.io/org/team/repo:tag": "not a user/repository reference",
    "user/team/repo:tag": "is not a registry host",
    "LinuxServer/Mods:x": "is not a repository name component",
    "linuxserver/mods@sha256:abc": "is not a sha256 digest",
    f"linuxserver/mods@sha512:{HEX}{HEX}": "is not a sha256 digest",
    "linuxserver/mods:-bad": "is not a tag",
    "linuxserver/mods:" + "t" * 200: "is not a tag",
    "bad_host!/user/mod": "is not a registry host",
    "linuxserver/mods:x\x1b[31m": "not printable ASCII",
    "linuxserver/möds:x": "not printable ASCII",
    "a/" + "b" * 600: "longer than 512 characters",
}


@pytest.mark.parametrize("item", list(REFUSED), ids=[repr(i)[:40] for i in REFUSED])
def test_what_the_consumer_cannot_cache_is_refused_with_a_reason(item: str) -> None:
    got = parse_reference(item)
    assert isinstance(got, str)
    assert REFUSED[item] in got


def test_a_value_splits_on_pipes_and_whitespace_as_the_consumers_for_loop_does() -> None:
    value = "linuxserver/mods:swag-dashboard||linuxserver/mods:swag-maxmind linuxserver/mods:swag-dashboard\n"
    parsed = parse_mods(value, "service web")
    assert [r.cache_name for r in parsed.references] == [
        "linuxserver.mods.swag-dashboard",
        "linuxserver.mods.swag-maxmind",
    ]
    assert parsed.problems == ()


def test_problems_name_the_source_and_the_item_and_the_good_items_still_count() -> None:
    parsed = parse_mods("linuxserver/mods:ok|mods:bad|user/team/repo", "container swag")
    assert [r.text for r in parsed.references] == ["linuxserver/mods:ok"]
    assert parsed.problems == (
        "container swag: DOCKER_MODS item 2 'mods:bad': not a user/repository reference (LinuxServer's consumer "
        "caches only user/repository mods)",
        "container swag: DOCKER_MODS item 3 'user/team/repo': 'user' is not a registry host (a registry has a '.' "
        "or a ':port', or is localhost)",
    )


def test_long_and_crowded_values_are_bounded() -> None:
    too_long = parse_mods("a/b:" + "c" * MAX_VALUE_CHARS, "service x")
    assert too_long.references == ()
    assert too_long.problems == (f"service x: DOCKER_MODS is longer than {MAX_VALUE_CHARS} characters: not read",)
    crowded = parse_mods("|".join(f"user/mod:t{i}" for i in range(40)), "service y")
    assert len(crowded.references) == MAX_MODS_PER_VALUE
    assert crowded.problems == (f"service y: DOCKER_MODS names 40 mods; the first {MAX_MODS_PER_VALUE} are read",)


@pytest.mark.parametrize(
    "value",
    ["a" * 500 + "!", "a-" * 250 + "!", "a." * 250 + "/b/c", ("a" + "-" * 60) * 8 + "/b", "\x00" * 100, "|" * 4000],
    ids=["long-name", "dashes", "dots", "long-dashes", "nuls", "pipes"],
)
def test_hostile_values_are_answered_quickly_and_never_raise(value: str) -> None:
    started = time.perf_counter()
    parsed = parse_mods(value, "container evil")
    assert time.perf_counter() - started < 0.05
    assert parsed.references == ()


def test_the_env_value_is_the_last_docker_mods_entry() -> None:
    env = ["PUID=1000", "DOCKER_MODS=a/b:1", "TZ=UTC", "DOCKER_MODS=c/d:2|e/f:3", "DOCKER_MODS_DEBUG=true"]
    assert docker_mods_of(env) == "c/d:2|e/f:3"
    assert docker_mods_of(None) == ""
    assert docker_mods_of(["DOCKER_MODSX=a/b"]) == ""


CONSUMER = Path(__file__).resolve().parents[1] / "data" / "mods" / "consumer.sh"


def test_every_accepted_reference_has_the_file_name_the_consumer_computes(tmp_path: Path) -> None:
    """The consumer written from docs/mods.md, offline over an empty cache: it names each file it looks for."""
    items = list(ACCEPTED)
    out = subprocess.run(
        ["bash", str(CONSUMER), str(tmp_path), str(tmp_path)],
        env={"DOCKER_MODS": "|".join(items), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == [w for i in items for w in (ACCEPTED[i][4], "offline-not-found")]
