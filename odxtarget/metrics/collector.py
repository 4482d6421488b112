"""What a scrape reports: the daemon's counters turned into Prometheus metric families.

Theory of operation
-------------------
Nothing here runs per command. The core counts in plain integers on the event loop's thread
(``LogicalUnit.io_stats``, the copy manager's ``CopyCounters``, the iSCSI ``Admission``);
``DaemonCollector.collect`` reads them on the endpoint's thread when a scrape arrives, through
the live daemon (``MetricsSource``), so logical units and targets added or removed by the
admin interface appear and go without any registration.

Reading from another thread is safe without locks because every read is either one attribute
(an int) or one copy of a dict or list made by a builtin (``list(...)``, ``dict(...)``,
``sorted(...)``), which the interpreter does without running other threads' bytecode in
between; a scrape may see some counters one command apart, never a torn value.

Series and labels are in docs/metrics.md. Label values come from the configuration (storage
object, target and LUN names), from fixed vocabularies (command kinds, copy methods, login
status names) or from sense data (at most 16 x 256 x 256 codes, in practice a handful), so
their number stays bounded whatever initiators send.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, Metric)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from odxtarget import __version__
from odxtarget.config import DaemonConfig
from odxtarget.frontend import Frontend, LiveFrontend
from odxtarget.scsi.io_stats import KIND_NAMES
from odxtarget.storage.copy_strategies import CopyMethod

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.copy.manager import CopyManager
    from odxtarget.scsi.lu import LogicalUnit

#: The copy commands the copy manager counts (``CopyCounters.as_dict()["commands"]``).
ODX_COMMANDS = ("populate_token", "write_using_token", "extended_copy")


class MetricsSource(Protocol):
    """What the collector reads of the daemon (``odxtarget.daemon.Daemon``), at every scrape."""

    config: DaemonConfig
    logical_units: dict[str, "LogicalUnit"]
    copy_manager: "CopyManager | None"
    server: Frontend | None


class DaemonCollector(Collector):
    """The ``odxtarget_*`` series of one daemon (docs/metrics.md)."""

    def __init__(self, daemon: MetricsSource):
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        build = InfoMetricFamily("odxtarget_build", "The odxtarget version serving.")
        build.add_metric([], {"version": __version__})
        yield build
        yield from self.logical_unit_metrics()
        yield self.lun_info()
        yield from self.odx_metrics()
        yield from self.iscsi_metrics()

    # -- logical units --------------------------------------------------------------------------

    def logical_unit_metrics(self) -> Iterator[Metric]:
        labels = ["storage_object", "op"]
        commands = CounterMetricFamily(
            "odxtarget_lu_commands", "READ and WRITE commands that ended, with any status.", labels=labels)
        transferred = CounterMetricFamily(
            "odxtarget_lu_bytes", "Bytes read or written by READ and WRITE commands that ended GOOD.",
            labels=labels, unit="bytes")
        latency = HistogramMetricFamily(
            "odxtarget_lu_command_duration", "Time from the logical unit receiving a command (its data-out"
            " included) to its status, by kind: read, write or other.", labels=labels, unit="seconds")
        for name, lu in sorted(list(self.daemon.logical_units.items())):
            stats = lu.io_stats
            commands.add_metric([name, "read"], stats.read_commands)
            commands.add_metric([name, "write"], stats.write_commands)
            transferred.add_metric([name, "read"], stats.read_bytes)
            transferred.add_metric([name, "write"], stats.write_bytes)
            for kind, histogram in enumerate(stats.latency):
                buckets, _, total_seconds = histogram.cumulative()
                latency.add_metric([name, KIND_NAMES[kind]],
                                   [(floatToGoString(bound), count) for bound, count in buckets], total_seconds)
        yield commands
        yield transferred
        yield latency

    def lun_info(self) -> Metric:
        """Which storage object each target shows at each LUN, to join per-LU series with."""
        info = InfoMetricFamily("odxtarget_lun", "A LUN of a target and the storage object it maps.",
                                labels=["target", "lun", "storage_object"])
        for target in list(self.daemon.config.targets):
            for mapping in list(target.luns):
                info.add_metric([target.iqn, str(mapping.lun), mapping.storage_object], {})
        return info

    # -- ODX (docs/odx.md) ---------------------------------------------------------------------

    def odx_metrics(self) -> Iterator[Metric]:
        manager = self.daemon.copy_manager
        commands = CounterMetricFamily(
            "odxtarget_odx_commands", "Copy commands received (POPULATE TOKEN, WRITE USING TOKEN,"
            " EXTENDED COPY), whatever their outcome.", labels=["storage_object", "command"])
        tokens = CounterMetricFamily("odxtarget_odx_tokens_created", "ROD tokens created by POPULATE TOKEN.",
                                     labels=["storage_object"])
        moved = CounterMetricFamily(
            "odxtarget_odx_bytes", "Bytes copied by the copy manager into a logical unit, by how they"
            " moved: reflink, copy_file_range, read_write or zero.", labels=["storage_object", "method"],
            unit="bytes")
        failures = CounterMetricFamily(
            "odxtarget_odx_failures", "Copy commands that failed, by sense key/ASC/ASCQ in hex"
            ' ("5/26/00": ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST).', labels=["storage_object", "sense"])
        per_lu = manager.all_counters() if manager is not None else {}
        for name, counters in per_lu.items():
            for command in ODX_COMMANDS:
                commands.add_metric([name, command], counters["commands"][command])
            tokens.add_metric([name], counters["tokens_created"])
            by_method = counters["bytes"]
            for method in CopyMethod:
                moved.add_metric([name, method.value], by_method.get(method.value, 0))
            for sense, count in counters["failures"].items():
                failures.add_metric([name, sense], count)
        yield commands
        yield tokens
        yield moved
        yield failures

    # -- iSCSI sessions and logins (native front end) --------------------------------------------

    def iscsi_metrics(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("odxtarget_iscsi_sessions", "Logged-in normal iSCSI sessions per target.",
                                     labels=["target"])
        refused = CounterMetricFamily(
            "odxtarget_iscsi_login_failures", "Logins refused, by Login Response status (RFC 7143 11.13.5):"
            " authentication_failure, authorization_failure, not_found, out_of_resources, ...",
            labels=["reason"])
        server = self.daemon.server
        if isinstance(server, LiveFrontend):
            registry = server.registry
            counts = {target.iqn: 0 for target in list(self.daemon.config.targets)}
            for session in registry.sessions():
                if session.target_name is not None and session.scsi_target is not None and not session.closed:
                    counts[session.target_name] = counts.get(session.target_name, 0) + 1
            for target, count in sorted(counts.items()):
                sessions.add_metric([target], count)
            for reason, count in sorted(dict(registry.admission.refused_logins).items()):
                refused.add_metric([reason], count)
        yield sessions
        yield refused
