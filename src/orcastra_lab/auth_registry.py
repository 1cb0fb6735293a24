"""A registry behind token auth, for tests: ``docker-registry serve`` (distribution 2.8, Debian's package) on a
loopback port with its storage in a temporary directory, optionally behind a token service this module runs,
optionally over TLS with a self-signed certificate.

``TokenServer`` follows distribution's token auth spec (docs/spec/auth/token.md and jwt.md): ``GET /token?
service=&scope=repository:<name>:<actions>`` answers ``{"token", "access_token", "expires_in"}``, a JWT signed
RS256 by a self-signed certificate carried in its ``x5c`` header, which the registry checks against that same
certificate (its ``rootcertbundle``). Anonymous callers get ``pull`` on every repository not listed as private;
a caller with a configured user's basic credentials gets what it asks. Every request is recorded.

Needs the ``cryptography`` package (installed with paramiko, a dependency of Orcastra).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "orcastra-test-registry"
ISSUER = "orcastra-test-token-issuer"
START_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def self_signed(directory: Path, name: str, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (and its key), PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class TokenServer:
    """Issues registry tokens; ``users``: name -> password; ``private``: repositories anonymous callers may not
    pull."""

    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    private: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path?query, user or None)
    port: int = 0  # 0: a free one
    address: str = "127.0.0.1"  # the lab's bridge address, for the lab's containers to reach it

    def start(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.cert_path, key_path = self_signed(self.directory, "token-issuer")
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((self.address, self.port), Handler)
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="token-server", daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://{self.address}:{self.port}/token"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _user(self, header: str | None) -> str | bool | None:
        """The user whose basic credentials these are; None: anonymous; False: wrong credentials."""
        if not header or not header.startswith("Basic "):
            return None
        name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return name if self.users.get(name) == password else False

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        user = self._user(handler.headers.get("Authorization"))
        self.requests.append((handler.path, user if isinstance(user, str) else None))
        if user is False:
            handler.send_response(401)
            handler.end_headers()
            return
        query = parse_qs(urlsplit(handler.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            if user is None and name in self.private:
                continue
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        token = self.sign({"sub": user or "", "access": access})
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def sign(self, claims: dict[str, object]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        payload = {"iss": ISSUER, "aud": SERVICE, "iat": now, "nbf": now - 60, "exp": now + 300}
        payload |= {"jti": uuid.uuid4().hex} | claims
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
        assert isinstance(self._key, rsa.RSAPrivateKey)
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


@dataclass
class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1:<free port>, storage under ``directory``."""

    directory: Path
    token: TokenServer | None = None
    tls: bool = False
    port: int = 0  # 0: a free one
    address: str = "127.0.0.1"  # the lab's bridge address, for the lab's containers to reach it

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> None:
        self.port = self.port or free_port()
        http_section: dict[str, object] = {"addr": self.host, "secret": uuid.uuid4().hex}
        if self.tls:
            self.cert_path, key_path = self_signed(self.directory, "registry", self.address)
            http_section["tls"] = {"certificate": str(self.cert_path), "key": str(key_path)}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "data")}, "delete": {"enabled": True}},
            "http": http_section,
        }
        if self.token is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(self.token.cert_path),
                }
            }
        path = self.directory / "registry.yml"
        path.write_text(yaml.safe_dump(config))
        self._log = open(self.directory / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen([REGISTRY_BINARY, "serve", str(path)], stdout=self._log, stderr=self._log)
        self._wait_ready()

    def _answers(self) -> bool:
        conn: http.client.HTTPConnection
        if self.tls:
            import ssl

            conn = http.client.HTTPSConnection(
                self.address, self.port, timeout=2, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection(self.address, self.port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status in (200, 401)
        except OSError:
            return False
        finally:
            conn.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.directory / 'registry.log').read_text()[-2000:]}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host} within {START_TIMEOUT_SECONDS} s")

    def stop(self) -> None:
        """Stop this registry (its own process, by its handle) and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
