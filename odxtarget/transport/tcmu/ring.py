"""Sans-IO views over a TCMU device's shared memory: mailbox, command ring, completions.

Theory of operation
-------------------
The kernel (``target_core_user``) and the handler share one mapping (uio map 0)::

    0                  CMDR_OFF (128)                   data area (page aligned)        map0 size
    | struct tcmu_mailbox | command ring (cmdr_size bytes) | data blocks                        |

The kernel produces ring entries and moves ``cmd_head`` (a byte offset into the ring); the
handler consumes them and moves ``cmd_tail``. Entries are 8-byte aligned, never split at the
wrap (the kernel writes a PAD entry up to the end first), and hold only a command id, the
CDB and iovecs into the data area: no initiator or I_T nexus identity (uapi
``linux/target_core_user.h``).

Completions are written *into ring slots*: a response overlays the request it answers, so a
command's CDB and iovecs are copied out (``CommandRing.fetch``) before any response is
written. The kernel consumes completions strictly in ring order, identifying each one by the
slot's ``cmd_id``; to finish command X before older ones (``TCMU_MAILBOX_FLAG_CAP_OOOC``),
``CommandRing.complete`` writes X's response into the oldest unconsumed command slot and
overwrites that slot's ``cmd_id`` -- the same "steal the slot" trick libtcmu uses.

Slots and data blocks have different lifetimes: a slot is free for the kernel once the tail
has passed it, whichever command's completion that was; a command's data blocks stay its own
until the kernel consumes the completion carrying its ``cmd_id``. So a view on the data area
(``gather``) stays valid until that command is completed, however many completions of other
commands go through first (docs/lio.md, "How commands are served").

Nothing here does I/O: a ``CommandRing`` works on any writable buffer laid out like the
mapping, which is how the tests drive it with a simulated kernel. The caller notifies the
kernel (``write()`` on the uio fd) after completing a batch.

Memory ordering: the kernel publishes ``cmd_head`` with a release store. On x86-64 (TSO) our
plain loads are ordered, so reading the head once per batch and then the entries is safe; the
uio ``read()`` that precedes every batch is a full barrier too. Weakly ordered CPUs would
need an acquire fence after the head load that CPython cannot express (tcmu-runner #688).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- uapi constants (include/uapi/linux/target_core_user.h) -------------------------------------

MAILBOX_VERSION = 2
MAILBOX_SIZE = 128                 # sizeof(struct tcmu_mailbox): cmd_tail is aligned(64)

FLAG_CAP_OOOC = 1 << 0             # out-of-order completion
FLAG_CAP_READ_LEN = 1 << 1         # rsp.read_len honoured with UFLAG_READ_LEN
FLAG_CAP_TMR = 1 << 2              # TMR notification entries
FLAG_CAP_KEEP_BUF = 1 << 3

OP_PAD = 0
OP_CMD = 1
OP_TMR = 2
OP_MASK = 0x7
OP_ALIGN = 8

UFLAG_UNKNOWN_OP = 0x1
UFLAG_READ_LEN = 0x2
UFLAG_KEEP_BUF = 0x4

SENSE_BUFFER_SIZE = 96             # TCMU_SENSE_BUFFERSIZE
CMD_ENTRY_SIZE = 112               # sizeof(struct tcmu_cmd_entry)
TMR_ENTRY_SIZE = 32                # sizeof(struct tcmu_tmr_entry)
IOVEC_SIZE = 16
MAX_CMD_ID = 0xFFFF                # kernel allocates ids in [1, 0xffff]

# struct tcmu_mailbox
MB_VERSION = 0                     # u16, kernel
MB_FLAGS = 2                       # u16, kernel
MB_CMDR_OFF = 4                    # u32, kernel
MB_CMDR_SIZE = 8                   # u32, kernel
MB_CMD_HEAD = 12                   # u32, kernel (producer)
MB_CMD_TAIL = 64                   # u32, user (consumer), own cache line

# struct tcmu_cmd_entry_hdr (8 bytes) + req/rsp unions
HDR_LEN_OP = 0                     # u32: low 3 bits op, rest length
HDR_CMD_ID = 4                     # u16
HDR_KFLAGS = 6                     # u8
HDR_UFLAGS = 7                     # u8
REQ_IOV_CNT = 8                    # u32
REQ_IOV_BIDI_CNT = 12              # u32
REQ_IOV_DIF_CNT = 16               # u32
REQ_CDB_OFF = 24                   # u64, absolute offset from the mailbox
REQ_IOV = 48                       # struct iovec[]: u64 base (offset from mailbox), u64 len
RSP_SCSI_STATUS = 8                # u8
RSP_READ_LEN = 12                  # u32
RSP_SENSE = 16                     # u8[96]

# struct tcmu_tmr_entry
TMR_TYPE = 8                       # u8
TMR_CMD_CNT = 12                   # u32
TMR_CMD_IDS = 32                   # u16[]


class TmrType:
    """``enum tcmu_tmr_type``: what the initiator asked LIO to do."""

    UNKNOWN = 0
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LUN_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    LUN_RESET_PRO = 128            # a reset caused by PERSISTENT RESERVE OUT (preempt and abort)


_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_HEADER = struct.Struct("=IHBB")
_REQUEST = struct.Struct("=III4xQ")          # iov_cnt, iov_bidi_cnt, iov_dif_cnt, cdb_off
_IOVEC = struct.Struct("=QQ")
_TMR = struct.Struct("=B3xI")                # tmr_type, cmd_cnt
_STATUS_AND_READ_LEN = struct.Struct("=B3xI")
_MAILBOX = struct.Struct("=HHIII")           # version, flags, cmdr_off, cmdr_size, cmd_head

#: CDB length by opcode group (SAM-5 5.2; the kernel's scsi_command_size table).
_CDB_LENGTH_BY_GROUP = (6, 10, 10, 12, 16, 12, 10, 10)
VARIABLE_LENGTH_CDB = 0x7F


class RingError(Exception):
    """The mapping is not a usable TCMU ring (bad version, corrupt entry, protocol misuse)."""


def scsi_command_size(cdb_start: bytes | memoryview) -> int:
    """Length of the CDB starting at ``cdb_start`` (what the kernel copied into the entry)."""
    opcode = cdb_start[0]
    if opcode == VARIABLE_LENGTH_CDB:
        return 8 + cdb_start[7]               # SPC-4 4.2.4: ADDITIONAL CDB LENGTH at byte 7
    return _CDB_LENGTH_BY_GROUP[(opcode >> 5) & 7]


def round_up(value: int, alignment: int = OP_ALIGN) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def cmd_entry_size(iov_count: int, cdb_length: int) -> int:
    """Ring bytes a CMD entry takes: base (at least the struct) then the CDB, 8-aligned."""
    return max(REQ_IOV + IOVEC_SIZE * iov_count, CMD_ENTRY_SIZE) + round_up(cdb_length)


def tmr_entry_size(cmd_count: int) -> int:
    return round_up(TMR_ENTRY_SIZE + 2 * cmd_count)


@dataclass(slots=True)
class RingCommand:
    """A CMD entry copied out of the ring: safe to keep after its slot is overwritten.

    ``iovecs`` are (offset, length) pairs, offsets from the start of the mapping: the data
    buffer (Data-Out already filled by the kernel, or room for Data-In). For a bidirectional
    command ``bidi_iovecs`` is the Data-In part.
    """

    cmd_id: int
    cdb: bytes
    iovecs: tuple[tuple[int, int], ...]
    data_length: int
    bidi_iovecs: tuple[tuple[int, int], ...] = ()


@dataclass(slots=True)
class TmrNotification:
    """A TMR entry: LIO ran a task management function; ``cmd_ids`` were aborted by it and are
    still on the ring, waiting for us to complete them (any status; LIO answers them)."""

    tmr_type: int
    cmd_ids: tuple[int, ...]


class CommandRing:
    """The handler's side of one TCMU command ring.

    One instance per open device; every call comes from one thread. ``fetch`` returns what
    the kernel queued since the last call; ``complete`` answers one command; the caller then
    notifies the kernel once per batch.
    """

    def __init__(self, mapping: memoryview | bytearray):
        mv = memoryview(mapping)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if mv.readonly:
            raise RingError("the TCMU mapping must be writable")
        if len(mv) < MAILBOX_SIZE:
            raise RingError(f"mapping of {len(mv)} bytes is smaller than the mailbox")
        version, flags, cmdr_off, cmdr_size, _head = _MAILBOX.unpack_from(mv, 0)
        if version != MAILBOX_VERSION:
            raise RingError(f"mailbox version {version}, expected {MAILBOX_VERSION}")
        if cmdr_off != MAILBOX_SIZE:
            raise RingError(f"command ring at offset {cmdr_off}, expected {MAILBOX_SIZE}")
        if cmdr_size < CMD_ENTRY_SIZE or cmdr_size % OP_ALIGN or cmdr_off + cmdr_size > len(mv):
            raise RingError(f"command ring size {cmdr_size} does not fit a {len(mv)}-byte mapping")
        self._mv = mv
        self.flags = flags
        self.cmdr_off = cmdr_off
        self.cmdr_size = cmdr_size
        self.data_offset = round_up(cmdr_off + cmdr_size, 4096)
        tail = _U32.unpack_from(mv, MB_CMD_TAIL)[0]
        if tail >= cmdr_size or tail % OP_ALIGN:
            raise RingError(f"cmd_tail {tail} is not a valid ring offset")
        self._tail = tail          # our copy of mb->cmd_tail (we are its only writer)
        self._fetched = tail       # where the next fetch starts; [tail, fetched) awaits completion
        self._outstanding = 0      # fetched CMD entries not yet completed

    # -- capabilities --------------------------------------------------------------------

    @property
    def supports_out_of_order(self) -> bool:
        return bool(self.flags & FLAG_CAP_OOOC)

    @property
    def supports_read_len(self) -> bool:
        return bool(self.flags & FLAG_CAP_READ_LEN)

    @property
    def supports_tmr(self) -> bool:
        return bool(self.flags & FLAG_CAP_TMR)

    @property
    def outstanding(self) -> int:
        """Commands fetched and not yet completed."""
        return self._outstanding

    @property
    def memory(self) -> memoryview:
        return self._mv

    def head(self) -> int:
        return _U32.unpack_from(self._mv, MB_CMD_HEAD)[0]

    def tail(self) -> int:
        return self._tail

    def idle(self) -> bool:
        """The kernel has nothing on the ring we have not consumed (clean-stop check)."""
        return self._tail == self.head()

    # -- consuming ----------------------------------------------------------------------

    def fetch(self) -> list[RingCommand | TmrNotification]:
        """Copy out every entry between our cursor and ``cmd_head`` (read once).

        PAD entries are stepped over; TMR entries become ``TmrNotification``. Leading PAD and
        TMR entries are consumed at once (tail moves), so call ``notify`` afterwards if
        ``tail()`` changed.

        Raises:
            RingError: an entry with a zero or oversized length (the ring is corrupt).
        """
        mv = self._mv
        size = self.cmdr_size
        base = self.cmdr_off
        head = _U32.unpack_from(mv, MB_CMD_HEAD)[0]
        if head >= size or head % OP_ALIGN:
            raise RingError(f"cmd_head {head} is not a valid ring offset")
        position = self._fetched
        entries: list[RingCommand | TmrNotification] = []
        append = entries.append
        while position != head:
            entry = base + position
            len_op, cmd_id, _kflags, uflags = _HEADER.unpack_from(mv, entry)
            length = len_op & ~OP_MASK
            if length == 0 or length > size - position:
                raise RingError(f"ring entry at {position} has bad length {length}")
            op = len_op & OP_MASK
            if op == OP_CMD:
                append(self._read_command(entry, cmd_id, length))
                self._outstanding += 1
            elif op == OP_TMR:
                append(self._read_tmr(entry, length))
            elif op != OP_PAD:
                # An entry type this handler does not know: flag it, as the uapi asks.
                mv[entry + HDR_UFLAGS] = uflags | UFLAG_UNKNOWN_OP
            position += length
            if position == size:
                position = 0
        self._fetched = position
        self._consume_non_commands()
        return entries

    def _read_command(self, entry: int, cmd_id: int, length: int) -> RingCommand:
        mv = self._mv
        iov_cnt, iov_bidi_cnt, _dif, cdb_off = _REQUEST.unpack_from(mv, entry + REQ_IOV_CNT)
        total_iovs = iov_cnt + iov_bidi_cnt
        if REQ_IOV + IOVEC_SIZE * total_iovs > length:
            raise RingError(f"command {cmd_id}: {total_iovs} iovecs overrun a {length}-byte entry")
        if not entry < cdb_off < entry + length:
            raise RingError(f"command {cmd_id}: CDB offset {cdb_off} outside its entry")
        cdb_length = scsi_command_size(mv[cdb_off:cdb_off + 8])
        cdb = bytes(mv[cdb_off:cdb_off + cdb_length])
        if total_iovs == 1:
            base, iov_len = _IOVEC.unpack_from(mv, entry + REQ_IOV)
            return RingCommand(cmd_id, cdb, ((base, iov_len),), iov_len)
        iovecs = tuple(_IOVEC.iter_unpack(mv[entry + REQ_IOV:entry + REQ_IOV + IOVEC_SIZE * total_iovs]))
        data = iovecs[:iov_cnt]
        return RingCommand(cmd_id, cdb, data, sum(n for _, n in data), iovecs[iov_cnt:])

    def _read_tmr(self, entry: int, length: int) -> TmrNotification:
        tmr_type, count = _TMR.unpack_from(self._mv, entry + TMR_TYPE)
        if TMR_CMD_IDS + 2 * count > length:
            raise RingError(f"TMR entry lists {count} commands in {length} bytes")
        ids = struct.unpack_from(f"={count}H", self._mv, entry + TMR_CMD_IDS)
        return TmrNotification(tmr_type, ids)

    def _consume_non_commands(self) -> bool:
        """Step the tail over fetched PAD/TMR entries at its front; True if it moved."""
        mv = self._mv
        tail = self._tail
        moved = False
        while tail != self._fetched:
            len_op = _U32.unpack_from(mv, self.cmdr_off + tail)[0]
            if len_op & OP_MASK == OP_CMD:
                break
            tail += len_op & ~OP_MASK
            if tail == self.cmdr_size:
                tail = 0
            moved = True
        if moved:
            self._tail = tail
            _U32.pack_into(mv, MB_CMD_TAIL, tail)
        return moved

    # -- completing ---------------------------------------------------------------------

    def complete(self, cmd_id: int, status: int, sense: bytes = b"",
                 read_len: int | None = None) -> None:
        """Answer command ``cmd_id`` in the oldest unconsumed slot and advance the tail.

        ``read_len`` (Data-In bytes actually returned) is passed to the kernel only when it
        supports READ_LEN; the caller must zero the rest of the buffer otherwise.

        Raises:
            RingError: nothing is outstanding (completing twice would break the ring).
        """
        if self._outstanding == 0:
            raise RingError(f"completion for command {cmd_id} with no command outstanding")
        mv = self._mv
        size = self.cmdr_size
        tail = self._tail
        while True:  # the outstanding count guarantees a CMD slot before _fetched
            slot = self.cmdr_off + tail
            len_op = _U32.unpack_from(mv, slot)[0]
            if len_op & OP_MASK == OP_CMD:
                break
            tail += len_op & ~OP_MASK
            if tail == size:
                tail = 0
        uflags = 0
        if read_len is not None and self.flags & FLAG_CAP_READ_LEN:
            uflags = UFLAG_READ_LEN
        else:
            read_len = 0
        _U16.pack_into(mv, slot + HDR_CMD_ID, cmd_id)
        mv[slot + HDR_UFLAGS] = uflags
        _STATUS_AND_READ_LEN.pack_into(mv, slot + RSP_SCSI_STATUS, status, read_len)
        if sense:
            sense_len = min(len(sense), SENSE_BUFFER_SIZE)
            start = slot + RSP_SENSE
            mv[start:start + sense_len] = sense[:sense_len]
            mv[start + sense_len:start + SENSE_BUFFER_SIZE] = bytes(SENSE_BUFFER_SIZE - sense_len)
        tail += len_op & ~OP_MASK
        if tail == size:
            tail = 0
        self._tail = tail
        self._outstanding -= 1
        _U32.pack_into(mv, MB_CMD_TAIL, tail)   # publish after the response bytes
        self._consume_non_commands()

    def reset(self) -> None:
        """Forget every fetched command (after the kernel's ``reset_ring``): restart at the
        mailbox's tail."""
        tail = _U32.unpack_from(self._mv, MB_CMD_TAIL)[0]
        self._tail = self._fetched = tail
        self._outstanding = 0


# -- data area access ---------------------------------------------------------------------------


def gather(memory: memoryview, iovecs: tuple[tuple[int, int], ...]) -> memoryview | bytes:
    """The bytes an iovec list points at: a zero-copy view for one iovec, a copy otherwise.

    A view is only valid until the command is completed (the kernel may reuse the blocks).
    """
    if len(iovecs) == 1:
        base, length = iovecs[0]
        return memory[base:base + length]
    return b"".join([memory[base:base + length] for base, length in iovecs])


def scatter(memory: memoryview, iovecs: tuple[tuple[int, int], ...],
            data: bytes | bytearray | memoryview) -> int:
    """Copy ``data`` into the buffers of an iovec list, in order; returns bytes written."""
    if len(iovecs) == 1:
        base, length = iovecs[0]
        count = min(length, len(data))
        memory[base:base + count] = data[:count] if count != len(data) else data
        return count
    view = memoryview(data)
    written = 0
    for base, length in iovecs:
        count = min(length, len(view) - written)
        if count <= 0:
            break
        memory[base:base + count] = view[written:written + count]
        written += count
    return written


def zero_fill(memory: memoryview, iovecs: tuple[tuple[int, int], ...], start: int) -> None:
    """Zero the iovec buffer from byte ``start`` on, so no stale data reaches the initiator
    when the kernel cannot be told a shorter READ_LEN."""
    position = 0
    for base, length in iovecs:
        end = position + length
        if end > start:
            first = max(start, position) - position
            memory[base + first:base + length] = bytes(length - first)
        position = end
