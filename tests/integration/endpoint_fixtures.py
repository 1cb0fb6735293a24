"""Real endpoints in front of the lab's manager Engine, for the endpoint tests: a throwaway PKI made with
``openssl``, a TLS terminator (``socat``) that checks client certificates, and an ``sshd`` whose sessions
reach the Engine with ``docker system dial-stdio``.

Everything listens on 127.0.0.1 only, lives in a temporary directory, and is stopped (terminate, wait)
when its context manager exits.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .util import free_port, stop_process

LOOPBACK = "127.0.0.1"
LISTEN_TIMEOUT_SECONDS = 10.0
SSHD = "/usr/sbin/sshd"
# sshd refuses to start without its privilege separation directory (the package's unit creates it).
SSHD_PRIVSEP_DIR = Path("/run/sshd")

# OpenSSL config for a CA certificate: Python's ssl (and OpenSSL 3 in strict mode) want a CA marked
# critical CA:TRUE with key identifiers, whatever the system's openssl.cnf says.
CA_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = {name}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


def require_programs(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).is_file()]
    if missing:
        raise AssertionError(f"missing programs {missing}: install them (scripts/setup.sh lists them)")


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


# --- PKI ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    cert: Path
    key: Path


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str) -> CertificateAuthority:
    """A fresh self-signed CA (P-256) in ``directory``: ``<name>-ca.pem`` and ``<name>-ca.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}-ca.cnf"
    config.write_text(CA_CONFIG.format(name=f"orcastra test CA {name}"))
    ca = CertificateAuthority(cert=directory / f"{name}-ca.pem", key=directory / f"{name}-ca.key")
    _run(
        ["openssl", "req", "-x509", "-new", "-config", str(config), "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-keyout", str(ca.key), "-out", str(ca.cert)],
        directory,
    )  # fmt: skip
    return ca


def issue(ca: CertificateAuthority, directory: Path, name: str, *, server: bool) -> KeyPair:
    """A certificate for ``name`` signed by ``ca``: a server one (SAN IP:127.0.0.1) or a client one."""
    pair = KeyPair(cert=directory / f"{name}.pem", key=directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        LEAF_EXTENSIONS.format(
            usage="serverAuth" if server else "clientAuth",
            san=f"subjectAltName = IP:{LOOPBACK}" if server else "",
        )
    )
    _run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", f"/CN={LOOPBACK if server else name}", "-keyout", str(pair.key), "-out", str(csr)],
        directory,
    )  # fmt: skip
    _run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(pair.cert)],
        directory,
    )  # fmt: skip
    return pair


def docker_cert_path(directory: Path, ca_cert: Path, client: KeyPair) -> Path:
    """A DOCKER_CERT_PATH directory: ca.pem, cert.pem, key.pem, as the Docker CLI expects them."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_cert, directory / "ca.pem")
    shutil.copyfile(client.cert, directory / "cert.pem")
    shutil.copyfile(client.key, directory / "key.pem")
    return directory


# --- processes ------------------------------------------------------------------------------------


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def wait_until_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Bounded wait until ``port`` on 127.0.0.1 accepts connections; fail at once if ``proc`` died."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}: {_log_tail(log)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {LOOPBACK}:{port} after {LISTEN_TIMEOUT_SECONDS} s: {_log_tail(log)}")


@contextmanager
def started(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process listening on ``port``; always terminate and wait for it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(proc, port, log)
        yield proc
    finally:
        stop_process(proc)


@contextmanager
def tls_terminator(server: KeyPair, client_ca: Path, engine_socket: Path, workdir: Path) -> Iterator[int]:
    """socat on 127.0.0.1:<port> speaking TLS, demanding a client certificate signed by ``client_ca``,
    forwarding each connection to the Engine's unix socket. Yields the port."""
    require_programs("socat")
    port = free_port()
    listen = (
        f"OPENSSL-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork,"
        f"cert={server.cert},key={server.key},cafile={client_ca},verify=1"
    )
    with started(["socat", listen, f"UNIX-CONNECT:{engine_socket}"], port, workdir / "socat.log"):
        yield port


@dataclass(frozen=True)
class SshEndpoint:
    alias: str  # the Host name the client config knows
    port: int
    home: Path  # use as $HOME: .ssh/config and .ssh/known_hosts for the test's sshd


@contextmanager
def ssh_endpoint(engine_host: str, workdir: Path, alias: str = "orcastra-endpoint-test") -> Iterator[SshEndpoint]:
    """A real sshd on 127.0.0.1:<port> (own host key and config, key-only root login) whose sessions
    have DOCKER_HOST=``engine_host``, and an ``ssh`` on a private PATH entry that reaches it as ``alias``.

    The client config and known_hosts live in ``home``: the Docker SDK's paramiko transport reads them from
    ``~`` (expanduser, so $HOME).
    """
    require_programs(SSHD, "ssh", "ssh-keygen")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "id_ed25519"
    for key in (host_key, client_key):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)], workdir)
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text((workdir / "id_ed25519.pub").read_text())
    port = free_port()
    sshd_config = workdir / "sshd_config"
    sshd_config.write_text(
        f"ListenAddress {LOOPBACK}\n"
        f"Port {port}\n"
        f"HostKey {host_key}\n"
        "PidFile none\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "StrictModes no\n"
        # The remote `docker system dial-stdio` reads DOCKER_HOST from the session's environment.
        f"SetEnv DOCKER_HOST={engine_host}\n"
        "LogLevel VERBOSE\n"
    )
    client_config = workdir / "ssh_config"
    client_config.write_text(
        f"Host {alias}\n"
        f"  HostName {LOOPBACK}\n"
        f"  Port {port}\n"
        f"  IdentityFile {client_key}\n"
        "  IdentitiesOnly yes\n"
        "  LogLevel ERROR\n"
    )
    # The client side as a user would have it: ~/.ssh/config and the server's key in ~/.ssh/known_hosts
    # (paramiko refuses unknown hosts).
    home = workdir / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(client_config.read_text())
    host_public = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[{LOOPBACK}]:{port} {host_public[0]} {host_public[1]}\n")

    created_privsep = not SSHD_PRIVSEP_DIR.exists()
    if created_privsep:
        SSHD_PRIVSEP_DIR.mkdir(mode=0o755)
    try:
        with started([SSHD, "-D", "-e", "-f", str(sshd_config)], port, workdir / "sshd.log"):
            yield SshEndpoint(alias=alias, port=port, home=home)
    finally:
        if created_privsep:
            with suppress(OSError):  # another sshd started meanwhile and uses it
                SSHD_PRIVSEP_DIR.rmdir()


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


def child_processes(name: str) -> list[tuple[int, str]]:
    """This process's children called ``name`` (zombies included), as (pid, state) from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")".
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm == name and int(ppid) == os.getpid():
            found.append((int(entry.name), state))
    return found
