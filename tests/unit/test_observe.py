"""Tests of the metrics, the health state and the HTTP listener (a real server on 127.0.0.1, an OS-picked port)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator, Mapping

import pytest

from orcastra import __version__
from orcastra.adapters.http import ApiServer, Request, Response, json_response, parse_listen_address
from orcastra.errors import PermanentError
from orcastra.runtime.observe import HealthState, Metrics, status_routes

STALE_AFTER_SECONDS = 60.0
NOW = 1_000_000.0


def fetch(
    server: ApiServer,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection, closed before returning (a leaked socket fails the run)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health() -> HealthState:
    return HealthState(stale_after_seconds=STALE_AFTER_SECONDS)


@pytest.fixture
def server(metrics: Metrics, health: HealthState) -> Iterator[ApiServer]:
    with ApiServer("127.0.0.1:0", builtin=status_routes(metrics, health)) as api:
        yield api


# --- HealthState (pure) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "last_good_age", "status"),
    [
        ("leader", 1.0, "ok"),
        ("leader", STALE_AFTER_SECONDS, "degraded"),
        ("leader", None, "degraded"),
        ("follower", None, "ok"),
        ("follower", 10 * STALE_AFTER_SECONDS, "ok"),
        ("starting", None, "degraded"),
        ("starting", 1.0, "degraded"),
    ],
    ids=[
        "leader-fresh",
        "leader-stale",
        "leader-no-cycle-yet",
        "follower-no-cycle",
        "follower-old-cycle",
        "starting",
        "starting-after-cycle",
    ],
)
def test_health_status(role: str, last_good_age: float | None, status: str) -> None:
    health = HealthState(stale_after_seconds=STALE_AFTER_SECONDS)
    health.set_role(role)  # type: ignore[arg-type]
    if last_good_age is not None:
        health.cycle_ok(NOW - last_good_age)
    snap = health.snapshot(NOW)
    assert snap["status"] == status
    assert snap["role"] == role
    assert snap["last_good_cycle_age_seconds"] == last_good_age


def test_health_keeps_last_error_until_a_good_cycle() -> None:
    health = HealthState(stale_after_seconds=STALE_AFTER_SECONDS, role="leader")
    health.cycle_ok(NOW - 5)
    health.cycle_failed(NOW - 1, "engine unreachable")
    snap = health.snapshot(NOW)
    assert snap == {
        "status": "ok",
        "role": "leader",
        "last_good_cycle_age_seconds": 5.0,
        "last_error": "engine unreachable",
    }
    health.cycle_ok(NOW)
    assert health.snapshot(NOW)["last_error"] is None


def test_health_rejects_unknown_role() -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        HealthState(stale_after_seconds=1.0).set_role("boss")  # type: ignore[arg-type]


# --- Metrics (pure) -----------------------------------------------------------------------------------


def test_metrics_render_cycles_actions_and_build_info(metrics: Metrics) -> None:
    metrics.observe_cycle(0.02, engine_calls=4, ok=True, now=NOW)
    metrics.observe_cycle(0.5, engine_calls=2, ok=False, now=NOW + 10)
    metrics.observe_action("update-service", "conflict")
    metrics.observe_action("update-service", "conflict")
    text = metrics.render().decode()
    assert 'orcastra_cycles_total{result="ok"} 1.0' in text
    assert 'orcastra_cycles_total{result="failed"} 1.0' in text
    assert 'orcastra_actions_total{kind="update-service",result="conflict"} 2.0' in text
    assert "orcastra_engine_calls_total 6.0" in text
    assert "orcastra_cycle_engine_calls 2.0" in text
    assert "orcastra_cycle_duration_seconds_count 2.0" in text
    assert 'orcastra_cycle_duration_seconds_bucket{le="0.025"} 1.0' in text
    # Only the good cycle moves the timestamp.
    assert "orcastra_last_good_cycle_timestamp_seconds 1e+06" in text
    assert f'orcastra_build_info{{version="{__version__}"}} 1.0' in text


def test_metrics_export_failed_cycles_at_zero_before_any_cycle(metrics: Metrics) -> None:
    assert 'orcastra_cycles_total{result="failed"} 0.0' in metrics.render().decode()


def test_metrics_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.set_leader(True)
    assert "orcastra_leader 1.0" in first.render().decode()
    assert "orcastra_leader 0.0" in second.render().decode()


def test_metrics_anchor_status_replaces_the_anchor_set(metrics: Metrics) -> None:
    metrics.set_anchor_status([("app_db", True, 0, None), ("app_cache", False, 2, NOW)])
    text = metrics.render().decode()
    assert 'orcastra_anchor_colocated{anchor="app_db"} 1.0' in text
    assert 'orcastra_anchor_next_restart_timestamp_seconds{anchor="app_db"} 0.0' in text
    assert 'orcastra_anchor_colocated{anchor="app_cache"} 0.0' in text
    assert 'orcastra_anchor_restart_attempts{anchor="app_cache"} 2.0' in text
    assert 'orcastra_anchor_next_restart_timestamp_seconds{anchor="app_cache"} 1e+06' in text

    metrics.set_anchor_status([("app_db", False, 1, None)])
    text = metrics.render().decode()
    assert 'orcastra_anchor_colocated{anchor="app_db"} 0.0' in text
    assert "app_cache" not in text


# --- listen address -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9180", ("127.0.0.1", 9180, socket.AF_INET)),
        ("0.0.0.0:0", ("0.0.0.0", 0, socket.AF_INET)),
        ("[::1]:9180", ("::1", 9180, socket.AF_INET6)),
        ("[::]:80", ("::", 80, socket.AF_INET6)),
    ],
    ids=["ipv4", "ipv4-any-port-0", "ipv6-loopback", "ipv6-any"],
)
def test_parse_listen_address(listen: str, expected: tuple[str, int, socket.AddressFamily]) -> None:
    assert parse_listen_address(listen) == expected


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("9180", "expected HOST:PORT"),
        (":9180", "expected HOST:PORT"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:70000", "port must be a number"),
        ("::1:9180", "in brackets"),
        ("[nope]:9180", "not an IPv6 address"),
    ],
    ids=["no-host", "empty-host", "named-port", "port-too-big", "bare-ipv6", "bad-ipv6"],
)
def test_parse_listen_address_rejects(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(listen)


def test_server_reports_bad_listen_as_permanent_error(metrics: Metrics, health: HealthState) -> None:
    with pytest.raises(PermanentError, match="invalid listen address"):
        ApiServer("localhost", builtin=status_routes(metrics, health))


# --- ApiServer over HTTP ------------------------------------------------------------------------------


def test_healthz_leader_with_fresh_cycle_is_ok(server: ApiServer, health: HealthState) -> None:
    health.set_role("leader")
    health.cycle_ok(time.time())
    status, headers, body = fetch(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    snap = json.loads(body)
    assert snap["status"] == "ok"
    assert snap["role"] == "leader"
    assert snap["last_error"] is None


def test_healthz_leader_with_stale_cycle_is_503(server: ApiServer, health: HealthState) -> None:
    health.set_role("leader")
    health.cycle_ok(time.time() - 2 * STALE_AFTER_SECONDS)
    health.cycle_failed(time.time(), "engine unreachable")
    status, _, body = fetch(server, "/healthz")
    assert status == 503
    snap = json.loads(body)
    assert snap["status"] == "degraded"
    assert snap["last_error"] == "engine unreachable"
    assert snap["last_good_cycle_age_seconds"] >= 2 * STALE_AFTER_SECONDS


def test_healthz_leader_without_cycle_is_503(server: ApiServer, health: HealthState) -> None:
    health.set_role("leader")
    status, _, body = fetch(server, "/healthz")
    assert status == 503
    assert json.loads(body)["last_good_cycle_age_seconds"] is None


def test_healthz_follower_is_ok(server: ApiServer, health: HealthState) -> None:
    health.set_role("follower")
    status, _, body = fetch(server, "/healthz")
    assert status == 200
    assert json.loads(body)["role"] == "follower"


def test_metrics_endpoint(server: ApiServer, metrics: Metrics) -> None:
    metrics.set_leader(True)
    metrics.observe_cycle(0.01, engine_calls=3, ok=True, now=time.time())
    metrics.set_anchor_status([("app_db", True, 0, None), ("app_old", False, 0, None)])
    metrics.set_anchor_status([("app_db", True, 0, None)])
    status, headers, body = fetch(server, "/metrics")
    text = body.decode()
    assert status == 200
    assert headers["Content-Type"] == metrics.content_type
    assert "orcastra_cycles_total" in text
    assert 'orcastra_anchor_colocated{anchor="app_db"} 1.0' in text
    assert "app_old" not in text
    assert "orcastra_leader 1.0" in text


def test_query_string_is_ignored_for_routing(server: ApiServer) -> None:
    status, _, _ = fetch(server, "/metrics?name[]=orcastra_leader")
    assert status == 200


def test_unknown_path_is_404(server: ApiServer) -> None:
    status, headers, body = fetch(server, "/nope")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize("method", ["POST", "DELETE", "HEAD"])
def test_other_methods_on_known_paths_are_405(server: ApiServer, method: str) -> None:
    status, headers, body = fetch(server, "/healthz", method=method, body=b"{}" if method == "POST" else None)
    assert status == 405
    assert headers["Allow"] == "GET"
    if method != "HEAD":
        assert json.loads(body) == {"error": "method not allowed"}


def test_requests_are_logged_at_debug(server: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="orcastra.adapters.http"):
        fetch(server, "/healthz")
    records = [r for r in caplog.records if r.name == "orcastra.adapters.http" and "GET /healthz" in r.getMessage()]
    assert records
    assert all(r.levelno == logging.DEBUG for r in records)


def test_port_in_use_is_a_permanent_error_naming_the_address(
    server: ApiServer, metrics: Metrics, health: HealthState
) -> None:
    listen = f"127.0.0.1:{server.port}"
    second = ApiServer(listen, builtin=status_routes(metrics, health))
    with pytest.raises(PermanentError, match=rf"cannot listen on {listen}: .*in use"):
        second.start()
    second.stop()  # nothing bound: must be a no-op
    # The first server is unaffected.
    assert fetch(server, "/metrics")[0] == 200


def test_stop_closes_the_socket_and_is_idempotent(metrics: Metrics, health: HealthState) -> None:
    api = ApiServer("127.0.0.1:0", builtin=status_routes(metrics, health))
    api.stop()  # before start: no-op
    api.start()
    port = api.port
    assert port != 0
    started = time.monotonic()
    api.stop()
    api.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_extra_route(metrics: Metrics, health: HealthState) -> None:
    seen: list[Request] = []

    def command(request: Request) -> Response:
        seen.append(request)
        if request.headers.get("authorization") != "Bearer s3cret":
            return json_response(401, {"error": "unauthorized"}, headers={"WWW-Authenticate": "Bearer"})
        return Response(202, b"queued\n", "text/plain")

    routes = {("POST", "/commands/resync"): command}
    with ApiServer("127.0.0.1:0", builtin=status_routes(metrics, health), routes=routes) as api:
        status, headers, _ = fetch(api, "/commands/resync", method="POST", body=b"{}")
        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"

        status, headers, body = fetch(
            api,
            "/commands/resync?x=1",
            method="POST",
            body=b'{"why": "test"}',
            headers={"Authorization": "Bearer s3cret"},
        )
        assert (status, headers["Content-Type"], body) == (202, "text/plain", b"queued\n")
        assert seen[-1].method == "POST"
        assert seen[-1].path == "/commands/resync"
        assert seen[-1].body == b'{"why": "test"}'

        status, headers, _ = fetch(api, "/commands/resync")
        assert (status, headers["Allow"]) == (405, "POST")
        # Built-in endpoints still work next to extra routes.
        assert fetch(api, "/healthz")[0] == 503


def test_failing_route_is_500_and_logged(
    metrics: Metrics, health: HealthState, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    with ApiServer("127.0.0.1:0", builtin=status_routes(metrics, health), routes={("GET", "/broken"): broken}) as api:
        status, _, body = fetch(api, "/broken")
    assert status == 500
    assert json.loads(body) == {"error": "internal error"}
    assert any(r.levelno == logging.ERROR and "GET /broken failed" in r.getMessage() for r in caplog.records)


def test_routes_may_not_replace_builtin_endpoints(metrics: Metrics, health: HealthState) -> None:
    with pytest.raises(ValueError, match="GET /healthz"):
        ApiServer(
            "127.0.0.1:0",
            builtin=status_routes(metrics, health),
            routes={("GET", "/healthz"): lambda r: json_response(200, {})},
        )


def test_oversized_body_is_refused(metrics: Metrics, health: HealthState) -> None:
    routes = {("POST", "/commands/x"): lambda r: json_response(200, {})}
    with ApiServer("127.0.0.1:0", builtin=status_routes(metrics, health), routes=routes) as api:
        # Only the header claims a large body: the server must refuse before reading, and sending no bytes
        # keeps unread data (and a TCP reset) out of the test.
        status, _, _ = fetch(api, "/commands/x", method="POST", headers={"Content-Length": str(64 * 1024 + 1)})
    assert status == 413
