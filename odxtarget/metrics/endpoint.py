"""The HTTP server that answers Prometheus scrapes: ``GET /metrics`` on the configured address.

Theory of operation
-------------------
The server runs on a thread of its own, so a scrape never waits for the event loop and the
event loop never waits for a scrape; the collector reads the daemon's counters from that
thread (``collector``). Whoever reaches the address may scrape, so the server is built for
an untrusted peer (docs/metrics.md, "Security"):

* it only reads: ``GET /metrics`` (or ``GET /``) is answered, any other path is 404 and any
  other method 405; nothing a request says changes the daemon;
* it binds the configured address only (a loopback one by default);
* it answers one request at a time, and a connection that sends nothing for
  ``REQUEST_TIMEOUT_SECONDS`` is closed: a peer holding connections open delays other
  scrapes, never commands, and costs no thread or buffer per connection. The request line and
  headers are bounded by ``http.server`` (64 KiB, 100 headers);
* the text is rendered at most once per ``MIN_RENDER_INTERVAL_SECONDS`` and served again to
  the scrapes in between: rendering holds the interpreter for about a millisecond per storage
  object, so a peer scraping in a loop takes at most that much per interval from the event
  loop's thread.

The text is prometheus_client's (``generate_latest``, the text exposition format 0.0.4); the
server is the standard library's ``wsgiref``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from odxtarget.config import MetricsConfig
from odxtarget.metrics.collector import DaemonCollector, MetricsSource

log = logging.getLogger("odxtarget.metrics")

#: A connection that sends no complete request within this many seconds is closed.
REQUEST_TIMEOUT_SECONDS = 5.0
#: The paths a scrape may ask for.
METRICS_PATHS = ("/metrics", "/")
#: Scrapes within this many seconds of a rendering get that rendering again.
MIN_RENDER_INTERVAL_SECONDS = 1.0

StartResponse = Callable[..., object]


class MetricsEndpointError(Exception):
    """The endpoint cannot listen (address in use, not an address of this host): one line."""


class _QuietRequestHandler(WSGIRequestHandler):
    """Requests are logged at debug level, not on stderr; idle connections time out."""

    timeout = REQUEST_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        log.debug("metrics %s: %s", self.address_string(), format % args)


class _MetricsServer(WSGIServer):
    """``wsgiref``'s server for one IPv4 or IPv6 address, with no reverse DNS lookup of it."""

    def __init__(self, ip: str, port: int):
        self.address_family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        super().__init__((ip, port), _QuietRequestHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class Exposition:
    """The WSGI application: GET of ``METRICS_PATHS`` gets ``registry`` in the text format,
    rendered at most once per ``min_interval`` seconds; anything else is refused."""

    def __init__(self, registry: CollectorRegistry, min_interval: float = MIN_RENDER_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.min_interval = min_interval
        self.clock = clock
        self._rendered_at: float | None = None
        self._text = b""

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in METRICS_PATHS:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        if environ.get("REQUEST_METHOD") != "GET":
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET")])
            return [b"method not allowed\n"]
        text = self.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(text)))])
        return [text]

    def render(self) -> bytes:
        now = self.clock()
        if self._rendered_at is None or now - self._rendered_at >= self.min_interval:
            self._text = generate_latest(self.registry)
            self._rendered_at = now
        return self._text


class MetricsEndpoint:
    """Serves ``registry`` at ``http://ip:port/metrics`` until ``close``."""

    def __init__(self, registry: CollectorRegistry, ip: str, port: int, *,
                 min_interval: float = MIN_RENDER_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.application = Exposition(registry, min_interval, clock)
        self.ip = ip
        self.requested_port = port
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port served (the one the kernel chose when the configuration said 0)."""
        return self._server.server_address[1] if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises:
            MetricsEndpointError: the address cannot be bound.
        """
        try:
            server = _MetricsServer(self.ip, self.requested_port)
        except OSError as error:
            reason = ("the port is already in use" if error.errno == errno.EADDRINUSE
                      else error.strerror or str(error))
            raise MetricsEndpointError(
                f"metrics endpoint {self.ip}:{self.requested_port}: cannot listen: {reason}") from None
        server.set_app(self.application)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="odxtarget-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port; waits for a scrape in progress. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def start_endpoint(daemon: MetricsSource, metrics: MetricsConfig) -> MetricsEndpoint:
    """Serve ``daemon``'s metrics, and the process' own (CPU, memory, open files), as
    ``metrics`` says.

    Raises:
        MetricsEndpointError: the address cannot be bound.
    """
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    ProcessCollector(registry=registry)
    endpoint = MetricsEndpoint(registry, metrics.ip, metrics.port)
    endpoint.start()
    log.info("serving metrics on %s", endpoint.url)
    return endpoint
