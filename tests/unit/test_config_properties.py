"""Property tests: hostile configurations never get past ``load_config`` as anything but a ``ConfigError``.

Generated inputs: random YAML documents shaped like the configuration (every section, every field, values of
the wrong type, huge numbers, NaN/inf, control characters, dates), YAML text built from the fragments that
break readers (tags, anchors, aliases, merge keys, flow brackets, escapes), random bytes, alias bombs, deep
nesting and environment variables. For each: ``load_config`` returns a configuration whose fingerprint can be
computed, or raises ``ConfigError`` whose text can be printed, within the deadline; ``orcastra validate``
exits 0 or 2 without a traceback.

Deterministic by default (``derandomize``: the same examples on every run, in CI too). For a longer, random
search: ``ORCASTRA_HYPOTHESIS_PROFILE=fuzz pytest tests/unit/test_config_properties.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from orcastra.cli import cli
from orcastra.config import Config, load_config
from orcastra.config.env import ENV_VARS
from orcastra.config.load import INTERNAL_ERROR
from orcastra.config.report import _strip
from orcastra.errors import ConfigError

DEADLINE_MS = 1000
_COMMON = {
    "deadline": DEADLINE_MS,
    "database": None,  # nothing written into the work tree
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
# "config-ci": the same 50-ish examples per property on every run (about 4 s in all); "fuzz": new random ones.
settings.register_profile("config-ci", derandomize=True, max_examples=50, **_COMMON)
settings.register_profile("fuzz", derandomize=False, max_examples=3000, **_COMMON)
settings.load_profile(os.environ.get("ORCASTRA_HYPOTHESIS_PROFILE", "config-ci"))


def examples(share: float) -> Callable[[Any], Any]:
    """This test's number of examples: ``share`` of the profile's (the cheap tests get more)."""
    return settings(max_examples=max(10, int(settings.default.max_examples * share)))


# --- what is checked ------------------------------------------------------------------------------------


def check_load(path: Path | None, env: dict[str, str] | None = None) -> Config | None:
    """``load_config``: a configuration that can be fingerprinted, or a printable ``ConfigError``; nothing else."""
    try:
        config = load_config(path, env or {})
    except ConfigError as e:
        check_report(e)
        return None
    config.fingerprint()  # what hot reload computes
    repr(config)
    return config


def check_report(error: ConfigError) -> None:
    text = str(error)
    assert INTERNAL_ERROR not in text, f"an exception escaped a check:\n{text}\n{error.__cause__!r}"
    assert error.problems, "a ConfigError must say what is wrong"
    for problem in error.problems:
        line = str(problem)
        # One printable line each: no raw escape sequence or newline from a key reaches a terminal, and no
        # lone surrogate reaches a log file (which would refuse it).
        assert line.isprintable(), repr(line)
        line.encode("utf-8")
        assert problem.source
        assert "Input should" not in line, f"pydantic's own wording: {line}"


# --- strategies -----------------------------------------------------------------------------------------

CONTROL = "".join(chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x2028, 0xFEFF, 0xFFFE)) + "\ud800"
hostile_text = st.text(alphabet=st.characters(codec=None) | st.sampled_from(CONTROL), max_size=40)
hostile_number = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(2**80), max_value=2**80).map(lambda i: i * 10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e-9, 1e300, -0.0, 2**63, 2**64 + 1]),
)
hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    hostile_number,
    hostile_text,
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "0x10", "", " ", "~", "yes", "off", "12:30"]),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
hostile_value = st.recursive(
    hostile_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text | st.integers(), inner, max_size=4),
    max_leaves=12,
)


def schema_fields(model: type[BaseModel]) -> dict[str, Any]:
    """``{field: its type}`` of a settings model, for generating values in every section."""
    return {name: info.annotation for name, info in model.model_fields.items()}


def sections() -> dict[str, list[str]]:
    """Every section of the configuration and its keys (nested models: their own keys too)."""
    out: dict[str, list[str]] = {}
    for name, tp in schema_fields(Config).items():
        inner = _strip(tp)
        if get_origin(inner) is dict:  # nodes, anchors: name -> settings
            inner = _strip(get_args(inner)[1])
        out[name] = list(inner.model_fields) if isinstance(inner, type) and issubclass(inner, BaseModel) else []
    return out


SECTIONS = sections()
KEY_NAMES = sorted({key for keys in SECTIONS.values() for key in keys} | set(SECTIONS))


@st.composite
def config_shaped(draw: st.DrawFn) -> dict[Any, Any]:
    """A mapping with real section names and real keys, holding hostile values (and some nonsense keys)."""
    data: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=5, unique=True)):
        keys = SECTIONS[section]
        if not keys or draw(st.integers(0, 9)) == 0:
            data[section] = draw(hostile_value)
            continue
        chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4, unique=True))
        settings_ = {key: draw(hostile_value) for key in chosen}
        if section in ("nodes", "anchors"):  # hostname or anchor -> settings
            settings_ = {draw(hostile_text | st.sampled_from(["n1", "db", "web"])): settings_}
        data[section] = settings_
    if draw(st.integers(0, 4)) == 0:
        data[draw(hostile_text)] = draw(hostile_value)
    return data


def dump(data: object) -> str:
    """YAML text of generated data; empty when it has no YAML form (the reader is what is tested)."""
    try:
        return yaml.safe_dump(data, allow_unicode=True, default_flow_style=None)
    except (yaml.YAMLError, UnicodeEncodeError):
        return ""


FRAGMENTS = [
    "&a ", "&b ", "*a", "*b", "<<: ", "<<: *a", "<<: [*a, *b]", "!!int ", "!!float ", "!!bool ", "!!timestamp ",
    "!!binary ", "!!str ", "!!null ", "!!set ", "!!omap ", "!!pairs ", "!!seq ", "!!map ", "!!python/object:os.system ",
    "!foo ", "!<tag:yaml.org,2002:int> ", "? ", "- ", ": ", "[", "]", "{", "}", ", ", "\n", "  ", "    ", "'", '"',
    "# c", "\t", "\x1b", "\x00", "\x85", "\u2028", "\ufeff", "2024-13-45", "2024-02-30", "2024-01-01T25:00:00",
    "2001-12-14t21:59:43.10-99:00", "0x" + "f" * 40, "0b101", "0o17", "017", "1:2:3:4", "190:20:30.15", ".nan", ".inf",
    "-.inf", "~", "null", "yes", "off", "1e400", "1.0e-9", "-0", "|\n  x", ">-\n  y", "%YAML 1.1\n---\n", "---\n",
    "...\n", "%TAG ! tag:x,2000:\n---\n", '"\\ud800"', '"\\x00"', '"\\U0010ffff"', "'it''s'",
    "stack: ", "nodes: ", "anchors: ", "reconcile: ", "api: ", "token: ", "labels: ", "dependents: ", "n1: ",
    "resync_interval_seconds: ", "retry_intervals: ", "file: ", "url: ", "a" * 40 + "!", "w" * 70,
]  # fmt: skip
yaml_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=30).map("".join)


@st.composite
def alias_bomb(draw: st.DrawFn) -> str:
    """Lists or merge keys of aliases of the level before: fanout**levels values once expanded."""
    levels = draw(st.integers(1, 14))
    fanout = draw(st.integers(1, 12))
    merge = draw(st.booleans())
    lines = ["l0: &l0 {a: 1, b: [x, y]}" if merge else "l0: &l0 [lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * fanout)
        lines.append(f"l{i}: &l{i} {{<<: [{refs}]}}" if merge else f"l{i}: &l{i} [{refs}]")
    if draw(st.booleans()):
        lines = ["nodes:", *(f"  {line}" for line in lines)]
    return "\n".join(lines) + "\n"


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 400))
    kind = draw(st.sampled_from(["flow-list", "flow-map", "block-map", "block-list"]))
    if kind == "flow-list":
        return "stack: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow-map":
        return "stack: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if kind == "block-map":
        return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "x\n"
    return "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "x\n"


env_values = st.one_of(
    hostile_text.map(lambda s: s.replace("\x00", "")),
    st.sampled_from(["", " ", "0", "-1", "1e-9", "1e400", "nan", "inf", "true", "maybe", "/abs/path", "rel", "LOOP"]),
    st.integers().map(str),
    st.floats().map(repr),
)
env_names = [var.name for var in ENV_VARS]


# --- the properties -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def write(workdir: Path, content: str | bytes, name: str = "orcastra.yml") -> Path:
    path = workdir / name
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return path


@examples(2.0)
@given(data=config_shaped())
def test_config_shaped_documents(workdir: Path, data: dict[Any, Any]) -> None:
    check_load(write(workdir, dump(data)))


@examples(1.0)
@given(data=hostile_value)
def test_random_documents(workdir: Path, data: object) -> None:
    check_load(write(workdir, dump(data)))


@examples(3.0)
@given(text=yaml_text)
def test_yaml_text_from_hostile_fragments(workdir: Path, text: str) -> None:
    check_load(write(workdir, text))


@examples(1.0)
@given(raw=st.binary(max_size=200))
def test_random_bytes(workdir: Path, raw: bytes) -> None:
    check_load(write(workdir, raw))


@examples(0.5)
@given(text=alias_bomb())
def test_alias_bombs(workdir: Path, text: str) -> None:
    check_load(write(workdir, text))


@examples(0.5)
@given(text=deep_nesting())
def test_deep_nesting(workdir: Path, text: str) -> None:
    check_load(write(workdir, text))


@examples(1.5)
@given(env=st.dictionaries(st.sampled_from(env_names), env_values, max_size=6))
def test_environment_values(env: dict[str, str]) -> None:
    check_load(None, env)


@examples(0.5)
@given(nodes=yaml_text, deps=yaml_text, env=st.dictionaries(st.sampled_from(env_names), env_values, max_size=3))
def test_legacy_files(workdir: Path, nodes: str, deps: str, env: dict[str, str]) -> None:
    env = {
        **env,
        "NODES_FILE": str(write(workdir, nodes, "nodes.yml")),
        "DEPENDENCIES_FILE": str(write(workdir, deps, "dependencies.yml")),
    }
    check_load(None, env)


SECRET = 918273645


@examples(1.0)
@given(
    form=st.sampled_from(
        [
            "{s}",
            "'{s}'",
            "[{s}]",
            "{{k: {s}}}",
            "!!int x{s}",
            "!!float {s}x",
            "!!timestamp {s}",
            "!!binary {s}",
            "{s}.5",
            "0x{s}",
            "{s}:30",
            "'{s}'\n  token: '{s}'",
        ]
    ),
    rest=yaml_text,
)
def test_the_token_is_never_shown(workdir: Path, form: str, rest: str) -> None:
    text = f"api:\n  token: {form.format(s=SECRET)}\n" + ("" if "token:" in rest else rest)
    try:
        load_config(write(workdir, text), {})
    except ConfigError as e:
        message = str(e)
    else:
        return
    assert str(SECRET) not in message
    assert hex(SECRET)[2:] not in message


@pytest.fixture(scope="module")
def validate(workdir: Path) -> Callable[[str], Any]:
    runner = CliRunner()
    clean = dict.fromkeys((*env_names, "ORCASTRA_CONFIG", "NODES_FILE", "DEPENDENCIES_FILE"))

    def run(text: str) -> Any:
        path = write(workdir, text, "cli.yml")
        return runner.invoke(cli, ["validate", str(path)], env=clean, prog_name="orcastra")

    return run


@examples(0.7)
@given(text=st.one_of(yaml_text, config_shaped().map(dump)))
def test_validate_exits_0_or_2_without_a_traceback(validate: Callable[[str], Any], text: str) -> None:
    result = validate(text)
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    assert all(line.isprintable() for line in result.stderr.splitlines()), result.stderr


def test_the_strategies_reach_every_section() -> None:
    # The generator follows the schema: a new section or key is fuzzed as soon as it exists.
    assert set(SECTIONS) == set(Config.model_fields)
    assert {"resync_interval_seconds", "token", "dependents", "labels"} <= set(KEY_NAMES)
