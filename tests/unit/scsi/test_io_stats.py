"""Per-LU I/O statistics (odxtarget/scsi/io_stats.py): the latency histogram's buckets, and what
the dispatcher records for commands that end at once, after storage work, queued, or aborted."""

from __future__ import annotations

import pytest

from odxtarget.scsi.execution import Pending, complete_inline
from odxtarget.scsi.io_stats import LATENCY_BUCKETS, OTHER, READ, WRITE, IoStats, LatencyHistogram
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status, TaskAttribute
from odxtarget.storage.memory import MemoryBackend

NEXUS = ItNexus("iqn.2026-12.org.example:a,i,0x1", "iqn.2026-12.org.example:t,t,0x1")
BLOCK = 512


# -- the histogram ---------------------------------------------------------------------------

def test_buckets_span_50_microseconds_to_10_seconds():
    assert LATENCY_BUCKETS[0] == 0.00005 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_an_observation_counts_in_every_bucket_whose_bound_it_does_not_exceed():
    histogram = LatencyHistogram((0.001, 0.01, 0.1))
    for seconds in (0.0005, 0.001, 0.002, 0.05, 0.1, 3.0):
        histogram.observe(seconds)
    buckets, total, seconds_sum = histogram.cumulative()
    # le is inclusive (Prometheus): 0.001 falls in le="0.001", 0.1 in le="0.1".
    assert buckets == [(0.001, 2), (0.01, 3), (0.1, 5), (float("inf"), 6)]
    assert total == 6
    assert seconds_sum == pytest.approx(0.0005 + 0.001 + 0.002 + 0.05 + 0.1 + 3.0)


def test_an_empty_histogram_has_zero_everywhere():
    buckets, total, seconds_sum = LatencyHistogram().cumulative()
    assert [count for _, count in buckets] == [0] * (len(LATENCY_BUCKETS) + 1)
    assert (total, seconds_sum) == (0, 0.0)


@pytest.mark.parametrize("bounds", [(), (0.1, 0.01), (0.1, 0.1)])
def test_bounds_must_be_increasing(bounds):
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram(bounds)


# -- what the dispatcher records ---------------------------------------------------------------

class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowMemory(MemoryBackend):
    """Cached reads 'miss', so reads wait for storage work like writes."""

    def try_read_into(self, offset, buf):
        return False


def cdb10(opcode: int, lba: int, blocks: int) -> bytes:
    return bytes([opcode, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


def cdb16(opcode: int, lba: int, blocks: int) -> bytes:
    return bytes([opcode, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"


@pytest.fixture
def setup():
    lu = LogicalUnit(LogicalUnitConfig(name="lu", backend=SlowMemory(64 * BLOCK)))
    target = ScsiTarget("iqn.2026-12.org.example:t", {0: lu})
    complete_inline(target.execute(ScsiCommand(bytes(6), NEXUS)))     # the power-on unit attention
    clock = Clock()
    lu.io_stats = IoStats(clock)
    return target, lu, clock


def run(target, cdb: bytes, data: bytes = b"", attribute=TaskAttribute.SIMPLE) -> ScsiResult | Pending:
    return target.execute(ScsiCommand(cdb, NEXUS, 0, data, len(data), 0, int(attribute)))


def counts(histogram: LatencyHistogram) -> dict[float, int]:
    """Observations per bucket bound (non-cumulative), only the buckets that have some."""
    return {bound: count for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts) if count}


def test_a_write_counts_when_its_storage_work_is_done_with_its_latency(setup):
    target, lu, clock = setup
    pending = run(target, cdb10(0x2A, 2, 4), b"w" * 4 * BLOCK)
    assert isinstance(pending, Pending)
    assert lu.io_stats.write_commands == 0            # not ended yet
    clock.now += 0.003
    pending.resume(pending.work.run())
    stats = lu.io_stats
    assert (stats.write_commands, stats.write_bytes, stats.read_commands, stats.read_bytes) == (1, 4 * BLOCK, 0, 0)
    assert counts(stats.latency[WRITE]) == {0.005: 1}
    assert stats.latency[WRITE].sum == pytest.approx(0.003)


def test_reads_of_every_cdb_size_count_their_bytes(setup):
    target, lu, clock = setup
    for cdb in (bytes([0x08, 0, 0, 1, 2, 0]), cdb10(0x28, 0, 3), bytes([0xA8, 0]) + (0).to_bytes(4, "big")
                + (1).to_bytes(4, "big") + b"\0\0", cdb16(0x88, 0, 5)):
        complete_inline(run(target, cdb))
    stats = lu.io_stats
    assert stats.read_commands == 4
    assert stats.read_bytes == (2 + 3 + 1 + 5) * BLOCK
    assert stats.latency[READ].counts[0] == 4          # the clock did not move: the first bucket


def test_a_failed_read_counts_as_a_command_but_moves_no_bytes(setup):
    target, lu, clock = setup
    result = run(target, cdb10(0x28, 63, 2))           # past the last block: LBA OUT OF RANGE at once
    assert isinstance(result, ScsiResult) and result.status == Status.CHECK_CONDITION
    assert (lu.io_stats.read_commands, lu.io_stats.read_bytes) == (1, 0)
    pending = run(target, cdb10(0x28, 0, 1))
    pending.fail(OSError(5, "EIO"))                     # MEDIUM ERROR after storage work
    assert pending.result.status == Status.CHECK_CONDITION
    assert (lu.io_stats.read_commands, lu.io_stats.read_bytes) == (2, 0)


def test_write_and_verify_is_a_write_and_other_commands_are_only_timed(setup):
    target, lu, clock = setup
    complete_inline(run(target, cdb10(0x2E, 0, 1), b"v" * BLOCK))         # WRITE AND VERIFY(10), BYTCHK 0
    complete_inline(run(target, bytes(6)))                                 # TEST UNIT READY
    complete_inline(run(target, bytes([0x35]) + bytes(9)))                 # SYNCHRONIZE CACHE(10)
    stats = lu.io_stats
    assert (stats.write_commands, stats.write_bytes) == (1, BLOCK)
    assert sum(stats.latency[OTHER].counts) == 2
    assert stats.read_commands == 0


def test_a_queued_task_is_timed_from_when_it_was_received(setup):
    target, lu, clock = setup
    first = run(target, cdb10(0x2A, 0, 1), b"a" * BLOCK)
    clock.now += 0.0001
    ordered = run(target, cdb10(0x2A, 1, 1), b"b" * BLOCK, TaskAttribute.ORDERED)
    assert ordered.queued
    clock.now += 0.02
    first.resume(first.work.run())
    (ready,) = lu.task_set.take_ready()
    ready.start()
    clock.now += 0.0004
    ready.resume(ready.work.run())
    assert lu.io_stats.write_commands == 2
    # the first took 20.1 ms, the queued one 20.4 ms from its arrival
    assert counts(lu.io_stats.latency[WRITE]) == {0.025: 2}
    assert lu.io_stats.latency[WRITE].sum == pytest.approx(0.0201 + 0.0204)


def test_an_aborted_command_is_not_recorded(setup):
    target, lu, clock = setup
    pending = run(target, cdb10(0x2A, 0, 1), b"x" * BLOCK)
    pending.abort()
    pending.resume(pending.work.run())                 # the running step finishes, then it stops
    assert pending.result is None
    assert lu.io_stats.write_commands == 0
    assert sum(lu.io_stats.latency[WRITE].counts) == 0


def test_a_lun_without_a_logical_unit_records_nothing(setup):
    target, lu, clock = setup
    result = target.execute(ScsiCommand(cdb10(0x28, 0, 1), NEXUS, 5, b"", 0))
    assert result.status == Status.CHECK_CONDITION
    assert lu.io_stats.read_commands == 0
