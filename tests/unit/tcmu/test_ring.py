"""The ring code against the simulated kernel: layout, wrap, PAD, many in flight,
out-of-order completion, TMR, short reads, oversized commands."""

from __future__ import annotations

import struct

import pytest

from odxtarget.transport.tcmu import ring as r
from tests.unit.tcmu.simulated_kernel import (BLOCK_SIZE, STALE_BYTE, KernelRefused, RingBroken,
                                              SimulatedKernel)

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE16 = bytes([0x8A] + [0] * 12 + [8, 0, 0])
TUR = bytes(6)
CHECK = 0x02
SENSE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])


@pytest.fixture
def kernel():
    k = SimulatedKernel()
    yield k
    k.close()


def make_ring(kernel: SimulatedKernel) -> r.CommandRing:
    return r.CommandRing(kernel.mv)


# -- layout --------------------------------------------------------------------------------------


def test_struct_offsets_match_the_uapi_layout():
    # struct tcmu_mailbox is 128 bytes with cmd_tail on its own 64-byte line; the entry is 112
    assert (r.MAILBOX_SIZE, r.MB_CMD_HEAD, r.MB_CMD_TAIL) == (128, 12, 64)
    assert (r.REQ_CDB_OFF, r.REQ_IOV, r.CMD_ENTRY_SIZE) == (24, 48, 112)
    assert (r.RSP_SCSI_STATUS, r.RSP_READ_LEN, r.RSP_SENSE) == (8, 12, 16)
    assert r.RSP_SENSE + r.SENSE_BUFFER_SIZE == r.CMD_ENTRY_SIZE
    assert (r.OP_PAD, r.OP_CMD, r.OP_TMR) == (0, 1, 2)
    assert (r.TMR_TYPE, r.TMR_CMD_CNT, r.TMR_CMD_IDS, r.TMR_ENTRY_SIZE) == (8, 12, 32, 32)


@pytest.mark.parametrize("cdb,length", [(bytes([0x00]), 6), (bytes([0x28]), 10), (bytes([0x5A]), 10),
                                        (bytes([0xA0]), 12), (bytes([0x88]), 16), (bytes([0xC0]), 10),
                                        (bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]), 32)])
def test_cdb_length_follows_the_opcode_group(cdb, length):
    assert r.scsi_command_size(cdb) == length


def test_entry_size_is_the_struct_at_least_plus_the_aligned_cdb():
    assert r.cmd_entry_size(0, 6) == 112 + 8
    assert r.cmd_entry_size(4, 16) == 112 + 16
    assert r.cmd_entry_size(5, 12) == 48 + 80 + 16
    assert r.tmr_entry_size(1) == 40 and r.tmr_entry_size(0) == 32


def test_rejects_wrong_mailbox_version():
    kernel = SimulatedKernel(version=1)
    try:
        with pytest.raises(r.RingError, match="version 1"):
            make_ring(kernel)
    finally:
        kernel.close()


def test_rejects_read_only_and_short_mappings(kernel):
    with pytest.raises(r.RingError, match="writable"):
        r.CommandRing(memoryview(bytes(kernel.mv)))
    with pytest.raises(r.RingError, match="smaller"):
        r.CommandRing(bytearray(64))


def test_reads_flags_and_geometry(kernel):
    ring = make_ring(kernel)
    assert ring.supports_out_of_order and ring.supports_read_len and ring.supports_tmr
    assert ring.cmdr_size == kernel.cmdr_size
    assert ring.data_offset == kernel.data_offset


# -- fetch and complete --------------------------------------------------------------------------


def test_copies_out_cdb_and_iovecs_and_completes_in_order(kernel):
    ring = make_ring(kernel)
    payload = bytes(range(256)) * 16
    first = kernel.queue_command(WRITE10, data_out=payload)
    second = kernel.queue_command(TUR)
    commands = ring.fetch()
    assert [c.cmd_id for c in commands] == [first, second]
    write, tur = commands
    assert write.cdb == WRITE10 and tur.cdb == TUR
    assert write.data_length == len(payload) and tur.data_length == 0 and tur.iovecs == ()
    assert bytes(r.gather(ring.memory, write.iovecs)) == payload
    ring.complete(first, 0)
    ring.complete(second, 0)
    done = kernel.collect_completions()
    assert [(c.cmd_id, c.status) for c in done] == [(first, 0), (second, 0)]
    assert ring.tail() == kernel.head and ring.idle() and ring.outstanding == 0


def test_check_condition_carries_sense_and_clears_the_request_bytes_under_it(kernel):
    ring = make_ring(kernel)
    cmd_id = kernel.queue_command(READ10, data_in_length=4096)
    ring.fetch()
    ring.complete(cmd_id, CHECK, SENSE)
    (done,) = kernel.collect_completions()
    assert done.status == CHECK
    assert done.sense == SENSE + bytes(r.SENSE_BUFFER_SIZE - len(SENSE))
    assert done.data_in == b""        # no READ_LEN: the kernel returns no data with CHECK CONDITION


def test_sense_longer_than_the_buffer_is_cut(kernel):
    ring = make_ring(kernel)
    cmd_id = kernel.queue_command(TUR)
    ring.fetch()
    ring.complete(cmd_id, CHECK, bytes(range(200)))
    (done,) = kernel.collect_completions()
    assert done.sense == bytes(range(96))


def test_completion_without_outstanding_command_is_refused(kernel):
    ring = make_ring(kernel)
    with pytest.raises(r.RingError):
        ring.complete(1, 0)


def test_data_in_short_read_uses_read_len(kernel):
    ring = make_ring(kernel)
    cmd_id = kernel.queue_command(READ10, data_in_length=8192)
    (command,) = ring.fetch()
    written = r.scatter(ring.memory, command.iovecs, b"x" * 100)
    ring.complete(cmd_id, 0, read_len=written)
    (done,) = kernel.collect_completions()
    assert done.read_len == 100 and done.uflags == r.UFLAG_READ_LEN
    assert done.data_in == b"x" * 100


def test_read_len_is_not_used_without_the_capability():
    kernel = SimulatedKernel(flags=r.FLAG_CAP_OOOC)
    try:
        ring = make_ring(kernel)
        cmd_id = kernel.queue_command(READ10, data_in_length=4096)
        ring.fetch()
        ring.complete(cmd_id, 0, read_len=10)
        (done,) = kernel.collect_completions()
        assert done.uflags == 0 and done.read_len is None and len(done.data_in) == 4096
    finally:
        kernel.close()


# -- wrap and PAD --------------------------------------------------------------------------------


def test_wraps_many_times_across_pad_entries():
    kernel = SimulatedKernel(cmdr_size=4000, data_blocks=8)
    try:
        ring = make_ring(kernel)
        wraps = 0
        for round_number in range(200):
            payload = bytes([round_number % 251]) * (512 * (1 + round_number % 7))
            head_before = kernel.head
            cdb = WRITE10 if round_number % 3 else WRITE16       # 128- and 136-byte entries
            cmd_id = kernel.queue_command(cdb, data_out=payload)
            wraps += kernel.head < head_before
            (command,) = ring.fetch()
            assert (command.cmd_id, command.cdb) == (cmd_id, cdb)
            assert bytes(r.gather(ring.memory, command.iovecs)) == payload
            ring.complete(cmd_id, 0)
            assert [c.cmd_id for c in kernel.collect_completions()] == [cmd_id]
        assert wraps >= 6 and kernel.pads >= 3     # wrapped, mostly behind a PAD entry
        assert ring.idle()
    finally:
        kernel.close()


def test_pad_at_the_front_of_the_tail_is_consumed_on_fetch():
    kernel = SimulatedKernel(cmdr_size=1024, data_blocks=4)
    try:
        ring = make_ring(kernel)
        ids = [kernel.queue_command(TUR) for _ in range(7)]     # 7 * 120 = 840 bytes
        for command in ring.fetch():
            ring.complete(command.cmd_id, 0)
        assert [c.cmd_id for c in kernel.collect_completions()] == ids
        last = kernel.queue_command(TUR)    # 184 bytes left to the end: fits
        wrapped = kernel.queue_command(TUR)  # 64 left: a PAD, then the entry at offset 0
        assert kernel.head == 120
        commands = ring.fetch()
        assert [c.cmd_id for c in commands] == [last, wrapped]
        ring.complete(last, 0)
        # the tail stepped over the PAD as soon as the command before it was consumed
        assert ring.tail() == 0
        ring.complete(wrapped, 0)
        assert [c.cmd_id for c in kernel.collect_completions()] == [last, wrapped]
        assert ring.tail() == kernel.head == 120
    finally:
        kernel.close()


def test_qfull_commands_reach_the_ring_after_completions_free_space():
    kernel = SimulatedKernel(cmdr_size=1024, data_blocks=4)
    try:
        ring = make_ring(kernel)
        ids = [kernel.queue_command(READ10, data_in_length=BLOCK_SIZE) for _ in range(6)]
        assert len(kernel.qfull) == 2            # only 4 data blocks
        seen = []
        while len(seen) < len(ids):
            batch = ring.fetch()
            assert batch
            for command in batch:
                seen.append(command.cmd_id)
                ring.complete(command.cmd_id, 0, read_len=0)
            kernel.collect_completions()
        assert seen == ids and not kernel.qfull and not kernel.outstanding
    finally:
        kernel.close()


# -- many in flight, out-of-order completion -----------------------------------------------------


def test_many_in_flight_completed_in_reverse_order():
    kernel = SimulatedKernel(cmdr_size=64 * 1024, data_blocks=512)
    try:
        ring = make_ring(kernel)
        payloads = {}
        for n in range(300):
            payload = struct.pack("=I", n) * 256
            payloads[kernel.queue_command(WRITE10, data_out=payload)] = payload
        commands = ring.fetch()
        assert len(commands) == 300 and ring.outstanding == 300
        for command in commands:
            assert bytes(r.gather(ring.memory, command.iovecs)) == payloads[command.cmd_id]
        for command in reversed(commands):
            ring.complete(command.cmd_id, 0)
        done = kernel.collect_completions()
        assert [c.cmd_id for c in done] == [c.cmd_id for c in reversed(commands)]
        assert not kernel.outstanding and not kernel.broken and ring.idle()
    finally:
        kernel.close()


def test_out_of_order_completion_steals_the_oldest_slot_and_keeps_data_per_command(kernel):
    ring = make_ring(kernel)
    slow = kernel.queue_command(READ10, data_in_length=4096)
    fast = kernel.queue_command(READ10, data_in_length=4096)
    slow_cmd, fast_cmd = ring.fetch()
    r.scatter(ring.memory, fast_cmd.iovecs, b"F" * 4096)
    ring.complete(fast, 0)                     # written into the slow command's slot
    (done,) = kernel.collect_completions()
    assert done.cmd_id == fast and done.data_in == b"F" * 4096
    assert slow in kernel.outstanding
    r.scatter(ring.memory, slow_cmd.iovecs, b"S" * 4096)
    ring.complete(slow, 0)
    (done,) = kernel.collect_completions()
    assert done.cmd_id == slow and done.data_in == b"S" * 4096
    assert not kernel.broken and ring.idle()


def test_out_of_order_across_a_wrap_with_new_commands_arriving():
    kernel = SimulatedKernel(cmdr_size=2048, data_blocks=16)
    try:
        ring = make_ring(kernel)
        held = []
        completed = []
        for n in range(120):
            kernel.queue_command(TUR)
            for command in ring.fetch():
                held.append(command.cmd_id)
            if len(held) >= 4:              # keep a long-running one; finish the newest first
                ring.complete(held.pop(), 0)
            completed += [c.cmd_id for c in kernel.collect_completions()]
        for cmd_id in reversed(held):
            ring.complete(cmd_id, 0)
        completed += [c.cmd_id for c in kernel.collect_completions()]
        assert sorted(completed) == sorted(set(completed)) and len(completed) == 120
        assert not kernel.broken and ring.idle()
    finally:
        kernel.close()


def test_a_stale_or_double_completion_breaks_the_ring_in_the_kernel(kernel):
    # the kernel's own check, which the ring's outstanding count exists to avoid
    ring = make_ring(kernel)
    cmd_id = kernel.queue_command(TUR)
    ring.fetch()
    ring.complete(cmd_id + 7, 0)
    with pytest.raises(RingBroken):
        kernel.collect_completions()


# -- TMR -----------------------------------------------------------------------------------------


def test_tmr_entries_are_parsed_and_stepped_over(kernel):
    ring = make_ring(kernel)
    a = kernel.queue_command(TUR)
    b = kernel.queue_command(TUR)
    kernel.queue_tmr(r.TmrType.ABORT_TASK, [b])
    kernel.queue_tmr(r.TmrType.LUN_RESET, [a, b])
    entries = ring.fetch()
    assert [type(e) for e in entries] == [r.RingCommand, r.RingCommand, r.TmrNotification,
                                         r.TmrNotification]
    assert (entries[2].tmr_type, entries[2].cmd_ids) == (r.TmrType.ABORT_TASK, (b,))
    assert (entries[3].tmr_type, entries[3].cmd_ids) == (r.TmrType.LUN_RESET, (a, b))
    ring.complete(b, 0x40)
    ring.complete(a, 0x40)
    assert sorted(c.cmd_id for c in kernel.collect_completions()) == sorted([a, b])
    assert ring.idle()                          # the tail also passed both TMR entries


def test_tmr_only_batch_moves_the_tail(kernel):
    ring = make_ring(kernel)
    kernel.queue_tmr(r.TmrType.TARGET_WARM_RESET, [])
    (tmr,) = ring.fetch()
    assert tmr.cmd_ids == () and ring.idle()


# -- oversized and corrupt -----------------------------------------------------------------------


def test_a_command_as_large_as_the_data_area_fits_but_larger_is_refused():
    kernel = SimulatedKernel(cmdr_size=8192, data_blocks=8)
    try:
        ring = make_ring(kernel)
        payload = bytes(range(256)) * (8 * BLOCK_SIZE // 256)
        cmd_id = kernel.queue_command(WRITE10, data_out=payload)
        (command,) = ring.fetch()
        assert bytes(r.gather(ring.memory, command.iovecs)) == payload
        ring.complete(cmd_id, 0)
        kernel.collect_completions()
        with pytest.raises(KernelRefused):
            kernel.queue_command(WRITE10, data_out=payload + b"x")
    finally:
        kernel.close()


def test_an_entry_over_half_the_ring_is_refused_by_the_kernel():
    kernel = SimulatedKernel(cmdr_size=1024, data_blocks=64)
    try:
        with pytest.raises(KernelRefused):
            # 40 scattered blocks would need 40 iovecs: 48 + 640 + 16 > 512
            kernel.queue_command(WRITE10, data_out=bytes(40 * BLOCK_SIZE + 1)[:40 * BLOCK_SIZE])
    finally:
        kernel.close()


def test_scattered_blocks_give_several_iovecs_and_gather_scatter_round_trip():
    kernel = SimulatedKernel(cmdr_size=8192, data_blocks=8)
    try:
        ring = make_ring(kernel)
        kernel.free_blocks = [0, 2, 4, 5, 7]     # as if blocks 1, 3 and 6 were held by others
        cmd_id = kernel.queue_command(READ10, data_in_length=4 * BLOCK_SIZE)
        (command,) = ring.fetch()
        base = kernel.data_offset
        assert command.iovecs == ((base, BLOCK_SIZE), (base + 2 * BLOCK_SIZE, BLOCK_SIZE),
                                  (base + 4 * BLOCK_SIZE, 2 * BLOCK_SIZE))
        assert command.data_length == 4 * BLOCK_SIZE
        data = bytes(range(256)) * (4 * BLOCK_SIZE // 256)
        assert r.scatter(ring.memory, command.iovecs, data) == len(data)
        assert r.gather(ring.memory, command.iovecs) == data
        ring.complete(cmd_id, 0)
        assert kernel.collect_completions()[-1].data_in == data
    finally:
        kernel.close()


def test_zero_fill_clears_stale_bytes_after_the_written_part():
    kernel = SimulatedKernel(cmdr_size=8192, data_blocks=4)
    try:
        ring = make_ring(kernel)
        first = kernel.queue_command(WRITE10, data_out=b"\x11" * (2 * BLOCK_SIZE))
        ring.fetch()
        ring.complete(first, 0)
        kernel.collect_completions()
        kernel.queue_command(READ10, data_in_length=2 * BLOCK_SIZE)
        (command,) = ring.fetch()
        assert bytes(r.gather(ring.memory, command.iovecs))[:4] == bytes([STALE_BYTE]) * 4
        r.scatter(ring.memory, command.iovecs, b"abc")
        r.zero_fill(ring.memory, command.iovecs, 3)
        assert bytes(r.gather(ring.memory, command.iovecs)) == b"abc" + bytes(2 * BLOCK_SIZE - 3)
    finally:
        kernel.close()


def test_corrupt_entry_length_is_reported(kernel):
    ring = make_ring(kernel)
    kernel.queue_command(TUR)
    struct.pack_into("=I", kernel.mv, r.MAILBOX_SIZE, 0 | r.OP_CMD)
    with pytest.raises(r.RingError, match="bad length"):
        ring.fetch()


def test_unknown_entry_type_is_flagged_and_skipped(kernel):
    ring = make_ring(kernel)
    kernel.queue_command(TUR)
    len_op = struct.unpack_from("=I", kernel.mv, r.MAILBOX_SIZE)[0]
    struct.pack_into("=I", kernel.mv, r.MAILBOX_SIZE, (len_op & ~r.OP_MASK) | 5)
    assert ring.fetch() == []
    assert kernel.mv[r.MAILBOX_SIZE + r.HDR_UFLAGS] & r.UFLAG_UNKNOWN_OP


def test_reset_restarts_at_the_kernels_zeroed_tail(kernel):
    ring = make_ring(kernel)
    for _ in range(3):
        kernel.queue_command(TUR)
    assert len(ring.fetch()) == 3
    assert sorted(kernel.reset_ring()) == [1, 2, 3]
    ring.reset()
    assert ring.outstanding == 0 and ring.tail() == 0
    cmd_id = kernel.queue_command(TUR)
    (command,) = ring.fetch()
    ring.complete(command.cmd_id, 0)
    assert [c.cmd_id for c in kernel.collect_completions()] == [cmd_id]
