"""The earlier tool's split files (NODES_FILE, DEPENDENCIES_FILE) merged into the configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orcastra.config import Config, load_config, load_config_report
from orcastra.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, main: str, nodes: str | None = None, deps: str | None = None) -> Config:
    env: dict[str, str] = {}
    if nodes is not None:
        env["NODES_FILE"] = str(write(tmp_path, "nodes.yml", nodes))
    if deps is not None:
        env["DEPENDENCIES_FILE"] = str(write(tmp_path, "dependencies.yml", deps))
    return load_config(write(tmp_path, "orcastra.yml", main), env)


def problems(tmp_path: Path, main: str, nodes: str | None = None, deps: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, main, nodes, deps)
    return str(info.value)


@pytest.mark.parametrize(
    ("main", "nodes", "deps", "check"),
    [
        (
            "",
            "node1:\n  ip: 10.0.0.1\n  labels: [ssd, zone-a]\n",
            None,
            lambda c: (
                c.nodes["node1"].labels == {"ssd": "true", "zone-a": "true"} and c.nodes["node1"].ip == "10.0.0.1"
            ),
        ),
        (
            "",
            "node1:\n  labels: {zone: a, rack: 4}\n",
            None,
            lambda c: c.nodes["node1"].labels == {"zone": "a", "rack": "4"},
        ),
        (
            "nodes:\n  node1: {labels: [a]}\n",
            "node2: {labels: [b]}\n",
            None,
            lambda c: set(c.nodes) == {"node1", "node2"},
        ),
        (
            "stack: shop\n",
            None,
            "db:\n  stack: infra\n  services: [web, worker]\n  restart_dependents: false\n  retry_intervals: [1, 5]\n",
            lambda c: (
                c.anchors["db"].dependents == ["web", "worker"]
                and c.anchors["db"].stack == "infra"
                and c.anchors["db"].restart_dependents is False
                and c.anchors["db"].retry_intervals == [1, 5]
            ),
        ),
        ("", None, "db: [web, worker]\n", lambda c: c.anchors["db"].dependents == ["web", "worker"]),
        (
            "anchors:\n  db: {dependents: [web]}\n",
            None,
            "queue: [consumer]\n",
            lambda c: set(c.anchors) == {"db", "queue"},
        ),
        ("", "", "", lambda c: c.nodes == {} and c.anchors == {}),
    ],
    ids=["nodes-list-labels", "nodes-map-labels", "nodes-merge", "deps-map", "deps-list", "deps-merge", "empty"],
)
def test_legacy_files_merge(
    tmp_path: Path, main: str, nodes: str | None, deps: str | None, check: Callable[[Config], bool]
) -> None:
    assert check(load(tmp_path, main, nodes, deps))


def test_node_in_both_places_main_wins_and_names_both(tmp_path: Path) -> None:
    nodes = write(tmp_path, "nodes.yml", "node1:\n  ip: 10.0.0.1\n")
    report = load_config_report(write(tmp_path, "orcastra.yml", "nodes:\n  node1: {}\n"), {"NODES_FILE": str(nodes)})
    assert report.config.nodes["node1"].ip is None
    [note] = report.notes
    assert note.startswith(f"{nodes}: node1 (line 1): node 'node1' is also defined in ")
    assert f"{tmp_path / 'orcastra.yml'} (nodes.node1, line 2); the main configuration wins" in note


def test_anchor_in_both_places_main_wins_and_names_both(tmp_path: Path) -> None:
    deps = write(tmp_path, "dependencies.yml", "db: [b]\n")
    main = write(tmp_path, "orcastra.yml", "anchors:\n  db: {dependents: [a]}\n")
    report = load_config_report(main, {"DEPENDENCIES_FILE": str(deps)})
    assert report.config.anchors["db"].dependents == ["a"]
    [note] = report.notes
    assert "anchor 'db' is also defined in" in note
    assert "orcastra.yml (anchors.db, line 2)" in note


@pytest.mark.parametrize(
    ("nodes", "deps", "fragments"),
    [
        (
            "node1:\n  labels: [ssd, 'bad key']\n",
            None,
            ["nodes.yml: node1.labels[\"bad key\"]: label key 'bad key' contains whitespace", "(line 2)"],
        ),
        ("node1:\n  ipp: 10.0.0.1\n", None, ["nodes.yml: node1.ipp: unknown key 'ipp'", "did you mean 'ip'?"]),
        ("- node1\n", None, ["nodes.yml: the top level must be a mapping of hostname to settings, found a list"]),
        (None, "db: [web, db]\n", ["dependencies.yml: db[1]: anchor 'db' cannot be its own dependent"]),
        (None, "db:\n  services: [web]\n  retry_intervals: [5, -1]\n", ["dependencies.yml: db.retry_intervals[1]"]),
        (
            None,
            "db: [web]\ncache: [web]\n",
            ["dependencies.yml: cache[0]: service 'web' is already a dependent of anchor 'db'"],
        ),
        (None, "db: [web\n", ["dependencies.yml: YAML syntax error at line 2"]),
        (None, "db: web\n", ["dependencies.yml: db: expected a mapping (key: value), found the string 'web'"]),
    ],
    ids=[
        "bad-label",
        "unknown-key",
        "not-a-mapping",
        "self-dependent",
        "negative-retry",
        "two-anchors",
        "syntax",
        "scalar",
    ],
)
def test_problems_name_the_legacy_file(
    tmp_path: Path, nodes: str | None, deps: str | None, fragments: list[str]
) -> None:
    message = problems(tmp_path, "", nodes, deps)
    for fragment in fragments:
        assert fragment in message


def test_legacy_and_main_problems_reported_together(tmp_path: Path) -> None:
    message = problems(tmp_path, "reconcile: {resync_interval_seconds: 0}\n", nodes="n1: {role: boss}\n")
    assert "2 problems" in message
    assert "orcastra.yml: reconcile.resync_interval_seconds: must be at least 1 second" in message
    assert "nodes.yml: n1.role: expected 'manager' or 'worker'" in message


@pytest.mark.parametrize("var", ["NODES_FILE", "DEPENDENCIES_FILE"])
def test_missing_legacy_file_is_a_problem(tmp_path: Path, var: str) -> None:
    missing = tmp_path / "gone.yml"
    with pytest.raises(ConfigError) as info:
        load_config(None, {var: str(missing)})
    assert str(info.value).endswith(f"{missing}: file not found (named by {var})")


def test_malformed_main_section_is_not_hidden_by_a_legacy_file(tmp_path: Path) -> None:
    message = problems(tmp_path, "nodes: [a]\n", nodes="n1: {}\n")
    assert "orcastra.yml: nodes: expected a mapping (key: value), found a list" in message
