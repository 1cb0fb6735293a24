"""The agent's hygiene runtime with a stand-in for its node's Engine: the executors (paced removals, a failure
skips what depended on it, a dry run removes nothing), the schedule in its time zone, the Swarm facts' age, the
last-use map, the routes' token, and the settings' checks. The planners have their own tests (test_gc_plan,
test_autoheal); the lab test (test_stack_lab) runs all of it against a real Swarm."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
import zoneinfo
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orcastra.adapters.http import Request
from orcastra.adapters.node_engine import parse_engine_time
from orcastra.config import load_config
from orcastra.errors import ConfigError, EngineConflictError, EngineNotFoundError, EngineUnreachableError
from orcastra.features.agents.facts import SwarmFacts, encode_facts
from orcastra.features.hygiene.gc_types import GcPlan, ImageInfo, Removal
from orcastra.features.hygiene.thresholds import parse_threshold
from orcastra.runtime.agent_hygiene import NodeHygiene
from orcastra.runtime.node_gc import (
    FACTS_MAX_AGE_SECONDS,
    DryRunGcExecutor,
    EngineGcExecutor,
    FactsBox,
    GcRunner,
    LastUse,
    next_scheduled,
)


class FakeNode:
    """Records removals; raises what ``fail`` maps an ID to."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.fail = fail or {}
        self.removed: list[tuple[str, str]] = []

    def _do(self, kind: str, ident: str) -> None:
        if ident in self.fail:
            raise self.fail[ident]
        self.removed.append((kind, ident))

    def remove_container(self, ident: str) -> None:
        self._do("container", ident)

    def remove_image(self, ident: str, force: bool) -> None:
        self._do("image", ident)

    def remove_volume(self, name: str) -> None:
        self._do("volume", name)

    def containers(self) -> list[Any]:
        raise EngineUnreachableError("unix:///var/run/docker.sock: ConnectionRefusedError")


def _plan(*removals: Removal) -> GcPlan:
    return GcPlan(removals=removals, kept=(), notes=(), freed_bytes=sum(r.bytes for r in removals))


def test_a_failed_removal_skips_what_depended_on_it_and_the_rest_goes_on() -> None:
    plan = _plan(
        Removal("container", "c1", "old", 0, "exited"),
        Removal("image", "i1", "app:1", 100, "unused", after=("c1",)),
        Removal("image", "i2", "app:2", 50, "unused"),
        Removal("volume", "gone", "v", 0, "orphan"),
    )
    node = FakeNode({"c1": EngineConflictError("409: in use"), "gone": EngineNotFoundError("404")})
    done, failed = EngineGcExecutor(node, 0.0, threading.Event()).apply(plan)  # type: ignore[arg-type]
    assert node.removed == [("image", "i2")]
    assert [i.name for i in done] == ["app:2"]
    assert [(i.name, i.error[:8]) for i in failed] == [("old", "409: in "), ("app:1", "skipped:")]


def test_a_dry_run_removes_nothing_and_lists_everything() -> None:
    plan = _plan(Removal("image", "i1", "app:1", 100, "unused"), Removal("volume", "v", "v", 0, "orphan"))
    done, failed = DryRunGcExecutor().apply(plan)
    assert ([i.name for i in done], failed) == (["app:1", "v"], [])


def test_a_run_reports_an_unreachable_engine_and_never_raises() -> None:
    settings = json.loads(_hygiene_json())["gc"]
    runner = GcRunner(FakeNode(), settings, FactsBox(), LastUse(), threading.Event())  # type: ignore[arg-type]
    result = runner.run_now("command")
    assert "ConnectionRefused" in result.error
    assert runner.last == result


def test_the_schedule_follows_its_time_zone() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    now = dt.datetime(2026, 7, 1, 1, 30, tzinfo=paris).timestamp()
    fires = next_scheduled("0 4 * * *", "Europe/Paris", now)
    assert fires is not None
    assert dt.datetime.fromtimestamp(fires, paris) == dt.datetime(2026, 7, 1, 4, 0, tzinfo=paris)
    assert next_scheduled(None, None, now) is None


def test_swarm_facts_are_trusted_only_while_fresh() -> None:
    box = FactsBox()
    assert box.fresh(frozenset(), 100.0) is None
    box.put(("reg/app:1",), ("data",), 100.0)
    facts = box.fresh(frozenset({"t1"}), 100.0 + FACTS_MAX_AGE_SECONDS - 1)
    assert facts is not None
    assert (facts.image_refs, facts.task_ids, facts.volume_names) == ({"reg/app:1"}, {"t1"}, {"data"})
    assert box.fresh(frozenset(), 100.0 + FACTS_MAX_AGE_SECONDS + 1) is None


def test_last_use_maps_the_references_events_name_to_image_ids() -> None:
    use = LastUse()
    use.saw("reg/app:1", 10.0)
    use.saw("sha256:bbb", 20.0)
    use.saw("reg/app:1", 5.0)  # older: ignored
    images = (
        ImageInfo("sha256:aaa", ("reg/app:1",), (), 0.0, 1),
        ImageInfo("sha256:bbb", (), (), 0.0, 1),
        ImageInfo("sha256:ccc", ("other:1",), (), 0.0, 1),
    )
    assert use.by_image_id(images) == {"sha256:aaa": 10.0, "sha256:bbb": 20.0}


def test_engine_times_with_nanoseconds_and_the_zero_time() -> None:
    assert parse_engine_time("2026-12-02T04:44:41.123456789Z") == pytest.approx(
        dt.datetime(2026, 12, 2, 4, 44, 41, 123456, tzinfo=dt.UTC).timestamp()
    )
    assert parse_engine_time("0001-01-01T00:00:00Z") is None
    assert parse_engine_time("garbage") is None


def load_config_text(text: str, env: dict[str, str] | None = None) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orcastra.yml"
        path.write_text(text)
        return load_config(path, env or {}, legacy_dir=Path(tmp) / "no-legacy")


def _hygiene_json(extra: str = "") -> str:
    config = load_config_text("hygiene:\n  gc:\n    schedule: '0 4 * * *'\n" + extra)
    return json.dumps(config.hygiene.model_dump(mode="json"))


def _request(method: str, path: str, body: bytes, token: str = "") -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request(method=method, path=path, headers=headers, body=body)


def test_only_a_controller_with_the_token_hands_over_facts() -> None:
    hygiene = NodeHygiene(SimpleNamespace(), json.loads(_hygiene_json()), "s3cret", threading.Event())  # type: ignore[arg-type]
    routes = hygiene.routes(lambda request: SimpleNamespace(status=200))  # type: ignore[arg-type,return-value]
    take = routes[("POST", "/v1/report")]
    body = encode_facts(SwarmFacts(generated_at=1.0, image_refs=("reg/app:1",)))
    assert take(_request("POST", "/v1/report", body)).status == 401
    assert take(_request("POST", "/v1/report", body, "wrong")).status == 401
    assert hygiene.facts.age(2.0) is None
    assert take(_request("POST", "/v1/report", b"{not json", "s3cret")).status == 400
    assert take(_request("POST", "/v1/report", body, "s3cret")).status == 200
    assert hygiene.facts.age(1e12) is not None
    run_gc = routes[("POST", "/v1/gc")]
    assert run_gc(_request("POST", "/v1/gc", b'{"dry_run": true}')).status == 401
    assert run_gc(_request("POST", "/v1/gc", b'{"dry_run": "yes"}', "s3cret")).status == 400


def test_thresholds_read_as_a_share_or_a_size() -> None:
    assert parse_threshold("85%") == (85.0, None)
    assert parse_threshold("20GiB") == (None, 20 * 2**30)
    assert parse_threshold(" 500 MB ") == (None, 500 * 10**6)
    for bad in ("150%", "0%", "12 parsecs", "", "-3GB"):
        with pytest.raises(ValueError, match=r"expected|between|unknown|positive"):
            parse_threshold(bad)


def test_hygiene_settings_problems_are_reported_together() -> None:
    text = """\
hygiene:
  gc:
    schedule: "0 */4 * *"
    timezone: Mars/Olympus
    disk_threshold: "85%"
  autoheal:
    webhook_url: "ftp://example"
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    message = str(caught.value)
    for fragment in ("hygiene.gc.schedule", "not a cron expression", "unknown time zone", "hygiene.gc.disk_path"):
        assert fragment in message, message
    assert "hygiene.autoheal.webhook_url" in message


def test_gc_cron_from_the_environment_is_checked_and_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("{}\n", env={"GC_CRON": "every four hours"})
    assert "GC_CRON" in str(caught.value)


def test_last_use_survives_a_restart_in_its_state_file(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "gc-last-use.json")
    first = LastUse()
    first.saw("reg/app:1", 10.0)
    first.save(path)
    second = LastUse()
    second.saw("reg/app:2", 30.0)
    second.load(path)
    images = (ImageInfo("sha256:a", ("reg/app:1",), (), 0.0, 1), ImageInfo("sha256:b", ("reg/app:2",), (), 0.0, 1))
    assert second.by_image_id(images) == {"sha256:a": 10.0, "sha256:b": 30.0}
    Path(path).write_text("[not, a, map")
    LastUse().load(path)  # a damaged file is reported, not fatal
