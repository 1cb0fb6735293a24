"""How the adapter's calls reach the Engine, and how a failed answer is named.

- ``Client``: the SDK's client, keeping an endpoint's own TLS CA against the environment, closed again when
  its first contact fails;
- GETs: straight on the client's own urllib3 pool (``pool_for``, ``get_through_pool``), else through requests
  as the SDK's own methods do (``get_through_requests``); ``filters_query`` encodes list filters once;
- ``open_events``: GET /events with a timeout for its headers and none for the stream; ``probe_unix_socket``
  checks a unix:// endpoint without the SDK's descriptor leak;
- ``ssh_url_with_config_port``: ssh:// endpoints honour the Port of ``~/.ssh/config``;
- ``status_error``: an error status -> the Orcastra error type that says what to do about it (not found,
  conflict on a stale ``version``, not a manager, client error, server error with its ``Retry-After``);
- ``TRANSPORT_ERRORS``: what a failed transport raises, whatever the scheme (``describe_failure`` words it).

``EngineAdapter._call`` applies the mapping to every call, whichever way it went.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import socket
import urllib.parse
from typing import Any, Self

import docker
import docker.constants
import docker.types
import docker.utils
import paramiko
import requests
import requests.exceptions
import requests.utils
import urllib3.exceptions

from orcastra.errors import (
    EngineClientError,
    EngineConflictError,
    EngineError,
    EngineNotFoundError,
    EngineServerError,
    NotASwarmManagerError,
    cut,
)

log = logging.getLogger(__name__)

# What a failed transport raises, whatever the scheme, for the adapter to report as EngineUnreachableError:
# - the socket layer's OSError: refused, reset, no route, DNS (socket.gaierror), timeouts, TLS (ssl.SSLError);
#   paramiko's NoValidConnectionsError (no address of an ssh:// host answered) is one too;
# - urllib3's and requests' wrappers of those, and http.client's HTTPException for an answer that is no HTTP;
# - paramiko's SSHException and its subclasses (a banner that is no SSH, authentication, a host key missing
#   from known_hosts, a ProxyCommand that failed, a channel the server refused) and EOFError (paramiko: the
#   server hung up mid-handshake). The SDK lets these through as they are.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
    requests.exceptions.RequestException,
    paramiko.SSHException,
)


def describe_failure(e: BaseException) -> str:
    """A transport failure in words: its message, after its type's name unless the SDK or requests wrapped it
    (their messages say what failed; paramiko's SSHException says little without its name, EOFError nothing)."""
    text = cut(str(e))
    if isinstance(e, docker.errors.DockerException | requests.exceptions.RequestException):
        return text  # these say what failed, and how
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Client(docker.APIClient):  # type: ignore[misc]
    """The SDK's client, except that a TLS CA given for this endpoint is never replaced from the environment.

    requests merges REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE into every request's ``verify``, overriding the
    session's own CA (set by docker.tls.TLSConfig): with either variable set (common in CI images and some
    distributions) a daemon's private CA would be ignored and TLS would fail. Proxies still come from the
    environment.
    """

    @classmethod
    def connect(cls, **kwargs: Any) -> Self:
        """A client that speaks the server's API version (GET /version), as ``version="auto"`` does, except
        that a client whose first contact failed is closed: an ssh:// client has its SSH connection open by
        then, and an Engine that is down behind a working sshd would leave one open for every retry."""
        client = cls(version=docker.constants.DEFAULT_DOCKER_API_VERSION, **kwargs)
        try:
            # As version="auto": GET /version, then speak the server's API version, so engines from 20.10
            # (API 1.41) to current releases work with the same code.
            client._version = client._retrieve_server_version()
        except BaseException:
            client.close()
            raise
        return client

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            merged["verify"] = self.verify
        return merged


class ErrorStatus(Exception):
    """An error status answered to a GET on the pool. Never leaves the adapter: ``EngineAdapter._call`` turns
    it into an ``EngineError`` (``status_error``), as it does the SDK's own ``APIError``."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def get_through_requests(c: Any, path: str, params: str | None) -> bytes:
    # Streamed, then read whole in one call: requests would assemble a non-streamed body from 10 KiB chunks.
    response = c._get(c._url(path), params=params, stream=True)
    try:
        c._raise_for_status(response)
        body: bytes = response.raw.read(decode_content=True)
    except BaseException:
        response.close()
        raise
    response.raw.release_conn()
    return body


def get_through_pool(c: Any, pool: Any, path: str, params: str | None) -> bytes:
    """GET on the client's own urllib3 pool (same transport, TLS settings and pooled connections as every
    other call), skipping requests' per-request work: preparing and re-encoding the URL, merging the
    environment, hooks, cookies. That work is most of a small request's CPU, and the task poll makes one twice
    a second; a snapshot's reads also go this way. Transport failures are raised as they come (one of
    ``TRANSPORT_ERRORS``) and error statuses as ``ErrorStatus``, so the adapter maps them like any other
    call's."""
    target = urllib.parse.urlsplit(c._url(path)).path + (f"?{params}" if params else "")
    response = pool.urlopen(
        "GET",
        target,
        headers=c.headers,
        retries=False,
        redirect=False,
        preload_content=False,
        release_conn=False,
        timeout=c.timeout,
    )
    try:
        body: bytes = response.read(decode_content=True)
    except BaseException:
        response.close()
        raise
    response.release_conn()
    if response.status >= 400:
        raise ErrorStatus(
            response.status, _error_message(body), retry_after_seconds(response.headers.get("Retry-After"))
        )
    return body


def open_events(c: Any, filters: dict[str, list[str]], since: float | None, timeout: float) -> Any:
    """GET /events as the SDK's ``events()`` does, except that the answer's headers must come within
    ``timeout`` (the SDK waits forever, so an endpoint that accepts and hangs held the watcher for good);
    the stream itself then has no read timeout, as the Engine sends an event only when something happens.
    Returns the SDK's cancellable stream of decoded events."""
    params = {"filters": docker.utils.convert_filters(filters) if filters else None, "since": since}
    response = c._get(c._url("/events"), params=params, stream=True, timeout=timeout)
    try:
        c._raise_for_status(response)
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is not None:  # else the stream ends after a quiet ``timeout``; the watcher re-opens it
            sock.settimeout(None)
    except BaseException:
        response.close()
        raise
    return docker.types.CancellableStream(c._stream_helper(response, decode=True), response)


def probe_unix_socket(url: str, timeout: float) -> None:
    """Check that something listens on a unix:// endpoint before the SDK connects to it: the SDK's
    UnixHTTPConnection does not close a socket whose connect() failed (no such file, refused), one leaked
    descriptor per retry of a dead Engine. Our own probe is always closed; a failure raises its OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        probe.connect(url.removeprefix("unix://"))


def pool_for(c: Any, host: str) -> Any:
    """The urllib3 connection pool the client's own transport adapter (unix socket, TLS, ssh) would use for
    this endpoint; None where it cannot be used as is (a proxy applies, or an older requests without
    ``get_connection_with_tls_context``) and GETs go through requests."""
    url = c._url("/")
    try:
        env = c.merge_environment_settings(url, {}, False, None, None)
        if requests.utils.select_proxy(url, env.get("proxies") or {}):
            return None
        request = requests.Request("GET", url).prepare()
        adapter = c.get_adapter(url)
        pool = adapter.get_connection_with_tls_context(request, env["verify"], None, env["cert"])
        if url.startswith("https://"):
            # What requests does before each send: the endpoint's CA and client certificate on the pool.
            adapter.cert_verify(pool, url, env["verify"], env["cert"])
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        log.debug("GETs go through requests for %s: %s", host, e)
        return None
    return pool


@functools.lru_cache(maxsize=64)
def filters_query(filters: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """``filters=<JSON>`` percent-encoded, kept for the next call with the same filters (the task poll sends
    the same one twice a second)."""
    return "filters=" + urllib.parse.quote(json.dumps({k: list(v) for k, v in filters}, separators=(",", ":")))


def ssh_url_with_config_port(url: str) -> str:
    """``ssh://user@alias`` -> ``ssh://user@alias:PORT`` with the Port of ``~/.ssh/config`` for that host.

    The SDK appends ``:22`` to a port-less ssh:// URL before it reads the ssh config, so the config's Port
    would never apply; an explicit port in the URL is kept as it is.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.port is not None or not parsed.hostname:
        return url
    config_file = os.path.expanduser("~/.ssh/config")
    if not os.path.exists(config_file):
        return url
    import paramiko  # only needed for ssh:// endpoints

    config = paramiko.SSHConfig.from_path(config_file)
    port = config.lookup(parsed.hostname).get("port")
    if not port:
        return url
    return urllib.parse.urlunparse(parsed._replace(netloc=f"{parsed.netloc}:{port}"))


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` in seconds (the date form is not used by the Engine or proxies in front of it)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def status_error(
    what: str, host: str, status: int | None, message: str, retry_after: float | None = None
) -> EngineError:
    """An Engine answer with an error status -> the error type that says what to do about it (a 5xx carries
    the delay a ``Retry-After`` header asked for)."""
    msg = cut(message)
    text = f"{what} failed on {host}: {msg}"
    if status == 404:
        return EngineNotFoundError(text, endpoint=host, status=status)
    if status == 409 or _is_out_of_sequence(msg):
        return EngineConflictError(text, endpoint=host, status=status)
    if status == 503 and ("not a swarm manager" in msg or "not part of a swarm" in msg):
        return NotASwarmManagerError(
            f"{host} is not a manager of an active Swarm ({msg}); point Orcastra at a manager",
            endpoint=host,
            status=status,
        )
    if status is not None and 400 <= status < 500:
        return EngineClientError(text, endpoint=host, status=status)
    return EngineServerError(text, endpoint=host, status=status, retry_after_seconds=retry_after)


def _error_message(body: bytes) -> str:
    """The Engine's ``{"message": ...}`` error body, or the body itself."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        return str(decoded["message"])
    return body.decode("utf-8", "replace")


def _is_out_of_sequence(message: str) -> bool:
    # swarmkit rejects a spec update whose version is stale with "update out of sequence"; older engines
    # return it as a 500 (rpc error code = Unknown), newer ones may map it to 409.
    return "out of sequence" in message
