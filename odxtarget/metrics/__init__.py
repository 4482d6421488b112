"""The Prometheus metrics endpoint (docs/metrics.md), served when the configuration has a
``metrics`` section.

One concept per module:

* ``collector``: what a scrape reports, read from the running daemon at scrape time;
* ``endpoint``: the HTTP server that answers scrapes, on a thread of its own.

The SCSI core and the copy manager keep plain integer counters (``odxtarget.scsi.io_stats``,
``odxtarget.copy.counters``) and never import prometheus_client; only this package does.
"""

from odxtarget.metrics.collector import DaemonCollector, MetricsSource
from odxtarget.metrics.endpoint import MetricsEndpoint, MetricsEndpointError, start_endpoint

__all__ = ["DaemonCollector", "MetricsEndpoint", "MetricsEndpointError", "MetricsSource", "start_endpoint"]
