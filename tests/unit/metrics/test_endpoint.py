"""The HTTP endpoint (odxtarget/metrics/endpoint.py): serves scrapes on its own thread, only
GET of /metrics, binds only the configured address, a port in use is one clear line."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter

from odxtarget.config import DaemonConfig, MetricsConfig
from odxtarget.metrics import MetricsEndpoint, MetricsEndpointError, start_endpoint
from odxtarget.metrics.endpoint import MIN_RENDER_INTERVAL_SECONDS
from tests.unit.metrics.scrape import parse_exposition, value

LOOPBACK = "127.0.0.1"


def request(endpoint: MetricsEndpoint, method: str = "GET", path: str = "/metrics",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(endpoint.ip, endpoint.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def endpoint():
    registry = CollectorRegistry()
    counter = Counter("odxtarget_test_events", "Events of the test.", registry=registry)
    counter.inc(3)
    served = MetricsEndpoint(registry, LOOPBACK, 0)
    served.start()
    yield served
    served.close()


def test_get_metrics_serves_the_registry_in_text_format(endpoint):
    assert endpoint.port != 0 and endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
    status, headers, body = request(endpoint)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert value(parse_exposition(body.decode()), "odxtarget_test_events_total") == 3
    status, _, root = request(endpoint, path="/")
    assert status == 200 and b"odxtarget_test_events_total 3.0" in root


def test_scrapes_within_the_render_interval_get_the_same_text():
    registry = CollectorRegistry()
    counter = Counter("odxtarget_test_events", "Events of the test.", registry=registry)
    now = [50.0]
    endpoint = MetricsEndpoint(registry, LOOPBACK, 0, clock=lambda: now[0])
    endpoint.start()
    try:
        def events() -> float:
            status, headers, body = request(endpoint)
            assert status == 200 and int(headers["Content-Length"]) == len(body)
            return value(parse_exposition(body.decode()), "odxtarget_test_events_total")

        assert events() == 0
        counter.inc(5)
        now[0] += MIN_RENDER_INTERVAL_SECONDS / 2
        assert events() == 0                      # rendered half an interval ago: served again
        now[0] += MIN_RENDER_INTERVAL_SECONDS / 2
        assert events() == 5                      # a whole interval later: rendered anew
    finally:
        endpoint.close()


@pytest.mark.parametrize("path", ["/admin", "/metrics/../etc/passwd", "/favicon.ico"])
def test_other_paths_are_not_found(endpoint, path):
    status, _, body = request(endpoint, path=path)
    assert status == 404 and b"odxtarget_test_events" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_other_methods_are_refused(endpoint, method):
    status, headers, _ = request(endpoint, method)
    assert status == 405 and headers["Allow"] == "GET"


def test_garbage_requests_do_not_stop_the_endpoint(endpoint):
    for junk in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b""):
        with socket.create_connection((endpoint.ip, endpoint.port), timeout=10) as raw:
            raw.sendall(junk)
            raw.shutdown(socket.SHUT_WR)
            raw.recv(4096)
    status, _, _ = request(endpoint)
    assert status == 200


def test_the_endpoint_listens_only_on_the_configured_address(endpoint):
    assert endpoint._server.socket.getsockname()[0] == LOOPBACK
    other = [address for address in _host_addresses() if address != LOOPBACK and not address.startswith("127.")]
    for address in other:
        with pytest.raises(OSError):
            socket.create_connection((address, endpoint.port), timeout=2).close()


def _host_addresses() -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)})
    except OSError:
        return []


def test_a_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = MetricsEndpoint(CollectorRegistry(), LOOPBACK, port)
        with pytest.raises(MetricsEndpointError) as failure:
            endpoint.start()
    assert str(failure.value) == f"metrics endpoint 127.0.0.1:{port}: cannot listen: the port is already in use"


def test_an_address_of_another_host_is_one_clear_line():
    endpoint = MetricsEndpoint(CollectorRegistry(), "192.0.2.1", 9796)     # TEST-NET-1: not ours
    with pytest.raises(MetricsEndpointError) as failure:
        endpoint.start()
    assert str(failure.value).startswith("metrics endpoint 192.0.2.1:9796: cannot listen: ")
    assert "\n" not in str(failure.value)


def test_close_releases_the_port_and_stops_the_thread():
    endpoint = MetricsEndpoint(CollectorRegistry(), LOOPBACK, 0)
    endpoint.start()
    port = endpoint.port
    endpoint.close()
    endpoint.close()                                               # idempotent
    assert not [t for t in threading.enumerate() if t.name == "odxtarget-metrics"]
    again = MetricsEndpoint(CollectorRegistry(), LOOPBACK, port)
    again.start()
    again.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    endpoint = MetricsEndpoint(CollectorRegistry(), "::1", 0)
    try:
        endpoint.start()
    except MetricsEndpointError as error:
        pytest.skip(f"no ::1 here: {error}")
    try:
        assert endpoint.url == f"http://[::1]:{endpoint.port}/metrics"
        assert request(endpoint)[0] == 200
    finally:
        endpoint.close()


def test_start_endpoint_serves_the_daemon_and_the_process():
    class Idle:
        config = DaemonConfig()
        logical_units: dict = {}
        copy_manager = None
        server = None

    endpoint = start_endpoint(Idle(), MetricsConfig(LOOPBACK, 0))
    try:
        samples = parse_exposition(request(endpoint)[2].decode())
    finally:
        endpoint.close()
    assert ("odxtarget_build_info" in {name for name, _ in samples})
    assert value(samples, "process_cpu_seconds_total") >= 0
