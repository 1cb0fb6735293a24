"""Legacy files are hot-reloaded like the main config: the loop's stamp covers every legacy file the loader
reads (one appearing, changing or going away), with or without a main config file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.config import load_config
from orcastra.config.legacy import legacy_file_paths
from orcastra.runtime.executor import AuditLog, DryRunExecutor
from orcastra.runtime.loop import Loop
from orcastra.runtime.observe import HealthState, Metrics
from orcastra.runtime.triggers import Trigger


def legacy_loop(config_path: Path | None, legacy_dir: Path) -> Loop:
    env = {"ORCASTRA_LEGACY_DIR": str(legacy_dir)}
    return Loop(
        config=load_config(config_path, env, required=True),
        config_path=config_path,
        env=env,
        engine=EngineAdapter(EngineSettings(host="unix:///nonexistent/docker.sock")),
        executor=DryRunExecutor(AuditLog(stream=io.StringIO())),
        controllers=[],
        metrics=Metrics(),
        health=HealthState(60.0),
        trigger=Trigger(),
    )


def touch_later(path: Path, text: str) -> None:
    """Write ``text`` with an mtime surely different from the previous one (a coarse clock could hide it)."""
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("with_main_file", [True, False], ids=["with-orcastra-yml", "legacy-files-only"])
def test_a_legacy_file_that_appears_changes_or_goes_away_reloads(tmp_path: Path, with_main_file: bool) -> None:
    main = tmp_path / "orcastra.yml" if with_main_file else None
    if main is not None:
        main.write_text("stack: shop\n", encoding="utf-8")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    loop = legacy_loop(main, legacy)
    assert loop.reload_config_if_changed() is False
    assert loop.config.anchors == {}

    touch_later(legacy / "dependencies.yml", "db: [web]\n")  # appears
    assert loop.reload_config_if_changed() is True
    assert list(loop.config.anchors["db"].dependents) == ["web"]
    assert loop.reload_config_if_changed() is False  # nothing changed since

    touch_later(legacy / "dependencies.yml", "db: [web, worker]\n")  # changes
    assert loop.reload_config_if_changed() is True
    assert list(loop.config.anchors["db"].dependents) == ["web", "worker"]

    touch_later(legacy / "dependencies.yml", "db: [web\n")  # broken: the previous configuration stays
    assert loop.reload_config_if_changed() is False
    assert list(loop.config.anchors["db"].dependents) == ["web", "worker"]

    (legacy / "dependencies.yml").unlink()  # goes away
    assert loop.reload_config_if_changed() is True
    assert loop.config.anchors == {}


def test_the_watched_paths_follow_the_variables(tmp_path: Path) -> None:
    env = {"ORCASTRA_LEGACY_DIR": str(tmp_path), "NODES_FILE": "/x/n.yml"}
    assert legacy_file_paths(env) == (Path("/x/n.yml"), tmp_path / "dependencies.yml", tmp_path / "swarm.yml")
