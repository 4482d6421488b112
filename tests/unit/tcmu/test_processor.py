"""The real SCSI core (ScsiTarget/LogicalUnit, real storage workers) behind the simulated kernel."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from odxtarget.scsi.execution import AbortOutcome, Pending, TaskAttribute
from odxtarget.scsi.types import ScsiCommand
from odxtarget.transport.tcmu import processor as processor_module
from odxtarget.transport.tcmu import ring as r
from odxtarget.transport.tcmu.processor import lu_nexus
from tests.unit.tcmu.rig import (BLOCK, CHECK, GOOD, LU_BYTES, TASK_ABORTED, TUR, Rig, inquiry, read10,
                                 sense_key_asc, write10, write_and_verify10)
from tests.unit.tcmu.simulated_kernel import BLOCK_SIZE, STALE_BYTE


@pytest.fixture
def rig():
    rig = Rig()
    rig.clear_power_on_attention()
    yield rig
    rig.close()


def test_first_command_reports_power_on_unit_attention_with_sense_through_the_ring():
    rig = Rig()
    try:
        completion = rig.run(TUR)
        assert completion.status == CHECK
        assert sense_key_asc(completion.sense) == (6, 0x29, 0x00)
        assert rig.run(TUR).status == GOOD
    finally:
        rig.close()


def test_write_then_read_round_trips_through_the_data_area(rig):
    data = bytes(range(256)) * 32                     # 8 KiB = 16 blocks
    assert rig.run(write10(100, 16), data_out=data).status == GOOD
    assert rig.backend._data[100 * BLOCK:100 * BLOCK + len(data)] == data
    completion = rig.run(read10(100, 16), data_in_length=len(data))
    assert completion.status == GOOD and completion.data_in == data
    assert completion.read_len is None                # full length: no READ_LEN needed


def test_scattered_iovecs_for_write_and_read(rig):
    rig.kernel.free_blocks = [0, 2, 4, 6, 8, 10]
    data = bytes([7]) * (3 * BLOCK_SIZE)
    assert rig.run(write10(8, 3 * BLOCK_SIZE // BLOCK), data_out=data).status == GOOD
    assert rig.backend._data[8 * BLOCK:8 * BLOCK + len(data)] == data
    rig.kernel.free_blocks = [1, 3, 5, 7, 9, 11]
    completion = rig.run(read10(8, 3 * BLOCK_SIZE // BLOCK), data_in_length=len(data))
    assert completion.data_in == data


def test_short_data_in_uses_read_len_and_leaks_no_stale_bytes(rig):
    rig.run(write10(0, 16), data_out=bytes([0xEE]) * 8192)   # leaves blocks non-zero
    completion = rig.run(inquiry(255), data_in_length=255)
    assert completion.status == GOOD
    assert completion.read_len == len(completion.data_in) < 255
    assert completion.data_in[8:14] == b"ODXTGT"


def test_without_read_len_the_rest_of_the_buffer_is_zeroed():
    rig = Rig(flags=r.FLAG_CAP_OOOC | r.FLAG_CAP_TMR)
    try:
        rig.clear_power_on_attention()
        rig.run(write10(0, 8), data_out=bytes([0xEE]) * BLOCK_SIZE)     # dirty a block
        completion = rig.run(inquiry(255), data_in_length=255)
        assert completion.read_len is None and len(completion.data_in) == 255
        inquiry_length = completion.data_in[4] + 5
        assert STALE_BYTE not in completion.data_in[inquiry_length:]
        assert completion.data_in[inquiry_length:] == bytes(255 - inquiry_length)
    finally:
        rig.close()


def test_check_condition_for_an_invalid_cdb_field(rig):
    completion = rig.run(read10(LU_BYTES // BLOCK, 1), data_in_length=BLOCK)
    assert completion.status == CHECK
    assert sense_key_asc(completion.sense) == (5, 0x21, 0x00)    # LBA OUT OF RANGE


def test_a_transfer_of_the_whole_lu_in_one_command():
    rig = Rig(cmdr_size=256 * 1024, data_blocks=8192)
    try:
        rig.clear_power_on_attention()
        blocks = (LU_BYTES // BLOCK)
        completion = rig.run(struct.pack(">BBIIBB", 0xA8, 0, 0, blocks, 0, 0),
                             data_in_length=blocks * BLOCK)   # READ(12) of the whole 4 MiB LU
        assert completion.status == GOOD and completion.data_in == bytes(blocks * BLOCK)
    finally:
        rig.close()


def test_many_in_flight_in_one_batch_with_wraps():
    rig = Rig(cmdr_size=8 * 1024, data_blocks=64)
    try:
        rig.clear_power_on_attention()
        expected = {}
        for round_number in range(20):
            ids = []
            for n in range(8):
                lba = (round_number * 8 + n) * 8
                data = struct.pack(">I", lba) * (BLOCK_SIZE // 4)
                expected[lba] = data
                ids.append(rig.kernel.queue_command(write10(lba, 8), data_out=data))
            notify, done = rig.step()
            assert notify and sorted(c.cmd_id for c in done) == sorted(ids)
            assert all(c.status == GOOD for c in done)
        for lba, data in expected.items():
            assert rig.run(read10(lba, 8), data_in_length=BLOCK_SIZE).data_in == data
        assert rig.kernel.pads > 0 and not rig.kernel.broken
    finally:
        rig.close()


PREVENT_REMOVAL = bytes((0x1E, 0, 0, 0, 1, 0))
EJECT = bytes((0x1B, 0, 0, 0, 0x02, 0))


def test_tmr_lun_reset_reaches_core_state_without_a_unit_attention_of_ours():
    """LUN RESET clears the PREVENT state; the unit attention is LIO's to report (to the
    nexuses it knows): ours would reach whichever initiator sends the next command."""
    rig = Rig(removable=True)
    try:
        rig.clear_power_on_attention()
        assert rig.run(PREVENT_REMOVAL).status == GOOD
        refused = rig.run(EJECT)
        assert refused.status == CHECK and sense_key_asc(refused.sense) == (5, 0x53, 0x02)
        rig.kernel.queue_tmr(r.TmrType.LUN_RESET, [])
        rig.step()
        assert rig.run(EJECT).status == GOOD                  # no unit attention, no prevention
        gone = rig.run(TUR)
        assert gone.status == CHECK and sense_key_asc(gone.sense) == (2, 0x3A, 0x00)
    finally:
        rig.close()


def test_tmr_abort_of_commands_already_completed_is_ignored(rig):
    cmd_id = rig.kernel.queue_command(TUR)
    rig.step()
    rig.kernel.queue_tmr(r.TmrType.ABORT_TASK_SET, [cmd_id])
    notify, done = rig.step()
    assert done == [] and not rig.kernel.broken and rig.ring.idle()


def test_unsupported_opcode_answers_illegal_request(rig):
    completion = rig.run(bytes([0xD9] + [0] * 9))
    assert completion.status == CHECK and sense_key_asc(completion.sense) == (5, 0x20, 0x00)


def test_the_synthetic_nexus_is_marked_shared_and_stable():
    """Every initiator behind LIO arrives on this one nexus: the copy manager must know it is
    shared (ODX list ids cannot be told apart by host), and it must survive a restart."""
    nexus = lu_nexus("disk0")
    assert nexus.shared
    assert nexus == lu_nexus("disk0") and nexus != lu_nexus("disk1")


# -- storage work on workers: out-of-order completion, aborts, buffer lifetimes ---------------


def _await_completion(rig: Rig, cmd_id: int):
    rig.run_until(lambda: any(c.cmd_id == cmd_id for c in rig.collected))
    (completion,) = [c for c in rig.collected if c.cmd_id == cmd_id]
    return completion


def _entry_size(cdb: bytes, iovecs: int) -> int:
    return r.cmd_entry_size(iovecs, len(cdb))


def test_a_slow_write_completes_after_the_commands_behind_it(rig):
    """The write's storage work blocks on its worker. The read and the TUR fetched with it in
    the same wake-up complete at once, and a write fetched afterwards completes through
    another worker: each took one of the oldest slots (CAP_OOOC), the kernel notified once
    per batch; the slow one completes when its work returns."""
    rig.backend.close_gate(0, BLOCK_SIZE)
    tail_before, notifications = rig.ring.tail(), rig.notifications
    slow = rig.kernel.queue_command(write10(0, 8), data_out=bytes([0x5A]) * BLOCK_SIZE)
    fast_read = rig.kernel.queue_command(read10(128, 8), data_in_length=BLOCK_SIZE)
    tur = rig.kernel.queue_command(TUR)

    done = rig.process()                                    # one wake-up for all three
    assert [(c.cmd_id, c.status) for c in done] == [(fast_read, GOOD), (tur, GOOD)]
    assert rig.notifications == notifications + 1
    assert rig.backend.blocked.wait(5)
    fast_write = rig.kernel.queue_command(write10(64, 8), data_out=bytes([0x11]) * BLOCK_SIZE)
    assert rig.process() == []                              # its work went to a worker
    assert _await_completion(rig, fast_write).status == GOOD
    assert rig.notifications == notifications + 2           # one more, for the worker's batch

    # three completions took the three oldest slots, the slow command's first; the tail stops
    # before the last slot, left for the command still in flight
    consumed = (_entry_size(write10(0, 8), 1) + _entry_size(read10(128, 8), 1)
                + _entry_size(TUR, 0))
    assert rig.ring.tail() == (tail_before + consumed) % rig.kernel.cmdr_size == rig.kernel.last_cleaned
    assert rig.ring.outstanding == 1 and rig.processor.in_flight_ids == [slow]
    assert list(rig.kernel.outstanding) == [slow]

    rig.backend.open_gate()
    (completion,) = rig.settle()
    assert (completion.cmd_id, completion.status) == (slow, GOOD)
    assert rig.notifications == notifications + 3
    assert rig.backend._data[:BLOCK_SIZE] == bytes([0x5A]) * BLOCK_SIZE
    assert rig.ring.idle() and not rig.kernel.outstanding and not rig.kernel.broken


def test_the_data_out_blocks_of_a_running_write_are_not_reused_before_it_completes(rig):
    """The worker reads the Data-Out view on the data area only after dozens of later
    commands went through the data blocks the kernel frees and reuses: the blocks of the
    slow write are freed only by its own completion, which waits for the worker."""
    rig.backend.close_gate(0, BLOCK_SIZE)
    expected = bytes(range(256)) * (BLOCK_SIZE // 256)
    slow = rig.kernel.queue_command(write10(0, 8), data_out=expected)
    rig.process()
    assert rig.backend.blocked.wait(5)
    for n in range(40):
        lba = 64 + 8 * (n % 8)
        cmd_id = rig.kernel.queue_command(write10(lba, 8), data_out=bytes([n]) * BLOCK_SIZE)
        rig.process()
        assert _await_completion(rig, cmd_id).status == GOOD
        cmd_id = rig.kernel.queue_command(read10(lba, 8), data_in_length=BLOCK_SIZE)
        rig.process()
        assert _await_completion(rig, cmd_id).data_in == bytes([n]) * BLOCK_SIZE
    assert slow in rig.kernel.outstanding and rig.kernel.used_before - {0}
    rig.backend.open_gate()
    (completion,) = rig.settle()
    assert (completion.cmd_id, completion.status) == (slow, GOOD)
    assert rig.backend._data[:BLOCK_SIZE] == expected


def test_a_slow_read_has_its_data_in_copied_into_the_iovecs_on_the_loop(rig, monkeypatch):
    copied_on: list[int] = []
    scatter = processor_module.scatter

    def recording_scatter(memory, iovecs, data):
        copied_on.append(threading.get_ident())
        return scatter(memory, iovecs, data)

    monkeypatch.setattr(processor_module, "scatter", recording_scatter)
    data = bytes(range(256)) * (2 * BLOCK_SIZE // 256)
    assert rig.run(write10(200, 16), data_out=data).status == GOOD
    rig.kernel.free_blocks = [10, 12, 14]                      # Data-In over two iovecs
    rig.backend.close_gate(200 * BLOCK, len(data))
    slow = rig.kernel.queue_command(read10(200, 16), data_in_length=len(data))
    assert rig.process() == [] and rig.backend.blocked.wait(5)
    rig.backend.open_gate()
    (completion,) = rig.settle()
    assert (completion.cmd_id, completion.status, completion.data_in) == (slow, GOOD, data)
    assert set(copied_on) == {threading.get_ident()}


def test_completions_the_workers_deliver_together_are_notified_once(rig):
    rig.backend.close_gate(0, 4 * BLOCK_SIZE)
    ids = [rig.kernel.queue_command(write10(8 * n, 8), data_out=bytes([n]) * BLOCK_SIZE) for n in range(4)]
    assert rig.process() == []
    notifications = rig.notifications
    writes_before = rig.backend.writes_done
    rig.backend.open_gate()                     # the loop is not running: results wait for it
    deadline = time.monotonic() + 5
    while rig.backend.writes_done < writes_before + 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)                             # from the backend's return to the results list
    done = rig.settle()
    assert sorted(c.cmd_id for c in done) == sorted(ids) and all(c.status == GOOD for c in done)
    assert rig.notifications == notifications + 1


def test_tmr_abort_of_a_running_write_completes_it_once_as_aborted_after_its_work(rig):
    rig.backend.close_gate(0, BLOCK_SIZE)
    slow = rig.kernel.queue_command(write10(0, 8), data_out=bytes([0x77]) * BLOCK_SIZE)
    rig.process()
    assert rig.backend.blocked.wait(5)
    rig.kernel.queue_tmr(r.TmrType.ABORT_TASK, [slow])
    assert rig.process() == []                  # LIO waits: the write is still on its worker
    rig.kernel.queue_tmr(r.TmrType.LUN_RESET, [slow])
    assert rig.process() == []                  # listed again: still answered only once
    assert rig.processor.in_flight_ids == [slow] and slow in rig.kernel.outstanding
    rig.backend.open_gate()
    done = rig.settle()
    assert [(c.cmd_id, c.status) for c in done] == [(slow, TASK_ABORTED)]
    assert rig.backend._data[:BLOCK_SIZE] == bytes([0x77]) * BLOCK_SIZE   # its piece finished
    assert rig.run(TUR).status == GOOD and not rig.kernel.broken and rig.ring.idle()


def test_an_aborted_command_runs_no_further_piece_of_work(rig):
    """WRITE AND VERIFY is a write, then a read-back: aborted during the write, it never
    reads."""
    data = bytes([0x42]) * BLOCK_SIZE
    assert rig.run(write_and_verify10(64, 8), data_out=data).status == GOOD
    assert any(offset == 64 * BLOCK for offset, _ in rig.backend.reads)     # it does read back
    rig.backend.close_gate(0, BLOCK_SIZE)
    slow = rig.kernel.queue_command(write_and_verify10(0, 8), data_out=data)
    rig.process()
    assert rig.backend.blocked.wait(5)
    reads_before = len(rig.backend.reads)
    rig.kernel.queue_tmr(r.TmrType.ABORT_TASK, [slow])
    rig.process()
    rig.backend.open_gate()
    done = rig.settle()
    assert [(c.cmd_id, c.status) for c in done] == [(slow, TASK_ABORTED)]
    assert rig.backend.reads[reads_before:] == []


def test_commands_queued_behind_an_ordered_task_wait_and_abort_at_once(rig):
    """The ring carries no task attribute, so ring commands are SIMPLE; one queued behind an
    ORDERED task of the same logical unit waits in the task set, an abort ends it at once,
    and the others start when the ORDERED task completes."""
    rig.backend.close_gate(0, BLOCK_SIZE)
    ordered = rig.target.execute(ScsiCommand(write10(0, 8), lu_nexus("disk0"), data_out=bytes(BLOCK_SIZE),
                                             expected_transfer_length=BLOCK_SIZE,
                                             task_attribute=TaskAttribute.ORDERED))
    assert isinstance(ordered, Pending)
    ordered_results: list = []
    rig.driver.run(ordered, ordered_results.append)
    assert rig.backend.blocked.wait(5)
    write = rig.kernel.queue_command(write10(64, 8), data_out=bytes([3]) * BLOCK_SIZE)
    tur = rig.kernel.queue_command(TUR)
    assert rig.process() == []
    assert sorted(rig.processor.in_flight_ids) == sorted([write, tur])
    rig.kernel.queue_tmr(r.TmrType.ABORT_TASK, [tur])
    assert [(c.cmd_id, c.status) for c in rig.process()] == [(tur, TASK_ABORTED)]
    rig.backend.open_gate()
    done = rig.settle()
    assert [(c.cmd_id, c.status) for c in done] == [(write, GOOD)]
    assert [result.status for result in ordered_results] == [GOOD]
    assert rig.backend._data[64 * BLOCK:64 * BLOCK + BLOCK_SIZE] == bytes([3]) * BLOCK_SIZE


def test_giving_the_ring_up_writes_nothing_more_and_waits_for_running_work(rig):
    rig.backend.close_gate(0, BLOCK_SIZE)
    slow = rig.kernel.queue_command(write10(0, 8), data_out=bytes([9]) * BLOCK_SIZE)
    rig.process()
    assert rig.backend.blocked.wait(5)
    tail = rig.ring.tail()
    rig.processor.give_up()
    assert rig.processor.in_flight == 1         # the mapping must stay until the work returns
    rig.backend.open_gate()
    assert rig.settle() == []
    assert rig.processor.in_flight == 0 and rig.ring.tail() == tail and slow in rig.kernel.outstanding


def test_abort_outcomes_reported_for_commands_not_in_flight(rig):
    assert rig.processor.abort(1234) is None
    rig.backend.close_gate(0, BLOCK_SIZE)
    slow = rig.kernel.queue_command(write10(0, 8), data_out=bytes(BLOCK_SIZE))
    rig.process()
    assert rig.backend.blocked.wait(5)
    assert rig.processor.abort(slow) is AbortOutcome.FINISHING
    rig.backend.open_gate()
    assert [c.status for c in rig.settle()] == [TASK_ABORTED]
