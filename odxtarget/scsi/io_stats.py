"""Per logical unit I/O statistics: READ and WRITE commands and bytes, and command latency.

Theory of operation
-------------------
The dispatcher (``dispatch.execute``) stamps a command with ``IoStats.clock()`` when the
logical unit receives it (all of its data-out has arrived) and calls ``IoStats.record`` once
its status is known -- at once for a command that needed no storage work, from
``Pending.finish`` for one that waited for storage or for older tasks (SAM-5 8.6). The
latency is therefore the device server's share of a command: task set queueing plus storage
work, without the network transfer of its data. Aborted commands (SAM-5 7.2) have no status
and are not recorded.

Everything here is plain integers and lists updated on the core's one thread: recording a
command costs well under a microsecond, which the daemon's per-command budget affords. A
metrics exporter (``odxtarget.metrics``) reads the fields from another thread at scrape time;
it copies ``LatencyHistogram.counts`` in one ``list`` call, so a scrape sees whole
observations (its ``sum`` may lag by the commands recorded meanwhile).

What counts (docs/metrics.md): READ(6/10/12/16) are reads; WRITE(6/10/12/16) and WRITE AND
VERIFY(10/12/16) are writes (SBC-4 5.x); bytes are the ``transfer_length`` of those that
ended GOOD. Every other command is only timed, as "other".
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

from odxtarget.scsi.constants import Opcode
from odxtarget.scsi.types import ScsiResult, Status

#: Upper bounds, in seconds, of the latency buckets: 1-2.5-5 steps from 50 us (a cached read)
#: to 10 s (a stalled disk or a large WRITE USING TOKEN); slower commands land in +Inf.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005,
                   0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)

#: Command kinds, the index of a command's latency histogram in ``IoStats.latency``.
OTHER, READ, WRITE = 0, 1, 2
KIND_NAMES = ("other", "read", "write")

READ_OPCODES = (Opcode.READ_6, Opcode.READ_10, Opcode.READ_12, Opcode.READ_16)
WRITE_OPCODES = (Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16,
                 Opcode.WRITE_AND_VERIFY_10, Opcode.WRITE_AND_VERIFY_12, Opcode.WRITE_AND_VERIFY_16)


def _kind_by_opcode() -> bytes:
    table = bytearray(256)
    for opcode in READ_OPCODES:
        table[opcode] = READ
    for opcode in WRITE_OPCODES:
        table[opcode] = WRITE
    return bytes(table)


#: Operation code -> command kind, one index per command.
KIND_BY_OPCODE = _kind_by_opcode()
_GOOD = int(Status.GOOD)


class LatencyHistogram:
    """Observation counts per bucket of ``bounds`` (the last one +Inf) and their sum.

    ``counts`` are per bucket, not cumulative: ``observe`` is one ``bisect`` and two adds.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS):
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds must be distinct and increasing, got {bounds!r}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation in the first bucket whose bound it does not exceed."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> tuple[list[tuple[float, int]], int, float]:
        """``([(bound, observations <= bound), ..., (inf, total)], total, sum)`` from one copy
        of the counts: the shape of a Prometheus histogram."""
        counts = list(self.counts)
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), counts):
            total += count
            buckets.append((bound, total))
        return buckets, total, self.sum


class IoStats:
    """One logical unit's counters (module docstring)."""

    __slots__ = ("read_commands", "read_bytes", "write_commands", "write_bytes", "latency", "clock")

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.read_commands = 0
        self.read_bytes = 0
        self.write_commands = 0
        self.write_bytes = 0
        #: One histogram per command kind, indexed by ``OTHER``, ``READ``, ``WRITE``.
        self.latency = (LatencyHistogram(), LatencyHistogram(), LatencyHistogram())
        #: Seconds from an arbitrary origin; only differences are used.
        self.clock = clock

    def record(self, cdb: bytes, result: ScsiResult, received: float) -> None:
        """A command received at ``received`` (``clock()``) ended with ``result``."""
        seconds = self.clock() - received
        kind = KIND_BY_OPCODE[cdb[0]] if cdb else OTHER
        if kind:
            good = result.status == _GOOD
            if kind == READ:
                self.read_commands += 1
                if good:
                    self.read_bytes += result.transfer_length
            else:
                self.write_commands += 1
                if good:
                    self.write_bytes += result.transfer_length
        histogram = self.latency[kind]          # LatencyHistogram.observe, inlined: once per command
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds
