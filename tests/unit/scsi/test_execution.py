"""The execution contract (odxtarget/scsi/execution.py): commands that wait for storage become
``Pending``, the task set orders them by task attribute (SAM-5 8.6), and aborts say what ran."""

from __future__ import annotations

import pytest

from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.types import TaskAttribute
from odxtarget.scsi.execution import (AbortOutcome, InlineRunner, Pending, StorageCall,
                                      complete_inline)
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status
from odxtarget.storage.memory import MemoryBackend

NEXUS = ItNexus("iqn.2026-12.org.example:a,i,0x1", "iqn.2026-12.org.example:t,t,0x1")
BLOCK = 512


def write10(lba: int, blocks: int = 1, fua: bool = False) -> bytes:
    return bytes([0x2A, 0x08 if fua else 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


def read10(lba: int, blocks: int = 1) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


SYNCHRONIZE_CACHE_10 = bytes([0x35]) + bytes(9)
TEST_UNIT_READY = bytes(6)


class SlowMemory(MemoryBackend):
    """A memory backend whose cached reads 'miss', so reads wait for storage work too."""

    def try_read_into(self, offset, buf):
        return False


@pytest.fixture
def target() -> ScsiTarget:
    lu = LogicalUnit(LogicalUnitConfig(name="lu", backend=SlowMemory(64 * BLOCK)))
    target = ScsiTarget("iqn.2026-12.org.example:t", {0: lu})
    complete_inline(target.execute(ScsiCommand(TEST_UNIT_READY, NEXUS)))     # the power-on unit attention
    return target


def command(cdb: bytes, data: bytes = b"", attribute: TaskAttribute = TaskAttribute.SIMPLE, tag: int = 0):
    return ScsiCommand(cdb, NEXUS, 0, data, len(data), tag, int(attribute))


def test_a_command_without_storage_work_answers_at_once(target):
    outcome = target.execute(command(TEST_UNIT_READY))
    assert isinstance(outcome, ScsiResult) and outcome.status == Status.GOOD


def test_a_write_hands_its_storage_work_to_the_front_end(target):
    pending = target.execute(command(write10(3), b"w" * BLOCK))
    assert isinstance(pending, Pending) and not pending.queued and pending.result is None
    assert isinstance(pending.work, StorageCall)
    assert target.logical_unit(0).backend._data[3 * BLOCK:4 * BLOCK] == bytes(BLOCK)   # nothing written yet
    pending.resume(pending.work.run())
    assert pending.result.status == Status.GOOD and pending.work is None
    assert target.logical_unit(0).backend._data[3 * BLOCK:4 * BLOCK] == b"w" * BLOCK


def test_a_storage_error_thrown_into_the_command_becomes_its_sense(target):
    pending = target.execute(command(read10(0)))
    pending.fail(OSError(5, "EIO"))
    result = pending.result
    assert result.status == Status.CHECK_CONDITION
    assert (result.sense[2] & 0x0F, result.sense[12], result.sense[13]) == (0x03, 0x11, 0x00)


def test_simple_tasks_run_side_by_side(target):
    first = target.execute(command(write10(0), b"a" * BLOCK))
    second = target.execute(command(write10(1), b"b" * BLOCK))
    assert not first.queued and not second.queued
    assert target.logical_unit(0).task_set.running == 2


def test_an_ordered_task_waits_for_older_tasks_and_holds_back_newer_ones(target):
    task_set = target.logical_unit(0).task_set
    older = target.execute(command(write10(0), b"a" * BLOCK))
    ordered = target.execute(command(SYNCHRONIZE_CACHE_10, attribute=TaskAttribute.ORDERED))
    newer = target.execute(command(write10(1), b"b" * BLOCK))
    assert ordered.queued and newer.queued and task_set.take_ready() == []
    older.resume(older.work.run())                       # the older task ends ...
    assert task_set.take_ready() == [ordered]            # ... so the ORDERED one may start, alone
    ordered.start()
    assert task_set.take_ready() == []
    ordered.resume(ordered.work.run())
    assert ordered.result.status == Status.GOOD
    assert task_set.take_ready() == [newer]
    newer.start()
    newer.resume(newer.work.run())
    assert newer.result.status == Status.GOOD


def test_head_of_queue_runs_past_everything(target):
    target.execute(command(write10(0), b"a" * BLOCK))
    target.execute(command(SYNCHRONIZE_CACHE_10, attribute=TaskAttribute.ORDERED))
    head = target.execute(command(read10(0), attribute=TaskAttribute.HEAD_OF_QUEUE))
    assert isinstance(head, Pending) and not head.queued


def test_gates_run_when_a_queued_task_starts(target):
    """A queued task sees the unit attention established while it waited (SAM-5 5.14)."""
    lu = target.logical_unit(0)
    older = target.execute(command(write10(0), b"a" * BLOCK))
    ordered = target.execute(command(read10(0), attribute=TaskAttribute.ORDERED))
    lu.establish_unit_attention(Ascq.MODE_PARAMETERS_CHANGED)
    older.resume(older.work.run())
    lu.task_set.take_ready()
    ordered.start()
    assert ordered.result.status == Status.CHECK_CONDITION and ordered.result.sense[12] == 0x2A


def test_aborting_a_queued_task_means_it_never_ran(target):
    lu = target.logical_unit(0)
    older = target.execute(command(write10(0), b"a" * BLOCK))
    queued = target.execute(command(write10(5), b"q" * BLOCK, attribute=TaskAttribute.ORDERED))
    assert queued.abort() is AbortOutcome.NEVER_STARTED
    older.resume(older.work.run())
    assert lu.task_set.take_ready() == [] and lu.task_set.running == 0
    assert lu.backend._data[5 * BLOCK:6 * BLOCK] == bytes(BLOCK)


def test_aborting_a_task_whose_work_runs_lets_that_work_finish_then_stops(target):
    lu = target.logical_unit(0)
    pending = target.execute(command(write10(2), b"z" * BLOCK))
    assert pending.abort() is AbortOutcome.FINISHING
    pending.resume(pending.work.run())                    # the worker returns: the write is whole
    assert pending.result is None and pending.work is None and lu.task_set.running == 0
    assert lu.backend._data[2 * BLOCK:3 * BLOCK] == b"z" * BLOCK


def test_aborting_between_steps_stops_the_rest():
    """A multi-step command (WRITE SAME in 1 MiB pieces) aborted while a piece runs does that
    piece and no more."""
    lu = LogicalUnit(LogicalUnitConfig(name="big", backend=SlowMemory(8 << 20)))
    target = ScsiTarget("iqn.2026-12.org.example:t", {0: lu})
    complete_inline(target.execute(ScsiCommand(TEST_UNIT_READY, NEXUS)))
    blocks = (3 << 20) // BLOCK
    write_same_16 = bytes([0x93, 0]) + (0).to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)
    pending = target.execute(command(write_same_16, b"\xee" * BLOCK))
    pending.resume(pending.work.run())                    # the first MiB
    assert pending.abort() is AbortOutcome.FINISHING
    pending.resume(pending.work.run())                    # the second MiB was already on a worker
    assert pending.result is None and pending.work is None
    data = lu.backend._data
    assert data[:2 << 20] == b"\xee" * (2 << 20) and data[2 << 20:3 << 20] == bytes(1 << 20)


def test_inline_runner_runs_a_command_to_its_end(target):
    results = []
    InlineRunner().run(target.execute(command(write10(7), b"i" * BLOCK)), results.append)
    assert results[0].status == Status.GOOD
    assert target.logical_unit(0).backend._data[7 * BLOCK:8 * BLOCK] == b"i" * BLOCK
