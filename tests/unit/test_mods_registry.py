"""The mod manager's registry client against real registries: Debian's ``docker-registry`` (distribution 2.8) on
loopback, plain, behind token auth (a token service the test runs: JWTs signed by a self-signed certificate the
registry trusts), and over TLS; mod images pushed by the lab's pusher (no Docker daemon). What a real registry
does not do on demand (redirect blobs to another host, fail, cut a download, serve wrong bytes, ask for basic
auth) is played by a small fake registry."""

from __future__ import annotations

import gzip
import io
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orcastra.adapters.mods_registry import ModRegistry, ResolvedMod
from orcastra.adapters.registry_http import Credential, HttpOptions
from orcastra.errors import (
    ModImageError,
    RegistryAuthError,
    RegistryNotFoundError,
    RegistryServerError,
    RegistryUnreachableError,
)
from orcastra.features.mods.manifest import NodePlatform, node_platform
from orcastra.features.mods.reference import ModReference, parse_reference
from orcastra_lab.auth_registry import LocalRegistry, TokenServer, free_port
from orcastra_lab.mod_images import DOCKER_LAYER, DOCKER_MANIFEST, Pusher, digest_of, mod_layer

AMD64 = NodePlatform()


def ref(text: str) -> ModReference:
    got = parse_reference(text)
    assert isinstance(got, ModReference), got
    return got


def client(*insecure: str, attempts: int = 1, waits: list[float] | None = None, **creds: Credential) -> ModRegistry:
    def wait(seconds: float) -> bool:
        if waits is not None:
            waits.append(seconds)
        return False

    options = HttpOptions(
        insecure=frozenset(insecure), credentials=creds, connect_timeout_seconds=3, read_timeout_seconds=5
    )
    return ModRegistry(options, attempts=attempts, max_blob_bytes=10 * 1024 * 1024, wait=wait)


def fetch(registry: ModRegistry, mod: ResolvedMod) -> bytes:
    out = io.BytesIO()
    registry.fetch_blob(mod, out)
    return out.getvalue()


# --- real registries -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path_factory.mktemp("plain-registry"))
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    where = tmp_path_factory.mktemp("token-registry")
    token = TokenServer(where, users={"pusher": "push-pw", "reader": "read-pw"}, private={"team/private-mod"})
    token.start()
    registry = LocalRegistry(where, token=token)
    registry.start()
    yield registry, token
    registry.stop()
    token.stop()


def test_a_mod_is_resolved_and_its_blob_fetched_byte_for_byte(plain: LocalRegistry) -> None:
    pusher = Pusher(plain.base_url)
    pushed = pusher.push_mod("orcastra/mod-a", "v1", {"etc/s6-overlay/s6-rc.d/init-mod-a/run": b"#!/bin/sh\necho a\n"})
    registry = client(plain.host)
    mod = registry.resolve(ref(f"{plain.host}/orcastra/mod-a:v1"), AMD64)
    assert (mod.layer_digest, mod.manifest_digest, mod.index_digest) == (
        pushed.layer_digest,
        pushed.manifest_digest,
        None,
    )
    body = fetch(registry, mod)
    assert body == pushed.layer == pusher.fetch_blob("orcastra/mod-a", pushed.layer_digest)
    assert registry.bytes_fetched == len(body)


def test_a_plain_http_registry_not_listed_as_insecure_is_not_spoken_to(plain: LocalRegistry) -> None:
    Pusher(plain.base_url).push_mod("orcastra/mod-b", "v1", {"a": b"a"})
    with pytest.raises(RegistryUnreachableError, match=rf"{plain.host}: TLS"):
        client().resolve(ref(f"{plain.host}/orcastra/mod-b:v1"), AMD64)


def test_a_missing_tag_is_not_found(plain: LocalRegistry) -> None:
    Pusher(plain.base_url).push_mod("orcastra/mod-c", "v1", {"a": b"a"})
    with pytest.raises(RegistryNotFoundError, match="HTTP 404: MANIFEST_UNKNOWN"):
        client(plain.host).resolve(ref(f"{plain.host}/orcastra/mod-c:v2"), AMD64)


def test_a_multi_platform_index_resolves_to_the_nodes_platform(plain: LocalRegistry) -> None:
    pusher = Pusher(plain.base_url)
    pushed = pusher.push_multi_platform_mod(
        "orcastra/multi", "latest", {"linux/amd64": {"x": b"amd64"}, "linux/arm64/v8": {"x": b"arm64"}}
    )
    registry = client(plain.host)
    for machine, platform in (("x86_64", "linux/amd64"), ("aarch64", "linux/arm64/v8")):
        mod = registry.resolve(ref(f"{plain.host}/orcastra/multi"), node_platform(machine))
        assert (mod.layer_digest, mod.manifest_digest) == (
            pushed[platform].layer_digest,
            pushed[platform].manifest_digest,
        )
        assert mod.index_digest == pushed[platform].index_digest
        assert fetch(registry, mod) == pushed[platform].layer
    with pytest.raises(ModImageError, match="no image for linux/s390x"):
        registry.resolve(ref(f"{plain.host}/orcastra/multi"), node_platform("s390x"))


def test_a_pinned_digest_is_resolved_by_that_digest(plain: LocalRegistry) -> None:
    pusher = Pusher(plain.base_url)
    old = pusher.push_mod("orcastra/pinned", "v1", {"x": b"old"})
    pusher.push_mod("orcastra/pinned", "v1", {"x": b"new"})  # the tag moved on
    mod = client(plain.host).resolve(ref(f"{plain.host}/orcastra/pinned:v1@{old.manifest_digest}"), AMD64)
    assert mod.layer_digest == old.layer_digest


def test_anonymous_token_auth_for_a_public_mod_and_the_token_is_reused(
    tokens: tuple[LocalRegistry, TokenServer],
) -> None:
    registry, token = tokens
    pushed = Pusher(registry.base_url, "pusher", "push-pw").push_mod("team/public-mod", "v1", {"x": b"public"})
    before = len(token.requests)
    mods = client(registry.host)
    mod = mods.resolve(ref(f"{registry.host}/team/public-mod:v1"), AMD64)
    assert fetch(mods, mod) == pushed.layer
    mods.resolve(ref(f"{registry.host}/team/public-mod:v1"), AMD64)
    asked = token.requests[before:]
    assert asked == [("/token?service=orcastra-test-registry&scope=repository%3Ateam%2Fpublic-mod%3Apull", None)]


def test_a_private_mod_needs_the_configured_credentials(tokens: tuple[LocalRegistry, TokenServer]) -> None:
    registry, token = tokens
    pushed = Pusher(registry.base_url, "pusher", "push-pw").push_mod("team/private-mod", "v1", {"x": b"private"})
    private = ref(f"{registry.host}/team/private-mod:v1")
    with pytest.raises(RegistryAuthError, match=r"HTTP 401.*anonymously: no credentials are configured for it"):
        client(registry.host).resolve(private, AMD64)
    with pytest.raises(RegistryAuthError, match="the token service refused with the configured credentials"):
        client(registry.host, **{registry.host: Credential("reader", "wrong")}).resolve(private, AMD64)
    mods = client(registry.host, **{registry.host: Credential("reader", "read-pw")})
    assert fetch(mods, mods.resolve(private, AMD64)) == pushed.layer
    assert token.requests[-1][1] == "reader"


@pytest.mark.parametrize("trust", ["insecure", "ssl-cert-file", "hashed-ca-dir"])
def test_a_tls_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust: str) -> None:
    registry = LocalRegistry(tmp_path, tls=True)
    registry.start()
    try:
        pushed = Pusher(registry.base_url, unverified_tls=True).push_mod("orcastra/tls-mod", "v1", {"x": b"tls"})
        with pytest.raises(RegistryUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
            client().resolve(ref(f"{registry.host}/orcastra/tls-mod:v1"), AMD64)
        if trust == "ssl-cert-file":
            monkeypatch.setenv("SSL_CERT_FILE", str(registry.cert_path))
        elif trust == "hashed-ca-dir":  # the system's layout (/etc/ssl/certs): <subject hash>.0 links
            cas = tmp_path / "cas"
            cas.mkdir()
            name = subprocess.run(
                ["openssl", "x509", "-hash", "-noout", "-in", str(registry.cert_path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            (cas / f"{name}.0").symlink_to(registry.cert_path)
            system = ssl.get_default_verify_paths()
            monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: system._replace(capath=str(cas)))
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        mods = client(registry.host) if trust == "insecure" else client()
        mod = mods.resolve(ref(f"{registry.host}/orcastra/tls-mod:v1"), AMD64)
        assert fetch(mods, mod) == pushed.layer
        assert mods.http.base_url(registry.host).startswith("https://")
    finally:
        registry.stop()


def test_a_registry_that_is_down_is_unreachable_after_the_attempts() -> None:
    waits: list[float] = []
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnreachableError, match="ConnectionRefusedError"):
        client(host, attempts=3, waits=waits).resolve(ref(f"{host}/orcastra/gone:v1"), AMD64)
    assert waits == [2.0, 2.0]  # the unreachable error's own delay (2 s) beats the first backoff step (1 s)


# --- a fake registry for what a real one does not do on demand -------------------------------------

LAYER = mod_layer({"etc/mod": b"fake"})
Route = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class Fake:
    """An HTTP server whose answers ``route`` decides; every request's path and headers are recorded."""

    def __init__(self, route: Route) -> None:
        self.route, self.seen = route, []  # type: list[tuple[str, dict[str, str]]]
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = fake.route(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fakes() -> Iterator[list[Fake]]:
    made: list[Fake] = []
    yield made
    for fake in made:
        fake.close()


def manifest_for(layer: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": digest_of(b"{}"),
                "size": 2,
            },
            "layers": [{"mediaType": DOCKER_LAYER, "digest": digest_of(layer), "size": len(layer)}],
        }
    ).encode()


def serving(layer: bytes, blob: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]) -> Route:
    def route(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if "/manifests/" in h.path:
            return 200, {"Content-Type": DOCKER_MANIFEST}, manifest_for(layer)
        return blob(h)

    return route


def test_bearer_challenge_and_a_blob_redirected_to_storage_without_the_token(fakes: list[Fake]) -> None:
    storage = Fake(lambda h: (200, {}, LAYER))
    auth = Fake(lambda h: (200, {"Content-Type": "application/json"}, b'{"access_token": "t0k", "expires_in": 60}'))
    fakes += [storage, auth]

    def route(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != "Bearer t0k":
            realm = f'Bearer realm="http://{auth.host}/token",service="fake",scope="repository:u/m:pull"'
            return 401, {"WWW-Authenticate": realm}, b'{"errors": [{"code": "UNAUTHORIZED"}]}'
        if "/manifests/" in h.path:
            return 200, {"Content-Type": DOCKER_MANIFEST}, manifest_for(LAYER)
        return 307, {"Location": f"http://{storage.host}/blobs/abc?signature=s1"}, b""

    registry = Fake(route)
    fakes.append(registry)
    mods = client(registry.host)
    mod = mods.resolve(ref(f"{registry.host}/u/m:1"), AMD64)
    assert fetch(mods, mod) == LAYER
    assert auth.seen[0][0] == "/token?service=fake&scope=repository%3Au%2Fm%3Apull"
    assert len(auth.seen) == 1  # the token is reused for the blob
    assert storage.seen[0][0] == "/blobs/abc?signature=s1"
    assert "authorization" not in storage.seen[0][1]  # the token never goes to the storage host


def test_basic_auth_when_the_registry_asks_for_it(fakes: list[Fake]) -> None:
    def route(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != "Basic dTpw":  # u:p
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return serving(LAYER, lambda _: (200, {}, LAYER))(h)

    fake = Fake(route)
    fakes.append(fake)
    with pytest.raises(RegistryAuthError, match=r"asks for credentials \(basic auth\) and none are configured"):
        client(fake.host).resolve(ref(f"{fake.host}/u/m:1"), AMD64)
    mods = client(fake.host, **{fake.host: Credential("u", "p")})
    assert fetch(mods, mods.resolve(ref(f"{fake.host}/u/m:1"), AMD64)) == LAYER


def test_a_server_error_is_retried_after_its_retry_after(fakes: list[Fake]) -> None:
    answers = [(503, {"Retry-After": "3"}, b"busy"), (200, {}, LAYER)]
    fake = Fake(serving(LAYER, lambda h: answers.pop(0)))
    fakes.append(fake)
    waits: list[float] = []
    mods = client(fake.host, attempts=3, waits=waits)
    assert fetch(mods, mods.resolve(ref(f"{fake.host}/u/m:1"), AMD64)) == LAYER
    assert waits == [3.0]


@pytest.mark.parametrize(
    ("blob", "error", "kind"),
    [
        (lambda h: (200, {}, LAYER[:-1] + bytes([LAYER[-1] ^ 1])), "the layer served has sha256", RegistryServerError),
        (
            lambda h: (200, {"Content-Length": str(len(LAYER))}, LAYER[:10]),
            "arrived with 10 of its",
            RegistryServerError,
        ),
        (lambda h: (200, {}, LAYER + b"more"), "is larger than its", ModImageError),
    ],
    ids=["corrupt", "cut", "too-long"],
)
def test_a_bad_download_never_passes_for_the_layer(
    fakes: list[Fake],
    blob: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]],
    error: str,
    kind: type[Exception],
) -> None:
    fake = Fake(serving(LAYER, blob))
    fakes.append(fake)
    mods = client(fake.host, attempts=2)
    mod = mods.resolve(ref(f"{fake.host}/u/m:1"), AMD64)
    with pytest.raises(kind, match=error):
        fetch(mods, mod)
    blob_requests = [p for p, _ in fake.seen if "/blobs/" in p]
    assert len(blob_requests) == (2 if kind is RegistryServerError else 1)  # temporary: tried again


def test_a_layer_that_is_not_gzip_is_refused_at_once(fakes: list[Fake]) -> None:
    plain_tar = gzip.decompress(LAYER)
    fake = Fake(serving(plain_tar, lambda h: (200, {}, plain_tar)))
    fakes.append(fake)
    mods = client(fake.host, attempts=3)
    with pytest.raises(ModImageError, match="is not gzip data"):
        fetch(mods, mods.resolve(ref(f"{fake.host}/u/m:1"), AMD64))


def test_a_pinned_digest_must_be_the_digest_of_what_is_served(fakes: list[Fake]) -> None:
    fake = Fake(serving(LAYER, lambda h: (200, {}, LAYER)))
    fakes.append(fake)
    pinned = "sha256:" + "0" * 64
    with pytest.raises(ModImageError, match=f"whose digest is {digest_of(manifest_for(LAYER))}, not {pinned}"):
        client(fake.host).resolve(ref(f"{fake.host}/u/m:1@{pinned}"), AMD64)
