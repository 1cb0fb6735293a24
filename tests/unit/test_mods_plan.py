"""The mod manager's pure parts, table-driven: the mods a node wants (containers and services, conflicts,
problems), the cache plan (fetch, keep, prune after the grace, never a locked one, nothing while the services
are unknown), the refresh schedule, manifests resolved to a platform, and the ``mods:`` settings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from orcastra.adapters.node_engine import ContainerDetail
from orcastra.config import load_config
from orcastra.domain.snapshot import Service, Snapshot
from orcastra.errors import ConfigError, ModImageError
from orcastra.features.agents.facts import decode_facts, encode_facts, facts_from
from orcastra.features.mods.manifest import (
    Descriptor,
    Manifest,
    NodePlatform,
    Platform,
    node_platform,
    parse_platform,
    pick_layer,
    pick_platform,
)
from orcastra.features.mods.plan import (
    CacheEntry,
    CacheListing,
    ModPolicy,
    WantedMods,
    next_refresh_at,
    node_offset,
    plan_cache,
    wanted_mods,
)

NOW = 1_000_000.0
DAY = 86400.0
GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def wanted(containers: dict[str, str], services: dict[str, str] | None = None) -> WantedMods:
    return wanted_mods(containers.items(), None if services is None else services.items())


# --- wanted mods ---------------------------------------------------------------------------------


def test_containers_and_services_are_both_wanted_and_each_mod_knows_who_names_it() -> None:
    got = wanted(
        {"swag": "linuxserver/mods:swag-dashboard|linuxserver/mods:swag-maxmind", "plain": ""},
        {"shop_web": "ghcr.io/linuxserver/mods:swag-dashboard", "shop_db": "lscr.io/user/mod:1"},
    )
    assert sorted(got.mods) == ["linuxserver.mods.swag-dashboard", "linuxserver.mods.swag-maxmind", "user.mod.1"]
    assert got.users["linuxserver.mods.swag-dashboard"] == ("container swag", "service shop_web")
    assert got.problems == ()
    assert got.complete


def test_unknown_services_make_the_wanted_set_incomplete() -> None:
    assert not wanted({"a": "user/mod"}).complete


def test_two_registries_with_one_file_name_are_a_problem_and_the_first_is_kept() -> None:
    got = wanted({}, {"a": "ghcr.io/user/mod:1", "b": "docker.io/user/mod:1"})
    assert got.mods["user.mod.1"].registry == "ghcr.io"
    assert got.problems == (
        "service b: docker.io/user/mod:1 and ghcr.io/user/mod:1 share the cache file user.mod.1.tar.xz "
        "(LinuxServer's naming leaves the registry out); ghcr.io/user/mod:1 is cached",
    )


def test_malformed_items_are_problems_naming_container_or_service() -> None:
    got = wanted({"c1": "mods:x"}, {"s1": "user/Team/mod"})
    assert got.mods == {}
    assert [p.split(":")[0] for p in got.problems] == ["container c1", "service s1"]


# --- the cache plan ------------------------------------------------------------------------------


def listing(*names: str, locks: dict[str, float] | None = None, temps: dict[str, float] | None = None) -> CacheListing:
    locks = locks or {}
    return CacheListing({n: CacheEntry(n, 100, NOW - DAY, locks.get(n)) for n in names}, locks, temps or {})


POLICY = ModPolicy(prune=True, prune_grace_seconds=DAY, stale_lock_seconds=3600.0, temp_max_age_seconds=3600.0)
A, B, GONE = "user.a.latest", "user.b.latest", "user.gone.latest"
BOTH = {"c": "user/a|user/b"}


@pytest.mark.parametrize(
    ("containers", "cache", "since", "full", "expected"),
    [
        (BOTH, listing(), {}, True, ([A, B], [])),
        (BOTH, listing(A), {}, False, ([B], [])),
        (BOTH, listing(A, B), {}, True, ([A, B], [])),
        (BOTH, listing(A, B), {}, False, ([], [])),
        (BOTH, listing(A, B, GONE), {}, True, ([A, B], [])),
        (BOTH, listing(A, B, GONE), {GONE: NOW - DAY + 1}, True, ([A, B], [])),
        (BOTH, listing(A, B, GONE), {GONE: NOW - DAY}, True, ([A, B], [GONE])),
        (BOTH, listing(A, B, GONE, locks={GONE: 10.0}), {GONE: NOW - 2 * DAY}, True, ([A, B], [])),
        (BOTH, listing(A, GONE, locks={B: 10.0}), {}, True, ([A], [])),
        (BOTH, listing(A, locks={B: 7200.0}), {}, False, ([B], [])),
    ],
    ids=[
        "empty-cache",
        "quick-only-missing",
        "full-checks-all",
        "quick-nothing-missing",
        "unreferenced-starts-grace",
        "within-grace",
        "grace-over",
        "locked-never-pruned",
        "locked-not-fetched",
        "stale-lock-fetched",
    ],
)
def test_plan(
    containers: dict[str, str],
    cache: CacheListing,
    since: dict[str, float],
    full: bool,
    expected: tuple[list[str], list[str]],
) -> None:
    plan = plan_cache(wanted(containers, {}), cache, POLICY, since, now=NOW, full=full)
    fetched, pruned = [f.reference.cache_name for f in plan.fetch], [p.name for p in plan.prune]
    assert (fetched, pruned) == expected


def test_the_grace_is_remembered_from_the_first_plan_that_saw_the_file_unreferenced() -> None:
    first = plan_cache(wanted(BOTH, {}), listing(A, GONE), POLICY, {}, now=NOW, full=True)
    assert first.unreferenced_since == {GONE: NOW}
    later = plan_cache(wanted(BOTH, {}), listing(A, GONE), POLICY, first.unreferenced_since, now=NOW + DAY, full=True)
    assert [p.name for p in later.prune] == [GONE]
    named_again = plan_cache(
        wanted({"c": "user/gone"}, {}), listing(GONE), POLICY, {GONE: NOW - 9 * DAY}, now=NOW, full=True
    )
    assert named_again.prune == ()
    assert named_again.unreferenced_since == {}


def test_nothing_is_pruned_while_the_services_mods_are_unknown() -> None:
    plan = plan_cache(wanted(BOTH), listing(A, GONE), POLICY, {GONE: NOW - 9 * DAY}, now=NOW, full=True)
    assert plan.prune == ()
    assert plan.unreferenced_since == {GONE: NOW - 9 * DAY}
    assert "nothing is pruned" in plan.notes[0]


def test_prune_off_keeps_everything() -> None:
    policy = ModPolicy(prune=False, prune_grace_seconds=0)
    assert plan_cache(wanted(BOTH, {}), listing(GONE), policy, {}, now=NOW, full=True).prune == ()


def test_stale_locks_and_old_temporary_files_are_removed_fresh_ones_kept() -> None:
    cache = listing(A, locks={A: 10.0, GONE: 4000.0}, temps={".orcastra-x.1.part": 4000.0, ".orcastra-y.2.part": 5.0})
    plan = plan_cache(wanted(BOTH, {}), cache, POLICY, {}, now=NOW, full=True)
    assert [p.name for p in plan.remove_locks] == [GONE]
    assert plan.remove_temps == (".orcastra-x.1.part",)
    assert any(n.startswith(f"{A}: locked by a consumer") for n in plan.notes)


# --- the schedule --------------------------------------------------------------------------------


def test_each_node_refreshes_at_its_own_phase_on_a_fixed_grid() -> None:
    interval, jitter = 720 * 60.0, 3600.0
    nodes = [f"node{i}" for i in range(20)]
    offsets = [node_offset(n, jitter) for n in nodes]
    assert all(0 <= o < jitter for o in offsets)
    assert max(offsets) - min(offsets) > jitter / 2  # spread, not bunched
    assert node_offset("node1", jitter) == node_offset("node1", jitter)
    due = next_refresh_at(NOW, interval, jitter, "node1")
    assert NOW < due <= NOW + interval
    assert next_refresh_at(due, interval, jitter, "node1") == pytest.approx(due + interval)
    assert (due - node_offset("node1", jitter)) % interval == pytest.approx(0, abs=1e-6)
    assert next_refresh_at(NOW, interval, 0, "node1") % interval == 0


# --- manifests -----------------------------------------------------------------------------------


def desc(digest: str, arch: str = "", os_name: str = "linux", variant: str = "", **annotations: str) -> Descriptor:
    platform = Platform(arch, os_name, variant) if arch else None
    return Descriptor(digest, 10, "application/vnd.oci.image.manifest.v1+json", platform, annotations or None)


ATTESTATION = desc("sha256:att", "unknown", "unknown", **{"vnd.docker.reference.type": "attestation-manifest"})
INDEX = Manifest(
    2,
    "application/vnd.oci.image.index.v1+json",
    None,
    [
        desc("sha256:amd", "amd64"),
        desc("sha256:arm64", "arm64", variant="v8"),
        desc("sha256:arm7", "arm", variant="v7"),
        ATTESTATION,
    ],
)


@pytest.mark.parametrize(
    ("machine", "digest"),
    [("x86_64", "sha256:amd"), ("aarch64", "sha256:arm64"), ("armv7l", "sha256:arm7")],
)
def test_an_index_resolves_to_the_nodes_platform(machine: str, digest: str) -> None:
    assert pick_platform(INDEX, node_platform(machine), "m").digest == digest


def test_an_index_without_the_platform_names_what_it_offers() -> None:
    with pytest.raises(
        ModImageError, match=r"m: no image for linux/s390x \(the index offers linux/amd64, linux/arm, linux/arm64\)"
    ):
        pick_platform(INDEX, node_platform("s390x"), "m")


def test_a_single_entry_left_after_attestations_is_used_whatever_its_platform() -> None:
    index = Manifest(2, "application/vnd.oci.image.index.v1+json", None, [desc("sha256:only", "amd64"), ATTESTATION])
    assert pick_platform(index, node_platform("aarch64"), "m").digest == "sha256:only"


def test_platform_names() -> None:
    assert str(node_platform("x86_64")) == "linux/amd64"
    assert str(node_platform("aarch64")) == "linux/arm64/v8"
    assert parse_platform("linux/arm64") == NodePlatform("linux", "arm64", "v8")
    assert parse_platform("linux/arm/v6") == NodePlatform("linux", "arm", "v6")


def layer(media: str = GZIP, size: int = 10, digest: str = "sha256:" + "a" * 64) -> Descriptor:
    return Descriptor(digest, size, media)


@pytest.mark.parametrize(
    ("layers", "error"),
    [
        ([], "a mod is a one-layer image; this one has 0 layers"),
        ([layer(), layer()], "a mod is a one-layer image; this one has 2 layers"),
        ([layer("application/vnd.oci.image.layer.v1.tar+zstd")], "not a gzip tar the consumer can read"),
        ([layer(digest="sha512:" + "a" * 128)], "is not sha256"),
        ([layer(size=2000)], "its layer is 2000 bytes, over the 1000 bytes allowed"),
    ],
    ids=["no-layer", "two-layers", "zstd", "sha512", "too-big"],
)
def test_a_mod_is_one_gzip_layer_within_the_size_cap(layers: list[Descriptor], error: str) -> None:
    with pytest.raises(ModImageError, match=error):
        pick_layer(Manifest(2, "", layers, None), 1000, "m")


def test_the_one_gzip_layer_is_picked() -> None:
    assert pick_layer(Manifest(2, "", [layer()], None), 1000, "m") == layer()


# --- settings and facts --------------------------------------------------------------------------


def test_settings_defaults_and_problems(tmp_path: Path) -> None:
    config = tmp_path / "orcastra.yml"
    config.write_text("mods: {enabled: true}\n")
    mods = load_config(config, {}).mods
    assert (mods.enabled, str(mods.cache_dir), mods.refresh_interval_seconds, mods.prune_grace_seconds) == (
        True,
        "/modcache",
        43200.0,
        86400.0,
    )
    config.write_text(
        "mods:\n  registries: {'bad host': {username: u, password_file: /s},"
        " docker.io: {username: u, password_file: rel}}\n"
        "  insecure_registries: ['10.0.0.1:5000', 'x y']\n  platform: arm64\n  jitter_seconds: 90000\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config, {})
    text = str(info.value)
    for expected in (
        'mods.registries["bad host"]: expected a registry host[:port]',
        'mods.registries["docker.io"].password_file: expected an absolute path',
        "mods.insecure_registries[1]: expected a registry host[:port]",
        "mods.platform: expected os/architecture[/variant]",
        "mods.jitter_seconds: must be at most 86400 seconds",
    ):
        assert expected in text


def test_a_short_interval_with_the_default_jitter_is_valid(tmp_path: Path) -> None:
    config = tmp_path / "orcastra.yml"
    config.write_text("mods: {enabled: true}\n")
    assert load_config(config, {"MOD_MANAGER_REFRESH_INTERVAL_MINUTES": "10"}).mods.refresh_interval_seconds == 600


def test_docker_hub_credentials_are_keyed_by_its_api_host(tmp_path: Path) -> None:
    config = tmp_path / "orcastra.yml"
    config.write_text("mods: {registries: {docker.io: {username: me, password_file: /run/secrets/hub}}}\n")
    assert list(load_config(config, {}).mods.registries) == ["registry-1.docker.io"]


def test_the_controller_hands_every_services_docker_mods_to_the_agents() -> None:
    services = (
        Service("1", 1, "shop_web", mods="linuxserver/mods:swag-dashboard"),
        Service("2", 1, "shop_db"),
        Service("3", 1, "evil", mods="x" * 10_000),
    )
    facts = facts_from(Snapshot(nodes=(), services=services, tasks=()), NOW)
    back = decode_facts(encode_facts(facts))
    assert back.mods is not None
    assert back.mods["shop_web"] == "linuxserver/mods:swag-dashboard"
    assert "shop_db" not in back.mods
    assert len(back.mods["evil"]) == 4097  # cut one past the limit: the agent reports it as too long
    assert decode_facts(msgspec.json.encode({"generated_at": 1.0})).mods is None  # an earlier controller


def test_a_containers_docker_mods_comes_from_its_inspected_env() -> None:
    body = {"Id": "c1", "Config": {"Env": ["PUID=1000", "DOCKER_MODS=linuxserver/mods:swag-dashboard"]}}
    assert msgspec.json.decode(msgspec.json.encode(body), type=ContainerDetail).docker_mods == (
        "linuxserver/mods:swag-dashboard"
    )
    assert msgspec.json.decode(b'{"Id": "c2", "Config": {"Env": null}}', type=ContainerDetail).docker_mods == ""
