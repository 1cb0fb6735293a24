"""Regression tests of hostile configuration input: every way a file, a legacy file or a variable can be wrong
ends as one ``ConfigError`` naming the source (and the line where known), never as another exception.

The cases come from a robustness review with fuzzers; test_config_properties.py generates more of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from orcastra.config import Config, load_config
from orcastra.config.load import INTERNAL_ERROR
from orcastra.errors import ConfigError

HUGE_DECIMAL = "9" * 5000  # past Python's 4300-digit limit of int(str)
# Far above the milliseconds these take, far below the minute a bomb took: a loaded CI machine still passes.
QUICK_SECONDS = 5.0
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
        (
            f"reconcile:\n  resync_interval_seconds: {HUGE_HEX}\n",
            "reconcile.resync_interval_seconds: expected a number of a sensible size, found a number with about 6021",
        ),
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
# A chain of aliases, each one level deeper than the last: 100 levels after expansion, 2 in the file.
DEEP_MAPPINGS = "a:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(1, 30))
NESTED = "the document is nested more than 20 levels deep"
ALIAS_CHAIN = "c0: &c0 [x]\n" + "".join(f"c{i}: &c{i} [*c{i - 1}]\n" for i in range(1, 100))


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
    assert time.monotonic() - started < QUICK_SECONDS
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
    assert time.monotonic() - started < QUICK_SECONDS


def test_a_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "orcastra.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(fifo, {})


def test_line_numbers_survive_aliases(tmp_path: Path) -> None:
    text = "nodes:\n  a: &n {labels: [ok]}\n  b:\n    <<: *n\n    ip: 10.0.0.300\n"
    message = problems_in(tmp_path, text)
    assert "nodes.b.ip: expected an IPv4 or IPv6 address, found '10.0.0.300' (line 5)" in message


# --- defect 3: every duration and count has a sane minimum and maximum ---------------------------------

# (section path, key, lowest accepted, highest accepted)
BOUNDS = [
    ("docker", "timeout_seconds", 1, 3600),
    ("reconcile", "resync_interval_seconds", 1, 86400),
    ("reconcile", "debounce_seconds", 0, 60),
    ("reconcile", "task_poll_interval_seconds", 0.05, 3600),
    ("reconcile", "pending_grace_seconds", 0, 86400),
    ("reconcile", "misplaced_grace_seconds", 0, 86400),
    ("leader_election", "ttl_seconds", 3, 3600),
    ("commands", "results_max_bytes", 4096, 1024**3),
    ("commands", "results_keep", 1, 100),
    ("rebalance", "sustained_seconds", 0, 86400),
    ("rebalance", "monitor_interval_seconds", 1, 86400),
    ("rebalance", "global_cooldown_seconds", 0, 604800),
    ("rebalance", "service_cooldown_seconds", 0, 604800),
    ("rebalance", "max_moves_per_cycle", 1, 100),
    ("rebalance", "max_moves_per_node", 1, 100),
    ("rebalance", "stale_after_seconds", 1, 86400),
    ("rebalance", "move_timeout_seconds", 10, 86400),
    ("rebalance.sources", "timeout_seconds", 0.1, 300),
    ("bootstrap", "loop_interval_seconds", 1, 86400),
    ("bootstrap", "remove_down_after_seconds", 60, 31536000),
    ("reboot", "drain_timeout_seconds", 1, 86400),
    ("reboot", "command_timeout_seconds", 1, 86400),
    ("reboot", "ready_timeout_seconds", 1, 86400),
    ("reboot", "poll_interval_seconds", 0.01, 3600),
    ("reboot.schedule", "check_interval_seconds", 1, 86400),
]


def setting(section: str, key: str, value: float) -> str:
    """YAML that sets ``section.key`` (dotted section) to ``value``."""
    inner: dict[str, object] = {key: value}
    if section == "reboot" and value > 0:
        inner["lock_ttl_seconds"] = 604800  # long reboot timeouts need a lock that outlives them all
    data = inner
    for part in reversed(section.split(".")):
        data = {part: data}
    return yaml.safe_dump(data)


def shown(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize(("section", "key", "low", "high"), BOUNDS, ids=[f"{s}.{k}" for s, k, _, _ in BOUNDS])
def test_bounds_of_every_duration_and_count(tmp_path: Path, section: str, key: str, low: float, high: float) -> None:
    for i, ok in enumerate((low, high)):
        path = tmp_path / f"ok{i}.yml"
        path.write_text(setting(section, key, ok), encoding="utf-8")
        load_config(path, {})
    below = low - 1 if low >= 1 else low / 10 if low > 0 else -1
    too_small = problems_in(tmp_path, setting(section, key, below))
    assert f"{section}.{key}: must be at least {shown(low)}" in too_small, too_small
    too_large = problems_in(tmp_path, setting(section, key, high * 10))
    assert f"{section}.{key}: must be at most {shown(high)}" in too_large, too_large


def test_a_nanosecond_interval_is_refused(tmp_path: Path) -> None:
    text = "reconcile:\n  resync_interval_seconds: 1e-9\n  task_poll_interval_seconds: 0.000001\n"
    message = problems_in(tmp_path, text)
    assert "reconcile.resync_interval_seconds: must be at least 1 second, found the string '1e-9' (line 2)" in message
    assert "reconcile.task_poll_interval_seconds: must be at least 0.05 seconds" in message


def test_retry_intervals_are_bounded(tmp_path: Path) -> None:
    message = problems_in(tmp_path, "anchors:\n  db:\n    dependents: [web]\n    retry_intervals: [0.001, 1e12]\n")
    assert "anchors.db.retry_intervals[0]: must be at least 1 second" in message
    assert "anchors.db.retry_intervals[1]: must be at most 86400 seconds (1 day)" in message


def test_a_huge_hexadecimal_integer_is_bounded(tmp_path: Path) -> None:
    # Before the bound it was valid, and printing the fingerprint of the configuration failed (4300 digits).
    message = problems_in(tmp_path, f"commands:\n  results_max_bytes: {HUGE_HEX}\n")
    assert "commands.results_max_bytes: must be at most 1073741824, found a number with about 6021 digits" in message


def numeric_fields() -> list[tuple[str, object]]:
    """Every int or float field in the schema, as (dotted name, pydantic FieldInfo)."""
    from pydantic import BaseModel

    from orcastra.config.report import _strip

    found: list[tuple[str, object]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            tp = _strip(info.annotation)
            for _ in range(3):  # through list[...] and dict[..., ...]
                args = getattr(tp, "__args__", None)
                if args and getattr(tp, "__origin__", None) in (list, dict):
                    tp = _strip(args[-1])
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                walk(tp, f"{prefix}{name}.")
            elif tp in (int, float):
                found.append((f"{prefix}{name}", info))

    walk(Config, "")
    return found


def constraints(annotation: object) -> list[object]:
    """Every constraint inside ``annotation``: ``Annotated`` metadata, through ``| None`` and ``list[...]``."""
    from pydantic.fields import FieldInfo

    found: list[object] = []
    for item in getattr(annotation, "__metadata__", ()):
        found.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    for arg in getattr(annotation, "__args__", ()):
        found.extend(constraints(arg))
    return found


def test_every_number_in_the_schema_has_both_bounds() -> None:
    import annotated_types

    unbounded = []
    for name, info in numeric_fields():
        metadata = [*getattr(info, "metadata", []), *constraints(getattr(info, "annotation", None))]
        has_low = any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in metadata)
        has_high = any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in metadata)
        if not (has_low and has_high):
            unbounded.append(name)
    assert unbounded == []
    assert len(numeric_fields()) >= 30


# --- defect 4: a secret is never repeated in a message -------------------------------------------------

SECRET = "12345678"


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        (SECRET, "api.token: expected a string, found a number (not shown: api.token is a secret"),
        ("2024-01-01", "api.token: expected a string, found a date (not shown: api.token is a secret"),
        ("true", "api.token: expected a string, found a boolean (not shown"),
        (f"!!int x{SECRET}", "api.token: cannot be read as an integer (it is tagged !!int)"),
        (f"[{SECRET}]", "api.token: expected a string, found a list"),
        (f"{{a: {SECRET}}}", "api.token: expected a string, found a mapping"),
    ],
    ids=["number", "date", "boolean", "bad-tag", "list", "mapping"],
)
def test_the_api_token_is_never_shown(tmp_path: Path, token: str, fragment: str) -> None:
    message = problems_in(tmp_path, f"api:\n  token: {token}\n  token_file: /run/secrets/t\n")
    assert fragment in message, message
    assert SECRET not in message


def test_the_token_is_not_in_the_schema_errors_text() -> None:
    # str(ValidationError) is what a programmer's log would show; it must not carry the token either.
    from pydantic import ValidationError

    for data in ({"api": {"token": int(SECRET)}}, {"api": {"token": SECRET, "token_file": "/x", "bogus": 1}}):
        with pytest.raises(ValidationError) as info:
            Config.model_validate(data)
        assert SECRET not in str(info.value)


def test_a_password_in_a_url_is_never_shown(tmp_path: Path) -> None:
    text = f"rebalance:\n  sources:\n    prometheus:\n      url: htps://admin:{SECRET}@prometheus:9090\n"
    message = problems_in(tmp_path, text)
    assert "rebalance.sources.prometheus.url: expected an http:// or https:// URL" in message
    assert "htps://admin:***@prometheus:9090" in message
    assert SECRET not in message


def test_the_token_file_contents_are_never_shown(tmp_path: Path) -> None:
    from orcastra.commands import load_token

    token_file = tmp_path / "token"
    token_file.write_bytes(SECRET.encode() + b"\xff\n")
    config = load_config(None, {}).api.model_copy(update={"token_file": token_file})
    with pytest.raises(ConfigError) as info:
        load_token(config)
    assert "not UTF-8" in str(info.value)
    assert SECRET not in str(info.value)


# --- found by the fuzzers and the review beyond the list ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "stack: " + "a" * 60 + "!\n",
        "anchors:\n  db:\n    dependents: [" + "w" * 50 + "-]\n",
        "leader_election:\n  lease_name: " + "x" * 10_000 + "_\n",
    ],
    ids=["stack", "dependent", "long-lease-name"],
)
def test_service_names_are_checked_in_linear_time(tmp_path: Path, text: str) -> None:
    # The old pattern (?:[-_]*[A-Za-z0-9]+)* backtracked exponentially: 30 letters and a '!' took minutes.
    started = time.monotonic()
    message = problems_in(tmp_path, text)
    assert time.monotonic() - started < QUICK_SECONDS
    assert "not a valid Swarm service or stack name" in message or "longer than Swarm's limit" in message


def test_keys_with_control_characters_are_shown_escaped(tmp_path: Path) -> None:
    # A key may hold an escape sequence (it would drive the terminal) or a newline (it would fake a problem).
    message = problems_in(tmp_path, 'nodes:\n  "n1\\x1b[2J\\nfake": {labels: {"\\ud800": x}}\n"\\x07": 1\n')
    for line in message.splitlines():
        assert line.isprintable(), repr(line)
    assert 'nodes["n1\\x1b[2J\\nfake"].labels: a key contains an escaped surrogate' in message
    assert "(line 2)" in message


def test_environment_values_are_shown_escaped(tmp_path: Path) -> None:
    message = problems_in(tmp_path, "", {"EVENT_MODE": "false\r", "POLLING_MODE": "off\x0b"})
    for line in message.splitlines():
        assert line.isprintable(), repr(line)
    assert "EVENT_MODE=false\\r, POLLING_MODE=off\\x0b" in message


def test_a_value_that_should_be_a_list_is_shown_escaped(tmp_path: Path) -> None:
    # Found by the property tests: an unassigned code point went into "write [...] for a one-item list" raw.
    message = problems_in(tmp_path, 'anchors:\n  db:\n    dependents: "\\U0001b2fc\\x1b"\n')
    assert "(write [\\U0001b2fc\\x1b] for a one-item list)" in message
    for line in message.splitlines():
        assert line.isprintable(), repr(line)


def test_a_number_too_large_for_a_float_in_a_cross_check(tmp_path: Path) -> None:
    # Found by the property tests: the target/high check converted 10**309 to a float and raised OverflowError.
    message = problems_in(tmp_path, f"rebalance:\n  high_percent: {10**309}\n")
    assert INTERNAL_ERROR not in message
    assert (
        "rebalance.high_percent: expected a number of a sensible size, found a number with about 310 digits" in message
    )
