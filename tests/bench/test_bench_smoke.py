"""The rebalancing benchmark runs end to end in its quick mode and writes the figures the note quotes."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("scipy")
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is a top-level package of the repository, not installed
    bench = importlib.import_module("bench.rebalance")
    out = tmp_path / "rebalance.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    q, s = data["quality"], data["speed"]
    assert q["instances"] >= 3
    for key in ("meeting_targets", "proven_optimal", "peak_gap_mean", "peak_gap_max", "moves_over_max"):
        assert key in q
    assert 0 <= q["meeting_targets"] <= q["instances"]
    assert all(r["heuristic"]["moves"] <= r["budget"] for r in q["rows"])
    for key in ("plan_seconds", "core_seconds", "plan_over_snapshot_build", "plan_over_task_sort"):
        assert s[key] > 0
    assert {"python", "cpu", "cpus"} <= data["machine"].keys()
    assert "meeting targets" in capsys.readouterr().out
