"""SIGHUP to a running ``orcastra run`` (against the in-process fake Engine; no lab needed): the configuration is
read again and a bootstrap cycle runs, as the earlier Orcastra did, and the daemon keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from orcastra_lab.fake_engine import Cluster, FakeEngine

from .util import free_port, wait_for


def test_sighup_reloads_and_bootstraps_and_never_stops_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    with FakeEngine(Cluster(nodes=3, services=2, groups=0)) as fake:
        config = tmp_path / "orcastra.yml"
        config.write_text(
            f"stack: bench\nleader_election: {{enabled: false}}\napi: {{listen: 127.0.0.1:{port}}}\n"
            f"commands: {{file: {tmp_path / 'commands.yml'}}}\n",
            encoding="utf-8",
        )
        log = tmp_path / "run.log"
        env = {k: v for k, v in os.environ.items() if k not in ("ORCASTRA_CONFIG", "NODES_FILE", "DEPENDENCIES_FILE")}
        env["DOCKER_HOST"] = fake.docker_host
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orcastra", "--config", str(config), "run"], env=env, stdout=out, stderr=out
            )
        try:
            wait_for("the first cycle", lambda: "cycle 1" in log.read_text() or "HTTP listener" in log.read_text())
            proc.send_signal(signal.SIGHUP)
            wait_for("the SIGHUP bootstrap", lambda: "bootstrap: nothing to do" in log.read_text())
            assert "SIGHUP: reloading the configuration" in log.read_text()
            assert proc.poll() is None, log.read_text()
        finally:
            proc.terminate()
            proc.wait(10)
