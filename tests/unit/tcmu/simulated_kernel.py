"""A test double for the kernel side of a TCMU device, on an mmap'ed temporary file.

It does what ``drivers/target/target_core_user.c`` does with the shared region, closely
enough to catch protocol mistakes in the handler:

* ``queue_command``: allocates data blocks (not necessarily contiguous: freed blocks are
  reused lowest first, and consecutive blocks merge into one iovec), copies Data-Out in,
  fills reused Data-In blocks with a *stale* pattern (the kernel does not clear them),
  writes a PAD entry when the entry does not fit before the end of the ring, copies the CDB
  after the iovecs, then publishes ``cmd_head``. With no room on the ring or in the data
  area the command waits in a "qfull" queue, as in the kernel, and is queued by
  ``collect_completions`` once space is freed. An entry over half the ring or data over
  the whole data area is refused at once (INVALID FIELD IN CDB in the kernel).
* ``queue_tmr``: a TMR notification entry listing aborted cmd_ids.
* ``collect_completions``: walks from its last-cleaned offset to ``cmd_tail`` in ring
  order, skips PAD/TMR, looks each slot's ``cmd_id`` up (an unknown id breaks the ring, as
  in the kernel), reads status, sense and READ_LEN, copies Data-In out and frees blocks.
"""

from __future__ import annotations

import mmap
import struct
import tempfile
from collections import deque
from dataclasses import dataclass, field

from odxtarget.transport.tcmu import ring as r

BLOCK_SIZE = 4096
STALE_BYTE = 0xA5


class KernelRefused(Exception):
    """The kernel would fail this command before it reaches the ring (INVALID CDB FIELD)."""


class RingBroken(Exception):
    """Userspace completed an id that is not outstanding: the kernel marks the ring broken."""


@dataclass
class Completion:
    cmd_id: int
    status: int
    sense: bytes
    data_in: bytes
    read_len: int | None
    uflags: int


@dataclass
class _Outstanding:
    cmd_id: int
    blocks: list[int]
    data_length: int
    is_read: bool
    bidi_length: int = 0
    bidi_blocks: list[int] = field(default_factory=list)


@dataclass
class _Queued:
    cdb: bytes
    data_out: bytes | None
    data_in_length: int
    bidi_in_length: int
    cmd_id: int


class SimulatedKernel:
    """The kernel's view of one TCMU device. Close it with ``close()``."""

    def __init__(self, cmdr_size: int = 64 * 1024, data_blocks: int = 64,
                 flags: int = (r.FLAG_CAP_OOOC | r.FLAG_CAP_READ_LEN | r.FLAG_CAP_TMR
                               | r.FLAG_CAP_KEEP_BUF),
                 version: int = r.MAILBOX_VERSION):
        self.cmdr_size = cmdr_size
        self.data_offset = r.round_up(r.MAILBOX_SIZE + cmdr_size, 4096)
        self.data_blocks = data_blocks
        self.size = self.data_offset + data_blocks * BLOCK_SIZE
        self._file = tempfile.TemporaryFile()
        self._file.truncate(self.size)
        self.map = mmap.mmap(self._file.fileno(), self.size)
        self.mv = memoryview(self.map)
        struct.pack_into("=HHIII", self.mv, 0, version, flags, r.MAILBOX_SIZE, cmdr_size, 0)
        struct.pack_into("=I", self.mv, r.MB_CMD_TAIL, 0)
        self.head = 0
        self.last_cleaned = 0
        self.free_blocks = list(range(data_blocks))     # kept sorted: lowest reused first
        self.used_before: set[int] = set()
        self.outstanding: dict[int, _Outstanding] = {}
        self.qfull: deque[_Queued] = deque()
        self._next_id = 1
        self.broken = False
        self.notifications = 0
        self.pads = 0

    def close(self) -> None:
        """Unmap; a ring still holding views keeps the mapping alive until it is collected."""
        self.mv.release()
        try:
            self.map.close()
        except BufferError:
            pass
        self._file.close()

    # -- ring space (target_core_user.c spc_free / head_to_end) -------------------------

    def _tail(self) -> int:
        return struct.unpack_from("=I", self.mv, r.MB_CMD_TAIL)[0]

    def ring_free(self) -> int:
        """Free ring bytes; one byte is kept unused so that head == tail means empty."""
        return (self.last_cleaned - self.head - 1) % self.cmdr_size

    def _allocate_id(self) -> int:
        for _ in range(r.MAX_CMD_ID):
            cmd_id = self._next_id
            self._next_id = cmd_id % r.MAX_CMD_ID + 1
            if cmd_id not in self.outstanding and all(q.cmd_id != cmd_id for q in self.qfull):
                return cmd_id
        raise RuntimeError("no free command id")

    # -- queueing ------------------------------------------------------------------------

    def queue_command(self, cdb: bytes, data_out: bytes | None = None, data_in_length: int = 0,
                      bidi_in_length: int = 0) -> int:
        """Queue a command as LIO would hand it to TCMU; returns its cmd_id.

        Raises:
            KernelRefused: entry over half the ring or data over the data area.
        """
        data_length = len(data_out) if data_out is not None else data_in_length
        iov_estimate = self._blocks_for(data_length) + self._blocks_for(bidi_in_length)
        if r.cmd_entry_size(iov_estimate, r.scsi_command_size(cdb)) > self.cmdr_size // 2:
            raise KernelRefused("ring entry larger than half the command ring")
        if (self._blocks_for(data_length) + self._blocks_for(bidi_in_length)) > self.data_blocks:
            raise KernelRefused("data larger than the data area")
        queued = _Queued(bytes(cdb), data_out, data_in_length, bidi_in_length, self._allocate_id())
        if self.qfull or not self._try_place(queued):
            self.qfull.append(queued)
        return queued.cmd_id

    def _blocks_for(self, length: int) -> int:
        return -(-length // BLOCK_SIZE)

    def _take_blocks(self, count: int) -> list[int]:
        taken, self.free_blocks = self.free_blocks[:count], self.free_blocks[count:]
        return taken

    def _iovecs(self, blocks: list[int], length: int) -> list[tuple[int, int]]:
        iovecs: list[list[int]] = []
        remaining = length
        for block in blocks:
            chunk = min(BLOCK_SIZE, remaining)
            base = self.data_offset + block * BLOCK_SIZE
            if iovecs and iovecs[-1][0] + iovecs[-1][1] == base:
                iovecs[-1][1] += chunk
            else:
                iovecs.append([base, chunk])
            remaining -= chunk
        return [(base, n) for base, n in iovecs]

    def _try_place(self, queued: _Queued) -> bool:
        is_read = queued.data_out is None
        data_length = queued.data_in_length if is_read else len(queued.data_out)
        needed = self._blocks_for(data_length)
        bidi_needed = self._blocks_for(queued.bidi_in_length)
        if needed + bidi_needed > len(self.free_blocks):
            return False
        # iovec count is known only after choosing blocks: check ring space with that count
        candidate = self.free_blocks[:needed + bidi_needed]
        iovecs = self._iovecs(candidate[:needed], data_length)
        bidi_iovecs = self._iovecs(candidate[needed:], queued.bidi_in_length)
        cdb_len = r.scsi_command_size(queued.cdb)
        entry_size = r.cmd_entry_size(len(iovecs) + len(bidi_iovecs), cdb_len)
        to_end = self.cmdr_size - self.head
        pad = to_end if entry_size > to_end else 0
        if pad + entry_size > self.ring_free():
            return False
        blocks = self._take_blocks(needed)
        bidi_blocks = self._take_blocks(bidi_needed)
        mv = self.mv
        if pad:
            self._write_header(self.head, r.OP_PAD, pad, 0)
            self.pads += 1
            self.head = 0
        entry = r.MAILBOX_SIZE + self.head
        mv[entry:entry + entry_size] = bytes(entry_size)
        struct.pack_into("=III", mv, entry + r.REQ_IOV_CNT, len(iovecs), len(bidi_iovecs), 0)
        for index, (base, length) in enumerate(iovecs + bidi_iovecs):
            struct.pack_into("=QQ", mv, entry + r.REQ_IOV + 16 * index, base, length)
        if not is_read:
            r.scatter(mv, tuple(iovecs), queued.data_out)
        else:
            self._make_stale(blocks)
        self._make_stale(bidi_blocks)
        self.used_before.update(blocks + bidi_blocks)
        cdb_off = entry + max(r.REQ_IOV + 16 * (len(iovecs) + len(bidi_iovecs)), r.CMD_ENTRY_SIZE)
        mv[cdb_off:cdb_off + cdb_len] = queued.cdb
        struct.pack_into("=Q", mv, entry + r.REQ_CDB_OFF, cdb_off)
        self._write_header(self.head, r.OP_CMD, entry_size, queued.cmd_id)
        self.outstanding[queued.cmd_id] = _Outstanding(
            queued.cmd_id, blocks, data_length, is_read, queued.bidi_in_length, bidi_blocks)
        self._publish((self.head + entry_size) % self.cmdr_size)
        return True

    def _make_stale(self, blocks: list[int]) -> None:
        for block in blocks:
            if block in self.used_before:     # new pages are zeroed; reused blocks are not
                base = self.data_offset + block * BLOCK_SIZE
                self.mv[base:base + BLOCK_SIZE] = bytes([STALE_BYTE]) * BLOCK_SIZE

    def _write_header(self, position: int, op: int, length: int, cmd_id: int) -> None:
        struct.pack_into("=IHBB", self.mv, r.MAILBOX_SIZE + position, length | op, cmd_id, 0, 0)

    def _publish(self, head: int) -> None:
        self.head = head
        struct.pack_into("=I", self.mv, r.MB_CMD_HEAD, head)
        self.notifications += 1

    def queue_tmr(self, tmr_type: int, cmd_ids: list[int]) -> None:
        size = r.tmr_entry_size(len(cmd_ids))
        to_end = self.cmdr_size - self.head
        pad = to_end if size > to_end else 0
        if pad + size > self.ring_free():
            raise RuntimeError("no ring space for the TMR entry (the kernel would queue it)")
        if pad:
            self._write_header(self.head, r.OP_PAD, pad, 0)
            self.pads += 1
            self.head = 0
        entry = r.MAILBOX_SIZE + self.head
        self.mv[entry:entry + size] = bytes(size)
        struct.pack_into("=B3xI", self.mv, entry + r.TMR_TYPE, tmr_type, len(cmd_ids))
        struct.pack_into(f"={len(cmd_ids)}H", self.mv, entry + r.TMR_CMD_IDS, *cmd_ids)
        self._write_header(self.head, r.OP_TMR, size, 0)
        self._publish((self.head + size) % self.cmdr_size)

    # -- completions (tcmu_handle_completions) -------------------------------------------

    def collect_completions(self) -> list[Completion]:
        """What the kernel does on the handler's ``write()`` to the uio fd."""
        if self.broken:
            return []
        done: list[Completion] = []
        tail = self._tail()
        mv = self.mv
        while self.last_cleaned != tail:
            slot = r.MAILBOX_SIZE + self.last_cleaned
            len_op, cmd_id, _kflags, uflags = struct.unpack_from("=IHBB", mv, slot)
            op, length = len_op & r.OP_MASK, len_op & ~r.OP_MASK
            if op in (r.OP_PAD, r.OP_TMR):
                self.last_cleaned = (self.last_cleaned + length) % self.cmdr_size
                continue
            command = self.outstanding.pop(cmd_id, None)
            if command is None:
                self.broken = True
                raise RingBroken(f"cmd_id {cmd_id} not found, ring is broken")
            status, read_len = struct.unpack_from("=B3xI", mv, slot + r.RSP_SCSI_STATUS)
            sense = bytes(mv[slot + r.RSP_SENSE:slot + r.RSP_SENSE + r.SENSE_BUFFER_SIZE])
            read_len_valid = bool(uflags & r.UFLAG_READ_LEN)
            length_in = command.data_length if command.is_read else 0
            if command.bidi_length:
                length_in = command.bidi_length
            if read_len_valid:
                length_in = min(length_in, read_len)
            data_in = b""
            if status != 0x02 or read_len_valid:
                if command.bidi_length:
                    data_in = r.gather(mv, tuple(self._iovecs(command.bidi_blocks, length_in)))
                elif command.is_read:
                    data_in = r.gather(mv, tuple(self._iovecs(command.blocks, length_in)))
            done.append(Completion(cmd_id, status, sense if status == 0x02 else b"",
                                   bytes(data_in), read_len if read_len_valid else None, uflags))
            self.free_blocks = sorted(self.free_blocks + command.blocks + command.bidi_blocks)
            self.last_cleaned = (self.last_cleaned + length) % self.cmdr_size
        while self.qfull and self._try_place(self.qfull[0]):   # run the qfull queue
            self.qfull.popleft()
        return done

    def reset_ring(self) -> list[int]:
        """``action/reset_ring``: fail everything in flight, zero head and tail."""
        failed = list(self.outstanding)
        for command in self.outstanding.values():
            self.free_blocks.extend(command.blocks + command.bidi_blocks)
        self.free_blocks.sort()
        self.outstanding.clear()
        self.head = self.last_cleaned = 0
        struct.pack_into("=I", self.mv, r.MB_CMD_HEAD, 0)
        struct.pack_into("=I", self.mv, r.MB_CMD_TAIL, 0)
        self.broken = False
        return failed

