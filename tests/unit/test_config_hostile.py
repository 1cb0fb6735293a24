"""Regression tests of hostile configuration input: every way a file, a legacy file or a variable can be wrong
ends as one ``ConfigError`` naming the source (and the line where known), never as another exception.

The cases come from a robustness review with fuzzers; test_config_properties.py generates more of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orcastra.config import Config, load_config
from orcastra.config.load import INTERNAL_ERROR
from orcastra.errors import ConfigError

HUGE_DECIMAL = "9" * 5000  # past Python's 4300-digit limit of int(str)
HUGE_HEX = "0x" + "f" * 5000  # hexadecimal has no such limit, but printing it in decimal has


def problems_in(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "orcastra.yml"
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return str(info.value)


# --- defect 1: ordinary mistakes in a file are problems, not crashes ----------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("# a comment \x1b[31m\nstack: shop\n", ["control character U+001B", "line 1, column 13"]),
        ("stack: shop\nnodes:\n  n1: {}\x00\n", ["control character U+0000", "line 3"]),
        ("stack: 2024-13-45\n", ["stack: cannot be read as a date", "quote it", "line 1"]),
        ("stack: 2024-02-30\n", ["stack: cannot be read as a date", "day is out of range"]),
        ("stack: 2024-01-01T00:00:00+99:00\n", ["stack: cannot be read as a date"]),
        ("reconcile:\n  resync_interval_seconds: !!int abc\n", ["seconds: cannot be read as an integer"]),
        ("run:\n  dry_run: !!bool maybe\n", ["run.dry_run: cannot be read as a boolean", "tagged !!bool", "line 2"]),
        ("stack: !!timestamp foo\n", ["stack: cannot be read as a date", "line 1"]),
        ("stack: !!float abc\n", ["stack: cannot be read as a number"]),
        ("stack: !!binary 'abc'\n", ["stack: YAML error at line 1, column 8: failed to decode base64 data"]),
        (f"reconcile:\n  resync_interval_seconds: {HUGE_DECIMAL}\n", ["cannot be read as an integer", "line 2"]),
        ("nodes:\n  n1:\n    labels: {built: 2024-13-45}\n", ["nodes.n1.labels.built: cannot be read as a date"]),
        ("nodes:\n  2024-13-45: {}\n", ["nodes: a key cannot be read as a date", "line 2"]),
    ],
    ids=[
        "esc-in-comment",
        "nul",
        "bad-month",
        "bad-day",
        "bad-offset",
        "int-tag",
        "bool-tag",
        "timestamp-tag",
        "float-tag",
        "binary-tag",
        "huge-integer",
        "bad-date-in-labels",
        "bad-date-as-key",
    ],
)
def test_unreadable_values_are_config_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    message = problems_in(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, message


def test_an_unreadable_value_is_reported_once(tmp_path: Path) -> None:
    # The schema must not add "expected a string, found ..." for the value that could not be read.
    message = problems_in(tmp_path, "stack: 2024-13-45\nreconcile: {resync_interval_seconds: !!int x}\n")
    assert "(2 problems)" in message, message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"reconcile:\n  resync_interval_seconds: {HUGE_HEX}\n", "reconcile.resync_interval_seconds:"),
        ("stack: " + ":".join(["59"] * 3000) + "\n", "stack: expected a string, found a number with"),
    ],
    ids=["hex-integer-seconds", "sexagesimal"],
)
def test_huge_numbers_are_described_not_printed(tmp_path: Path, text: str, fragment: str) -> None:
    message = problems_in(tmp_path, text)
    assert fragment in message, message
    assert len(message) < 1000


@pytest.mark.parametrize(
    ("var", "text", "fragments"),
    [
        ("NODES_FILE", "n1:\n  labels: [a]\x1b\n", ["nodes.yml: contains the control character U+001B", "line 2"]),
        ("NODES_FILE", "n1:\n  labels: {built: 2024-13-45}\n", ["nodes.yml: n1.labels.built: cannot be read"]),
        ("DEPENDENCIES_FILE", "db:\n  services: [web]\n  retry_intervals: [!!int x]\n", ["retry_intervals[0]"]),
    ],
    ids=["legacy-control-character", "legacy-bad-date", "legacy-bad-tag"],
)
def test_legacy_files_report_the_same_way(tmp_path: Path, var: str, text: str, fragments: list[str]) -> None:
    name = "nodes.yml" if var == "NODES_FILE" else "dependencies.yml"
    legacy = tmp_path / name
    legacy.write_text(text, encoding="utf-8")
    message = problems_in(tmp_path, "", {var: str(legacy)})
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"NODES_FILE": "/tmp/a\x00b.yml"}, "NODES_FILE"),
        ({"COMMAND_FILE": "/srv/cmd\x00.yml"}, "environment: COMMAND_FILE: the path contains a NUL character"),
        ({"LOG_TO_FILE": "/var/log/o\x00.log"}, "environment: LOG_TO_FILE: the path contains a NUL character"),
    ],
    ids=["nul-in-legacy-path", "nul-in-command-file", "nul-in-log-file"],
)
def test_environment_values_that_no_file_could_hold(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    assert fragment in problems_in(tmp_path, "", env)


def test_a_nul_in_the_config_path_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NUL character"):
        load_config(tmp_path / "a\x00b.yml", {})


def test_a_nul_in_a_path_setting_is_a_problem(tmp_path: Path) -> None:
    message = problems_in(tmp_path, 'audit:\n  path: "/var/log/a\\0b"\n')
    assert "audit.path: the path contains a NUL character" in message


def test_a_bug_of_ours_is_still_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon keeps its configuration on a ConfigError; any other exception from a reload would stop it.
    def broken(data: object) -> Config:
        raise TypeError("a validator that forgot a case")

    monkeypatch.setattr(Config, "model_validate", broken)
    message = problems_in(tmp_path, "stack: shop\n")
    assert INTERNAL_ERROR in message
    assert "TypeError" in message


# --- defect 2: bounded work for any file -------------------------------------------------------------

# Ten levels of ten aliases: 10**9 values once expanded, 500 bytes on disk. PyYAML's safe_load shares the
# repeated objects; a reader that keeps a line for every value must count before it builds.
BILLION_LAUGHS = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 10) + "]\n" for i in range(10))
# Merge keys double the merged entries at every level: 2**30 entries after 30 lines.
MERGE_BOMB = "m0: &m0 {a: 1, b: 2}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n" for i in range(1, 30))
# A chain of aliases, each one level deeper than the last: 3000 levels after expansion, 2 in the file.
DEEP_MAPPINGS = "a:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(1, 30))
NESTED = "the document is nested more than 20 levels deep"
ALIAS_CHAIN = "c0: &c0 [x]\n" + "".join(f"c{i}: &c{i} [*c{i - 1}]\n" for i in range(1, 3000))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (BILLION_LAUGHS, ["expands to more than 250,000 values", "aliases", "limit with what starts at line 5"]),
        (MERGE_BOMB, ["expands to more than 250,000 values", "merge keys", "limit with what starts at line 16"]),
        ("stack: " + "[" * 5000 + "]" * 5000 + "\n", ["YAML error at line 1, column 27: " + NESTED]),
        (DEEP_MAPPINGS, ["YAML error at line 20, column 41: " + NESTED]),
        (ALIAS_CHAIN, ["nested more than 20 levels deep once aliases are expanded (line 19)"]),
    ],
    ids=["billion-laughs", "merge-bomb", "deep-flow-lists", "deep-mappings", "alias-chain"],
)
def test_expansion_and_nesting_are_bounded(tmp_path: Path, text: str, fragments: list[str]) -> None:
    started = time.monotonic()
    message = problems_in(tmp_path, text)
    assert time.monotonic() - started < 1.0
    for fragment in fragments:
        assert fragment in message, message


def test_aliases_and_merges_within_the_bounds_still_work(tmp_path: Path) -> None:
    defaults = "defaults: &d {labels: [ssd, zone-a], role: worker}\n"
    text = "nodes:\n" + "".join(f"  n{i}:\n    <<: *d\n" for i in range(200))
    path = tmp_path / "orcastra.yml"
    # `defaults` is not a setting: keep the anchor inside a node that exists.
    path.write_text(text.replace("  n0:\n    <<: *d\n", "  n0: " + defaults.split(": ", 1)[1]), encoding="utf-8")
    config = load_config(path, {})
    assert len(config.nodes) == 200
    assert config.nodes["n199"].labels == {"ssd": "true", "zone-a": "true"}


def test_a_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    message = problems_in(tmp_path, "# padding\n" * 110_000)
    assert "is larger than 1 MiB" in message


def test_an_endless_device_is_refused() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match="is larger than 1 MiB"):
        load_config(Path("/dev/zero"), {})
    assert time.monotonic() - started < 1.0


def test_a_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "orcastra.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(fifo, {})


def test_line_numbers_survive_aliases(tmp_path: Path) -> None:
    text = "nodes:\n  a: &n {labels: [ok]}\n  b:\n    <<: *n\n    ip: 10.0.0.300\n"
    message = problems_in(tmp_path, text)
    assert "nodes.b.ip: expected an IPv4 or IPv6 address, found '10.0.0.300' (line 5)" in message
