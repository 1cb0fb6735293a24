"""HTTP to container registries for the mod manager: the standard library's ``http.client`` and ``ssl`` (the
agent process must stay small: no httpx, no requests), with what the registry API v2 needs around it.

- TLS by default, verified against the system's CA store; a registry listed as insecure (dockerd's
  ``--insecure-registry``) gets HTTPS without verification, and plain HTTP once its port answers TLS with an
  error (it speaks HTTP): the scheme that worked is remembered.
- Auth (distribution's token auth spec, docs/spec/auth/token.md): a 401 names a ``Bearer`` realm, service and
  scope; a token is fetched from the realm (anonymously, or with the registry's configured credentials as HTTP
  basic), cached per host and scope until its ``expires_in``, and the request sent again. A ``Basic`` challenge
  gets the credentials directly. When a 401 carries no challenge, the realms LinuxServer's consumer hard-codes
  are used (ghcr.io, lscr.io, quay.io, Docker Hub).
- Redirects (registries send blobs to storage hosts) are followed up to 5 times; the ``Authorization`` header
  goes only to the host it was issued for (a storage URL carries its own signature; S3 refuses both).
- Statuses are mapped to ``orcastra.errors`` types: 404 not found, 401/403 auth, 429/5xx and connection
  failures temporary (``Retry-After`` honoured), bodies cut to a fixed length.

Credentials never travel over plain HTTP to a realm unless the registry itself is listed as insecure.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode, urljoin, urlsplit

import msgspec

from orcastra.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryServerError,
    RegistryUnreachableError,
    cut,
)

MAX_REDIRECTS = 5
MAX_ERROR_BODY_BYTES = 4096
MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_TOKEN_SECONDS = 60.0
# LinuxServer's consumer (docs/mods.md): the token services it asks without a challenge.
KNOWN_REALMS: dict[str, tuple[str, str]] = {
    "lscr.io": ("https://ghcr.io/token", ""),
    "ghcr.io": ("https://ghcr.io/token", ""),
    "quay.io": ("https://quay.io/v2/auth", "quay.io"),
    "registry-1.docker.io": ("https://auth.docker.io/token", "registry.docker.io"),
}
_PARAM = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class Credential:
    username: str
    password: str


@dataclass(frozen=True)
class HttpOptions:
    insecure: frozenset[str] = frozenset()  # host[:port] of registries spoken to without verified TLS
    credentials: Mapping[str, Credential] = field(default_factory=dict)  # by registry host[:port]
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    user_agent: str = "orcastra-mod-manager"


@dataclass
class Answer:
    """A response being read: the caller reads ``response`` and closes ``conn``."""

    url: str
    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse

    def read(self, limit: int) -> bytes:
        body = self.response.read(limit + 1)
        if len(body) > limit:  # not temporary: the same answer would come again
            raise RegistryError(f"{self.url}: answer larger than {limit} bytes", registry=self.host)
        return body

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def close(self) -> None:
        self.conn.close()


class _Token(msgspec.Struct):
    token: str = ""
    access_token: str = ""
    expires_in: float = DEFAULT_TOKEN_SECONDS


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


def _error_text(body: bytes) -> str:
    """A registry's error body (``{"errors": [{"code", "message"}]}``) in a few words, else the text, cut."""
    try:
        errors = msgspec.json.decode(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors[:3]) or cut(
            body.decode()
        )
    except (msgspec.DecodeError, AttributeError, TypeError, UnicodeDecodeError):
        return cut(body.decode("utf-8", "replace"), 200)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(300.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def verified_context() -> ssl.SSLContext:
    """TLS verified against the system's CAs, read from the hashed CA directory when there is one: OpenSSL then
    loads a CA certificate when a chain needs it (+0.4 MiB of RSS, measured) instead of parsing the whole bundle
    (+1.8 MiB: ``ssl.create_default_context``). ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are honoured when set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
    paths = ssl.get_default_verify_paths()
    overridden = os.environ.get(paths.openssl_cafile_env) or os.environ.get(paths.openssl_capath_env)
    if overridden or not paths.capath or not os.path.isdir(paths.capath):
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(capath=paths.capath)
    return ctx


def unverified_context() -> ssl.SSLContext:
    """TLS without verification, for registries listed as insecure (no CA store loaded at all)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RegistryHttp:
    """GETs on registries with auth, redirects and the status mapping; one connection per request."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._plain: set[str] = set()  # insecure registries found speaking plain HTTP
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (host, scope) -> (header, expires)
        self._contexts: dict[bool, ssl.SSLContext] = {}  # verified? -> context, made when first needed

    def set_credentials(self, credentials: Mapping[str, Credential]) -> None:
        """New credentials (a rotated secret): tokens fetched with the old ones are forgotten."""
        if dict(credentials) != dict(self.options.credentials):
            self.options = replace(self.options, credentials=dict(credentials))
            self._tokens.clear()

    def tls_context(self, *, verified: bool) -> ssl.SSLContext:
        if verified not in self._contexts:
            self._contexts[verified] = verified_context() if verified else unverified_context()
        return self._contexts[verified]

    def base_url(self, registry: str) -> str:
        return f"{'http' if registry in self._plain else 'https'}://{registry}"

    # --- one exchange ---

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        timeout = self.options.connect_timeout_seconds
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            ctx = self.tls_context(verified=parts.netloc not in self.options.insecure)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self.options.read_timeout_seconds)
        return conn

    def _exchange(self, url: str, headers: dict[str, str]) -> Answer:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn = self._connect(url)
        except ssl.SSLError as e:
            if parts.scheme == "https" and parts.netloc in self.options.insecure:
                self._plain.add(parts.netloc)  # an insecure registry answering TLS with an error speaks HTTP
                return self._exchange("http" + url[len("https") :], headers)
            raise RegistryUnreachableError(f"{parts.netloc}: TLS: {cut(str(e), 200)}", registry=parts.netloc) from e
        except (OSError, http.client.HTTPException) as e:
            raise RegistryUnreachableError(
                f"{parts.netloc}: {type(e).__name__}: {cut(str(e), 200)}", registry=parts.netloc
            ) from e
        try:
            conn.request("GET", target, headers={"User-Agent": self.options.user_agent, **headers})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise RegistryUnreachableError(
                f"{parts.netloc}: {type(e).__name__}: {cut(str(e), 200)}", registry=parts.netloc
            ) from e
        return Answer(url, conn, response)

    # --- auth ---

    def _auth_header(self, host: str, scope: str) -> str | None:
        token = self._tokens.get((host, scope))
        if token is not None and token[1] > time.monotonic():
            return token[0]
        return None

    def _basic(self, registry: str) -> str | None:
        cred = self.options.credentials.get(registry)
        if cred is None:
            return None
        return "Basic " + base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()

    def _fetch_token(self, registry: str, params: Mapping[str, str], scope: str) -> tuple[str, float]:
        realm = params.get("realm", "")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryAuthError(f"{registry}: the auth challenge names no usable realm ({cut(realm, 100)!r})")
        query = {
            k: v for k, v in (("service", params.get("service", "")), ("scope", params.get("scope") or scope)) if v
        }
        headers: dict[str, str] = {}
        basic = self._basic(registry)
        if basic is not None and (realm.startswith("https://") or registry in self.options.insecure):
            headers["Authorization"] = basic
        answer = self._exchange(f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}", headers)
        try:
            status, body = answer.response.status, answer.read(MAX_TOKEN_BYTES)
        finally:
            answer.close()
        if status in (401, 403):
            who = "with the configured credentials" if "Authorization" in headers else "anonymously"
            raise RegistryAuthError(
                f"{registry}: the token service refused {who}: {_error_text(body)}", registry=registry
            )
        if status >= 300:
            raise self._status_error(registry, answer.url, status, body, None)
        try:
            got = msgspec.json.decode(body, type=_Token)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise RegistryAuthError(f"{registry}: the token service's answer is not a token: {cut(str(e), 100)}") from e
        token = got.token or got.access_token
        if not token:
            raise RegistryAuthError(f"{registry}: the token service gave no token", registry=registry)
        lifetime = max(1.0, min(float(got.expires_in or DEFAULT_TOKEN_SECONDS), 3600.0) - 5.0)
        return f"Bearer {token}", time.monotonic() + lifetime

    def _answer_challenge(self, registry: str, answer: Answer, scope: str) -> tuple[str, float]:
        """The Authorization header a 401 asks for (a token fetched, or basic credentials) and until when."""
        challenges = answer.response.headers.get_all("WWW-Authenticate") or []
        parsed = [parse_challenge(c) for c in challenges]
        bearer = next((p for s, p in parsed if s == "bearer"), None)
        if bearer is None and not any(s == "basic" for s, _ in parsed) and registry in KNOWN_REALMS:
            realm, service = KNOWN_REALMS[registry]
            bearer = {"realm": realm, "service": service}
        if bearer is not None:
            return self._fetch_token(registry, bearer, scope)
        basic = self._basic(registry)
        if basic is None:
            raise RegistryAuthError(f"{registry}: asks for credentials (basic auth) and none are configured")
        if not answer.url.startswith("https://") and registry not in self.options.insecure:
            raise RegistryAuthError(f"{registry}: asks for basic credentials over plain HTTP; not sent")
        return basic, float("inf")

    # --- the request ---

    def _status_error(self, registry: str, url: str, status: int, body: bytes, retry: str | None) -> RegistryError:
        text = f"{registry}: GET {urlsplit(url).path}: HTTP {status}: {_error_text(body)}"
        if status == 404:
            return RegistryNotFoundError(text, registry=registry)
        if status in (401, 403):
            cred = self.options.credentials.get(registry)
            how = f"as {cred.username}" if cred is not None else "anonymously: no credentials are configured for it"
            return RegistryAuthError(f"{text} ({how})", registry=registry)
        if status == 429 or status >= 500:
            return RegistryServerError(text, registry=registry, retry_after_seconds=_retry_after(retry))
        return RegistryError(text, registry=registry)

    def get(self, registry: str, path: str, headers: Mapping[str, str], scope: str) -> Answer:
        """GET ``path`` of ``registry`` (authenticating and following redirects): a 2xx answer to read and close,
        or the mapped error."""
        url = self.base_url(registry) + path
        challenged: set[str] = set()  # hosts whose 401 was answered once already
        for _ in range(MAX_REDIRECTS + 3):
            host = urlsplit(url).netloc
            auth = self._auth_header(host, scope)
            answer = self._exchange(url, dict(headers) | ({"Authorization": auth} if auth else {}))
            status = answer.response.status
            if 200 <= status < 300:
                return answer
            location = answer.response.getheader("Location")
            if status in (301, 302, 303, 307, 308) and location:
                answer.close()
                url = urljoin(answer.url, location)
                continue
            if status == 401 and host not in challenged:
                challenged.add(host)
                try:
                    self._tokens[(host, scope)] = self._answer_challenge(registry, answer, scope)
                finally:
                    answer.close()
                continue
            try:
                body = answer.response.read(MAX_ERROR_BODY_BYTES)
            finally:
                answer.close()
            raise self._status_error(registry, url, status, body, answer.response.getheader("Retry-After"))
        raise RegistryServerError(f"{registry}: more than {MAX_REDIRECTS} redirects for {path}", registry=registry)
