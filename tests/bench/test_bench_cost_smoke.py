"""The reconcile-cost and footprint benchmarks run end to end at tiny size against the fake Engine."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is a top-level package of the repository, not installed
    return importlib.import_module(f"bench.{name}")


def test_reconcile_cost_quick_writes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench("reconcile_cost", monkeypatch)
    out = tmp_path / "cost.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["services"] for r in rows] == list(bench.QUICK_SIZES)
    for r in rows:
        for key in ("calls", "bytes", "cpu_s", "wall_s", "cpu_over_loads", "wall_over_ping"):
            assert r[key] > 0, key
        # 3 running tasks per service; the one shutdown task per slot is read only for anchor-group services
        assert r["services"] * 3 < r["tasks"] < r["services"] * 3 * 2
        assert r["actions"] == 0  # every generated group is colocated: nothing to do
    assert len({r["calls"] for r in rows}) == 1  # calls per cycle do not grow with the cluster
    assert rows[1]["bytes"] > rows[0]["bytes"]
    assert data["verdict"]["calls_constant"] is True
    assert {"cpu", "cpus", "memory_bytes", "python"} <= data["machine"].keys()
    assert "calls per cycle: [4]" in capsys.readouterr().out


def test_footprint_fake_writes_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench("footprint", monkeypatch)
    out = tmp_path / "footprint.json"
    assert bench.main(["--fake", "--seconds", "3", "--interval", "1", "--services", "40", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["engine"] == "fake"
    assert len(data["samples"]) >= 3
    assert 10 * 2**20 < data["rss_max_bytes"] < 1024 * 2**20  # a Python process, measured from /proc
    assert data["cpu_percent_of_one_core"] >= 0
    assert data["engine_requests"]["/tasks"]["requests"] >= 1  # the daemon's task poll reached the fake Engine
