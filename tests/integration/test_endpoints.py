"""Orcastra reaches the lab's manager through each kind of Engine endpoint it supports, over real
programs: tcp:// with mutual TLS (socat terminating TLS in front of node1's socket, certificates made
by openssl), configured in the file or through DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, and
ssh:// (a real sshd whose sessions run ``docker system dial-stdio`` against node1)."""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from orcastra.adapters.engine import EngineAdapter, EngineSettings
from orcastra.adapters.engine.connect import engine_settings
from orcastra.config import load_config
from orcastra.domain.snapshot import Node
from orcastra.errors import EngineUnreachableError
from orcastra_lab import LabEnv

from .endpoint_fixtures import (
    KeyPair,
    SshEndpoint,
    child_processes,
    docker_cert_path,
    issue,
    make_ca,
    ssh_endpoint,
    tls_terminator,
)
from .util import run_orcastra

pytestmark = pytest.mark.lab

NODE_NAMES = ["node1", "node2", "node3"]
# Where DOCKER_HOST points when a test must prove the file's docker.host won: nothing answers there.
UNUSED_SOCKET = "unix:///nonexistent/orcastra-endpoint-test.sock"
# requests lets these replace the CA a session was given (see the xfail test below); many CI and distro
# images set them, so the other TLS tests run without them and one test keeps them.
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class TlsLab:
    """node1's Engine behind mutual TLS at ``host``, with a trusted and an untrusted CA to hand out."""

    host: str
    ca_cert: Path  # signed the server and ``client``
    client: KeyPair
    other_ca_cert: Path  # a self-signed CA that signed nothing the server uses
    other_client: KeyPair  # signed by the other CA: the server must refuse it


def engine_socket(lab_env: LabEnv) -> Path:
    assert lab_env.docker_host.startswith("unix://"), lab_env.docker_host
    return Path(lab_env.docker_host.removeprefix("unix://"))


def hostnames(nodes: Iterable[Node]) -> list[str]:
    return sorted(n.hostname for n in nodes)


@pytest.fixture(scope="module")
def tls_lab(lab_env: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "good")
    other_ca = make_ca(pki, "other")
    server = issue(ca, pki, "server", server=True)
    client = issue(ca, pki, "client", server=False)
    other_client = issue(other_ca, pki, "other-client", server=False)
    with tls_terminator(server, ca.cert, engine_socket(lab_env), pki) as port:
        yield TlsLab(
            host=f"tcp://127.0.0.1:{port}",
            ca_cert=ca.cert,
            client=client,
            other_ca_cert=other_ca.cert,
            other_client=other_client,
        )


@pytest.fixture
def no_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither this process nor the CLI it starts (util.run_orcastra copies os.environ) sees them."""
    for name in CA_BUNDLE_VARS:
        monkeypatch.delenv(name, raising=False)


def write_config(path: Path, host: str, ca_cert: Path, client: KeyPair) -> Path:
    # JSON is YAML: no quoting surprises with paths.
    document = {
        "docker": {
            "host": host,
            "tls": {"ca_cert": str(ca_cert), "client_cert": str(client.cert), "client_key": str(client.key)},
        }
    }
    path.write_text(json.dumps(document, indent=2))
    return path


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_tls_from_the_config_file_takes_a_snapshot(tls_lab: TlsLab, tmp_path: Path) -> None:
    path = write_config(tmp_path / "orcastra.yml", tls_lab.host, tls_lab.ca_cert, tls_lab.client)
    # DOCKER_HOST points nowhere: the snapshot can only succeed if the file's docker.host and tls won.
    env = {"DOCKER_HOST": UNUSED_SOCKET}
    settings = engine_settings(load_config(path, env), env)
    assert settings.host == tls_lab.host
    assert settings.tls

    with EngineAdapter(settings) as engine:
        snapshot = engine.snapshot()
        assert engine.reads_through_pool  # the lean GET path, with the endpoint's CA and client certificate
    assert hostnames(snapshot.nodes) == NODE_NAMES


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_tls_from_the_environment_status_lists_the_nodes(tls_lab: TlsLab, tmp_path: Path) -> None:
    cert_path = docker_cert_path(tmp_path / "certs", tls_lab.ca_cert, tls_lab.client)
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}

    done = run_orcastra(["status", "--json"], tls_lab.host, env)

    assert done.returncode == 0, done.stderr
    assert sorted(n["hostname"] for n in json.loads(done.stdout)["nodes"]) == NODE_NAMES


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_tls_with_a_wrong_ca_fails_naming_the_endpoint(tls_lab: TlsLab, tmp_path: Path) -> None:
    cert_path = docker_cert_path(tmp_path / "certs", tls_lab.other_ca_cert, tls_lab.client)
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}

    done = run_orcastra(["status"], tls_lab.host, env)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"cannot reach the Docker Engine at {tls_lab.host}" in done.stderr
    assert "certificate verify failed" in done.stderr.lower()


@pytest.mark.usefixtures("no_ca_bundle_env")
def test_tls_client_certificate_from_an_unknown_ca_is_refused(tls_lab: TlsLab) -> None:
    # The positive tests prove mutual TLS only if the terminator really checks the client's certificate.
    settings = EngineSettings(
        host=tls_lab.host,
        tls=True,
        tls_ca_cert=str(tls_lab.ca_cert),
        tls_client_cert=str(tls_lab.other_client.cert),
        tls_client_key=str(tls_lab.other_client.key),
        timeout_seconds=10,
    )
    with EngineAdapter(settings) as engine, pytest.raises(EngineUnreachableError) as failed:
        engine.ping()
    assert failed.value.endpoint == tls_lab.host
    assert tls_lab.host in str(failed.value)


def test_tls_with_a_ca_bundle_in_the_environment_still_uses_the_endpoint_ca(
    tls_lab: TlsLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system bundle does not hold the test CA: only the configured ca_cert can verify the server.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    path = write_config(tmp_path / "orcastra.yml", tls_lab.host, tls_lab.ca_cert, tls_lab.client)

    with EngineAdapter(engine_settings(load_config(path, {}), {})) as engine:
        snapshot = engine.snapshot()
    assert hostnames(snapshot.nodes) == NODE_NAMES


# --- ssh:// ---------------------------------------------------------------------------------------


@pytest.fixture
def ssh(lab_env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshEndpoint]:
    with ssh_endpoint(lab_env.docker_host, tmp_path / "ssh") as endpoint:
        # paramiko reads ~/.ssh/config and ~/.ssh/known_hosts through expanduser, i.e. $HOME.
        monkeypatch.setenv("HOME", str(endpoint.home))
        yield endpoint


@contextmanager
def recorded_resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record ResourceWarnings instead of raising them, then collect garbage before leaving.

    The SDK's shell-out ssh transport leaks a socket, two pipes and an unwaited ``ssh`` per Engine call
    (see test_ssh_leaves_no_process_or_socket_behind); recorded here they can be asserted on, instead of
    failing whichever later test the garbage collector happens to run in.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            yield caught
        finally:
            gc.collect()


def test_ssh_takes_a_snapshot(ssh: SshEndpoint) -> None:
    host = f"ssh://root@{ssh.alias}:{ssh.port}"
    with recorded_resource_warnings(), EngineAdapter(EngineSettings(host=host)) as engine:
        snapshot = engine.snapshot()
        assert engine.reads_through_pool
        info_name = engine.info()["Name"]
    assert hostnames(snapshot.nodes) == NODE_NAMES
    # dial-stdio reached node1's own Engine, as DOCKER_HOST in the ssh session said.
    assert info_name == "node1"


def test_ssh_takes_the_port_from_the_ssh_config(ssh: SshEndpoint) -> None:
    settings = EngineSettings(host=f"ssh://root@{ssh.alias}", timeout_seconds=10)
    with recorded_resource_warnings(), EngineAdapter(settings) as engine:
        snapshot = engine.snapshot()
    assert hostnames(snapshot.nodes) == NODE_NAMES


def test_ssh_leaves_no_process_or_socket_behind(ssh: SshEndpoint) -> None:
    with recorded_resource_warnings() as caught:
        with EngineAdapter(EngineSettings(host=f"ssh://root@{ssh.alias}:{ssh.port}")) as engine:
            assert engine.ping()
        left = child_processes("ssh")
    assert left == []
    assert [str(w.message) for w in caught] == []
