"""A logical unit: one backend, its geometry and limits, mode pages, and per-nexus state.

Theory of operation
-------------------
State that SAM-5/SPC-4 keep per I_T nexus lives here, keyed by ``ItNexus``:

* unit attentions (SAM-5 5.14): a short FIFO per nexus. A nexus seen for the first time gets
  POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h); a LOGICAL UNIT RESET gives every
  known nexus 29h/03h, a target reset 29h/00h, a lost nexus 29h/07h when it returns; MODE
  SELECT gives the *other* nexuses MODE PARAMETERS CHANGED (2Ah/01h); ``capacity_changed``
  gives everyone CAPACITY DATA HAS CHANGED (2Ah/09h);
* the SPC-2 reservation holder (RESERVE/RELEASE), released by reset, logout and nexus loss;
* persistent reservations (``persistent_reservations``, SPC-4 5.13), which survive all three;
  ``pr_reservation`` mirrors the reservation held (None: none) for the dispatcher's fast path.

Mode parameters are shared by all nexuses (one set per LU); ``mode_limits`` says which of them
the configuration lets MODE SELECT change. A LU may be mapped into several targets; all of its
state is here, so that works. Commands are run by ``dispatch.execute``.

Storage errors
--------------
Handlers reach the backend through ``read_blocks_into``, ``write_blocks``,
``deallocate_blocks`` and ``synchronize_cache``, which turn an ``OSError`` into sense
(docs/errors.md): ENOSPC/EDQUOT become DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT
(07h/27h/07h), a failed read MEDIUM ERROR, UNRECOVERED READ ERROR (03h/11h/00h), any other
failed write MEDIUM ERROR, WRITE ERROR (03h/0Ch/00h). A failed flush (a ``WriteBackError``, or
any error of ``Backend.flush``) puts the LU in the *write-back failed* state
(``write_back_failure``): data acknowledged earlier may be lost, so from then on SYNCHRONIZE
CACHE, FUA writes and writes with the write cache off end with 03h/0Ch/00h until an
administrator clears it (``clear_write_back_failure``, after reopening the storage).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

from odxtarget import __version__
from odxtarget.scsi.command_table import CommandTable
from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.errors import MediumError, ScsiError, SpaceAllocationFailed
from odxtarget.scsi.dispatch import execute as dispatch_execute
from odxtarget.scsi.execution import Pending, StorageCall, StorageWork, TaskSet
from odxtarget.scsi.io_stats import IoStats
from odxtarget.scsi.mode_pages import ModeLimits, ModeState
from odxtarget.scsi.pr_state import PersistentReservations, Reservation, ReservationStore
from odxtarget.scsi.shared_reservations import ReservationState, SharedReservations
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult
from odxtarget.storage.backend import Backend, CompareReadError, WriteBackError

log = logging.getLogger(__name__)

SUPPORTED_BLOCK_SIZES = (512, 4096)
#: The exponent field of READ CAPACITY(16) has 4 bits (SBC-4 5.20.2).
MAX_BLOCKS_PER_PHYSICAL_BLOCK = 1 << 15
#: Pending unit attentions kept per nexus; older ones beyond this are dropped (SAM-5 5.14.1
#: lets a device server report only the highest priority one).
MAX_PENDING_UNIT_ATTENTIONS = 4
#: Nexuses remembered for I_T NEXUS LOSS reporting, so a churn of sessions cannot grow memory.
MAX_REMEMBERED_NEXUSES = 4096

# Limits reported in the Block Limits VPD page (SBC-4 6.6.4) and enforced by the handlers.
MAX_TRANSFER_BYTES = 16 * 1024 * 1024
OPTIMAL_TRANSFER_BYTES = 1024 * 1024
MAX_COMPARE_AND_WRITE_BLOCKS = 255
#: 2^20: libiscsi (Inquiry.BlockLimits) calls a finite MAXIMUM UNMAP LBA COUNT above 1M insane.
MAX_UNMAP_BLOCKS = 1 << 20
MAX_UNMAP_DESCRIPTORS = 1024
MAX_WRITE_SAME_BYTES = 32 * 1024 * 1024
#: The most one piece of storage work deallocates (UNMAP, WRITE SAME with UNMAP): punching a
#: hole of this size takes milliseconds, so no worker is held long by one huge UNMAP.
DEALLOCATE_STEP_BYTES = 256 * 1024 * 1024
#: WRITE SAME(16) of 65536 blocks makes libiscsi's WriteSame16.Unmap READ 64 Ki blocks back,
#: beyond MAXIMUM TRANSFER LENGTH; staying below makes it expect a refusal instead.
MAX_WRITE_SAME_BLOCKS = 0xFFFF
#: Preferred unmap/transfer granularity: 4 KiB, the usual filesystem block.
PREFERRED_GRANULARITY_BYTES = 4096
#: Storage errors that mean "no room" (filesystem, thin pool or quota full), reported as
#: SPACE ALLOCATION FAILED WRITE PROTECT so that hosts treat them as exhaustion, not media damage.
OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _default_revision() -> str:
    return __version__[:4].rstrip(".")


@dataclass
class LogicalUnitConfig:
    """What a logical unit is made of (the core contract)."""

    name: str
    backend: Backend
    block_size: int = 512
    read_only: bool = False
    serial: str | None = None
    wwn: str | None = None
    write_cache: bool = True
    physical_block_size: int | None = None  # None: same as block_size (512e LUNs say 4096)
    removable: bool = False                 # RMB=1: START STOP UNIT can eject and load the medium
    vendor: str = "ODXTGT"
    product: str = "odxtarget"
    revision: str = _default_revision()


@dataclass(frozen=True, slots=True)
class WriteBackFailure:
    """The flush failure that put a LU in the write-back failed state (docs/errors.md)."""

    error: str
    #: ``time.time()`` of the failure: data written before it may be lost.
    since: float


def derive_serial(name: str) -> str:
    """A stable unit serial number from the storage object name (VPD 80h)."""
    return hashlib.sha256(b"odxtarget-serial:" + name.encode()).hexdigest()[:24]


def derive_naa(serial: str) -> bytes:
    """A stable 16-byte NAA-6 (IEEE Registered Extended) designator from the serial.

    NAA 6h in the top nibble; the remaining 124 bits come from a hash of the serial, so the
    designator survives restarts and differs between LUs (SPC-4 7.8.6.6.5).
    """
    digest = bytearray(hashlib.sha256(b"odxtarget-naa:" + serial.encode()).digest()[:16])
    digest[0] = 0x60 | (digest[0] & 0x0F)
    return bytes(digest)


def parse_wwn(wwn: str) -> bytes:
    text = wwn.strip().lower().removeprefix("naa.").replace(":", "").replace("-", "")
    if len(text) != 32 or text[0] != "6":
        raise ValueError(f"wwn {wwn!r}: need 32 hex digits starting with 6 (NAA-6)")
    return bytes.fromhex(text)


class LogicalUnit:
    """One SCSI direct-access block device (peripheral device type 0).

    Public attributes the copy manager may use: ``commands`` (a ``CommandTable`` to
    ``register`` more commands into), ``vpd_pages`` (a ``VpdRegistry`` to register more VPD
    pages into), ``third_party_copy`` (the standard INQUIRY 3PC bit), ``backend``,
    ``block_size``, ``block_count``, ``naa_designator``.
    """

    def __init__(self, config: LogicalUnitConfig, commands: CommandTable | None = None):
        if config.block_size not in SUPPORTED_BLOCK_SIZES:
            raise ValueError(f"block size {config.block_size}: only {SUPPORTED_BLOCK_SIZES} supported")
        if config.backend.size % config.block_size:
            raise ValueError(f"backend size {config.backend.size} is not a multiple of {config.block_size}")
        from odxtarget.scsi.handlers import standard_command_table
        from odxtarget.scsi.handlers.inquiry import standard_vpd_pages

        physical = config.physical_block_size or config.block_size
        ratio = physical // config.block_size
        if physical % config.block_size or ratio & (ratio - 1) or ratio > MAX_BLOCKS_PER_PHYSICAL_BLOCK:
            raise ValueError(f"physical block size {physical} is not a power-of-two multiple of {config.block_size}")
        self.config = config
        #: LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT of READ CAPACITY(16) (SBC-4 5.20.2).
        self.blocks_per_physical_block_exponent = ratio.bit_length() - 1
        self.removable = config.removable
        self.medium_present = True
        #: Nexuses that sent PREVENT ALLOW MEDIUM REMOVAL with PREVENT=01b (SBC-4 5.x).
        self.preventing_removal: set[ItNexus] = set()
        self.name = config.name
        self.backend = config.backend
        self.block_size = config.block_size
        self.read_only = config.read_only
        self.serial = config.serial or derive_serial(config.name)
        self.naa_designator = parse_wwn(config.wwn) if config.wwn else derive_naa(self.serial)
        self.commands = commands if commands is not None else standard_command_table()
        self.vpd_pages = standard_vpd_pages()
        self.third_party_copy = False
        #: Callables ``(lu, event, nexus)`` told of "reset" and "nexus_lost" (loss or logout),
        #: so layers above the core (the copy manager) can drop per-nexus state with it.
        self.event_listeners: list = []
        #: Callables ``(lu, offset, length)`` told before any command changes those bytes of
        #: the medium (writes, WRITE SAME, UNMAP, COMPARE AND WRITE), so the copy manager can
        #: cancel the live ROD tokens over them (SPC-4 5.16.6.3). Copies that write through the
        #: copy manager's own path call ``announce_change`` likewise.
        self.change_listeners: list[Callable[["LogicalUnit", int, int], None]] = []
        #: The commands that wait for storage, ordered by their task attributes (SAM-5 8.6).
        self.task_set = TaskSet()
        #: READ/WRITE commands and bytes and command latency, for metrics (``io_stats``).
        self.io_stats = IoStats()
        self.default_mode = ModeState(write_cache=config.write_cache)
        self.mode = self.default_mode.copy()
        #: A write cache the configuration turned off stays off (SPC-4 6.9, docs/configuration.md).
        self.mode_limits = ModeLimits(write_cache_changeable=config.write_cache)
        #: Set by a failed flush, cleared only by an administrator (module docstring).
        self.write_back_failure: WriteBackFailure | None = None
        self.block_count = self.backend.size // self.block_size
        self.max_transfer_blocks = MAX_TRANSFER_BYTES // self.block_size
        self.max_write_same_blocks = min(MAX_WRITE_SAME_BLOCKS, MAX_WRITE_SAME_BYTES // self.block_size)
        self.max_compare_and_write_blocks = MAX_COMPARE_AND_WRITE_BLOCKS
        self.max_unmap_blocks = MAX_UNMAP_BLOCKS
        self.max_unmap_descriptors = MAX_UNMAP_DESCRIPTORS
        self.granularity_blocks = max(1, PREFERRED_GRANULARITY_BYTES // self.block_size)
        self.reservation_holder: ItNexus | None = None
        #: The persistent reservation held, if any: what the dispatcher tests on every command.
        self.pr_reservation: Reservation | None = None
        self.persistent_reservations = PersistentReservations(self._publish_pr_reservation)
        #: Set when several gateways serve this LU: reservation changes go through it
        #: (``odxtarget.scsi.shared_reservations``), and the state above is its local copy.
        self.shared_reservations: SharedReservations | None = None
        #: The version of the shared state last adopted (0: none yet), and its SPC-2 holder.
        self.shared_version = 0
        self.shared_spc2_holder: ItNexus | None = None
        #: With shared reservations: the relative target ports this gateway serves.
        self._local_ports: frozenset[int] | None = None
        self._known_nexuses: set[ItNexus] = set()
        self._unit_attentions: dict[ItNexus, list[Ascq]] = {}

    # -- commands -------------------------------------------------------------------------

    def execute(self, command: ScsiCommand, target=None) -> ScsiResult | Pending:
        """Run one command; never raises (see ``dispatch.execute``)."""
        return dispatch_execute(self, command, target)

    # -- per-nexus state ------------------------------------------------------------------

    def is_known(self, nexus: ItNexus) -> bool:
        return nexus in self._known_nexuses

    def register_nexus(self, nexus: ItNexus) -> None:
        """First command from a nexus: it has not seen the power-on condition yet."""
        if len(self._known_nexuses) >= MAX_REMEMBERED_NEXUSES:
            self._forget_idle_nexuses()
        self._known_nexuses.add(nexus)
        self._unit_attentions.setdefault(nexus, [Ascq.POWER_ON_RESET_OR_BUS_DEVICE_RESET])

    def _forget_idle_nexuses(self) -> None:
        for nexus in list(self._known_nexuses):
            if nexus != self.reservation_holder:
                self._known_nexuses.discard(nexus)
                self._unit_attentions.pop(nexus, None)

    def known_nexuses(self) -> frozenset[ItNexus]:
        """The I_T nexuses that have reached this LU (and are remembered)."""
        return frozenset(self._known_nexuses)

    def has_unit_attention(self) -> bool:
        return bool(self._unit_attentions)

    def pending_unit_attentions(self, nexus: ItNexus) -> tuple[Ascq, ...]:
        return tuple(self._unit_attentions.get(nexus, ()))

    def pop_unit_attention(self, nexus: ItNexus) -> Ascq | None:
        """Report-and-clear the oldest unit attention of a nexus (SAM-5 5.14.2)."""
        queue = self._unit_attentions.get(nexus)
        if not queue:
            return None
        condition = queue.pop(0)
        if not queue:
            del self._unit_attentions[nexus]
        return condition

    def establish_unit_attention(self, condition: Ascq, exclude: ItNexus | None = None,
                                 replace: bool = False) -> None:
        """Queue ``condition`` for every known nexus but ``exclude``; ``replace`` drops what was
        pending (a reset supersedes older conditions)."""
        for nexus in self._known_nexuses:
            if nexus == exclude:
                continue
            queue = self._unit_attentions.get(nexus)
            if queue is None or replace:
                self._unit_attentions[nexus] = [condition]
            elif condition not in queue and len(queue) < MAX_PENDING_UNIT_ATTENTIONS:
                queue.append(condition)

    def queue_unit_attention(self, nexus: ItNexus, condition: Ascq) -> None:
        """Queue ``condition`` for one nexus (persistent reservation events, SPC-4 5.13.11).
        A nexus not seen since its logout gets the power-on condition when it returns instead."""
        if nexus not in self._known_nexuses:
            return
        queue = self._unit_attentions.get(nexus)
        if queue is None:
            self._unit_attentions[nexus] = [condition]
        elif condition not in queue and len(queue) < MAX_PENDING_UNIT_ATTENTIONS:
            queue.append(condition)

    def _publish_pr_reservation(self, reservation: Reservation | None) -> None:
        self.pr_reservation = reservation

    def persist_reservations(self, store: ReservationStore) -> bool:
        """Keep persistent reservations with APTPL in ``store`` and restore what it holds
        (daemon start); True when a saved state was restored."""
        restored = self.persistent_reservations.attach_store(store)
        if restored:
            log.info("%s: restored %d persistent reservation registration(s)", self.name,
                     len(self.persistent_reservations.registrations))
        return restored

    def share_reservations(self, store: SharedReservations, local_ports: frozenset[int]) -> None:
        """Keep reservations in ``store`` from now on (docs/cluster.md); APTPL is always
        honoured there, so no ``ReservationStore`` is needed. ``local_ports`` are the relative
        target ports of this gateway: only their nexuses get unit attentions queued here."""
        self.shared_reservations = store
        self._local_ports = frozenset(local_ports)
        self.persistent_reservations.always_persistent = True

    def serves_port(self, nexus: ItNexus) -> bool:
        """Does ``nexus`` reach this LU through this daemon (always, without shared reservations)?"""
        return self._local_ports is None or nexus.relative_target_port_id in self._local_ports

    def adopt_shared_reservations(self, document: dict | None, version: int) -> bool:
        """Take the shared reservation state stored at ``version`` unless this LU already holds
        that version or a newer one; ValueError when the document is malformed."""
        if version <= self.shared_version:
            return False
        state = ReservationState.from_document(document)
        self.persistent_reservations.adopt(state.persistent)
        self.reservation_holder = self.shared_spc2_holder = state.spc2_holder
        self.shared_version = version
        return True

    def replace_backend(self, backend, *, read_only: bool) -> None:
        """Put reopened storage under this LU (live resize, read-only flag).

        A size change establishes CAPACITY DATA HAS CHANGED.
        """
        resized = backend.size != self.backend.size
        self.backend = backend
        self.config.backend = backend
        self.config.read_only = read_only
        self.read_only = read_only
        if resized:
            self.capacity_changed()

    def capacity_changed(self) -> None:
        """The backend was resized: new geometry, and CAPACITY DATA HAS CHANGED for everyone."""
        if self.backend.size % self.block_size:
            log.warning("%s: backend size %d is not a multiple of %d; tail ignored",
                        self.name, self.backend.size, self.block_size)
        self.block_count = self.backend.size // self.block_size
        self.establish_unit_attention(Ascq.CAPACITY_DATA_HAS_CHANGED)

    def mode_parameters_changed(self, by: ItNexus) -> None:
        self.establish_unit_attention(Ascq.MODE_PARAMETERS_CHANGED, exclude=by)

    def reset(self, condition: Ascq = Ascq.BUS_DEVICE_RESET_FUNCTION_OCCURRED, *,
              unit_attention: bool = True) -> None:
        """LOGICAL UNIT RESET or target reset (SAM-5 6.3): clear the SPC-2 reservation, restore
        default mode parameters, unit attention for every nexus (the issuer included).
        Persistent reservations are not touched (SPC-4 5.13.1). ``unit_attention=False`` is for
        a front end whose fabric reports the reset to the nexuses itself (LIO)."""
        self.reservation_holder = None
        self.preventing_removal.clear()
        self.mode = self.default_mode.copy()
        if unit_attention:
            self.establish_unit_attention(condition, replace=True)
        self._notify("reset", None)

    def nexus_lost(self, nexus: ItNexus) -> None:
        """The nexus failed: drop its SPC-2 reservation (its persistent reservation registration
        stays, SPC-4 5.13.1); it sees I_T NEXUS LOSS when it comes back."""
        if self.reservation_holder == nexus:
            self.reservation_holder = None
        self.preventing_removal.discard(nexus)
        if len(self._known_nexuses) >= MAX_REMEMBERED_NEXUSES and nexus not in self._known_nexuses:
            self._forget_idle_nexuses()
        self._known_nexuses.add(nexus)
        self._unit_attentions[nexus] = [Ascq.I_T_NEXUS_LOSS_OCCURRED]
        self._notify("nexus_lost", nexus)

    def nexus_logged_out(self, nexus: ItNexus) -> None:
        """Clean logout: release its reservation and forget it."""
        if self.reservation_holder == nexus:
            self.reservation_holder = None
        self.preventing_removal.discard(nexus)
        self._known_nexuses.discard(nexus)
        self._unit_attentions.pop(nexus, None)
        self._notify("nexus_lost", nexus)

    def _notify(self, event: str, nexus: ItNexus | None) -> None:
        for listener in self.event_listeners:
            listener(self, event, nexus)

    # -- helpers for handlers ---------------------------------------------------------------

    @property
    def thin_provisioned(self) -> bool:
        """The LU reports logical block provisioning (LBPME, UNMAP, WRITE SAME with UNMAP): only
        where its storage really frees space on deallocation (SBC-4 4.7.2)."""
        return self.backend.can_deallocate

    @property
    def write_protected(self) -> bool:
        return self.read_only or self.mode.software_write_protect

    # -- storage access and its errors (docs/errors.md) -----------------------------------------

    # Each method that may wait for a disk is a generator of ``StorageWork`` that the handler
    # runs with ``yield from`` (execution.py): the core never waits, the front end's workers do.

    def read_blocks_now(self, lba: int, buf: memoryview) -> bool:
        """Fill ``buf`` from ``lba`` on if that needs no disk access (the data is cached);
        False when it would have to wait. The READ hot path (docs/execution.md)."""
        try:
            return self.backend.try_read_into(lba * self.block_size, buf)
        except OSError as exc:
            raise self.read_error(lba, exc) from exc

    def read_blocks(self, lba: int, buf: bytearray | memoryview, *,
                    cached: bool = True) -> Generator[StorageWork, object, None]:
        """Fill ``buf`` from ``lba`` on; a storage error becomes the command's sense.
        ``cached=False``: the caller already found the data not cached, go to the disk."""
        backend = self.backend
        offset = lba * self.block_size
        try:
            if not cached or not backend.try_read_into(offset, memoryview(buf)):
                yield backend.read_work(offset, buf)
        except OSError as exc:
            raise self.read_error(lba, exc) from exc

    def write_blocks(self, lba: int, data: memoryview | bytes, *,
                     fua: bool) -> Generator[StorageWork, object, None]:
        """Write whole blocks at ``lba``. ``fua`` (the FUA bit, SBC-4 5.40) or the write cache
        being off asks for them to be durable before GOOD, which a LU whose write-back failed
        refuses."""
        durable = self._durable(lba, fua)
        backend = self.backend
        offset = lba * self.block_size
        self.announce_change(offset, len(data))
        try:
            yield backend.write_work(offset, data, durable)
        except OSError as exc:
            raise self.write_error(lba, exc) from exc

    def _durable(self, lba: int, fua: bool) -> bool:
        """Whether a write must be durable before GOOD (FUA, or the write cache off); refused
        while the LU's write-back has failed (docs/errors.md)."""
        durable = fua or not self.mode.write_cache
        failure = self.write_back_failure
        if durable and failure is not None:
            raise self._write_back_refusal(lba, failure)
        return durable

    def compare_and_write_blocks(self, lba: int, expected: memoryview, data: memoryview, *,
                                 fua: bool) -> Generator[StorageWork, object, int]:
        """SBC-4 5.3: compare ``expected`` with the medium at ``lba`` and, if equal, write
        ``data`` there -- atomically with respect to every other write of the backend.
        Returns the offset of the first differing byte, or -1 when the write was done."""
        durable = self._durable(lba, fua)
        backend = self.backend
        offset = lba * self.block_size
        self.announce_change(offset, len(data))
        try:
            difference = yield StorageCall(backend.lane, backend.compare_and_write, (offset, expected, data, durable))
        except CompareReadError as exc:
            raise self.read_error(lba, exc) from exc
        except OSError as exc:
            raise self.write_error(lba, exc) from exc
        return difference

    def deallocate_blocks(self, lba: int, blocks: int) -> Generator[StorageWork, object, None]:
        """Unmap ``blocks`` blocks from ``lba`` on (UNMAP, WRITE SAME with UNMAP), in pieces of
        at most ``DEALLOCATE_STEP_BYTES`` so no worker is held long by one command."""
        backend = self.backend
        block_size = self.block_size
        self.announce_change(lba * block_size, blocks * block_size)
        step = max(1, DEALLOCATE_STEP_BYTES // block_size)
        done = 0
        while done < blocks:
            count = min(step, blocks - done)
            try:
                yield StorageCall(backend.lane, backend.deallocate, ((lba + done) * block_size, count * block_size))
            except OSError as exc:
                raise self.write_error(lba + done, exc) from exc
            done += count

    def synchronize_cache(self, lba: int = 0, blocks: int = 0) -> Generator[StorageWork, object, None]:
        """Make the acknowledged writes of blocks ``lba`` .. ``lba + blocks`` (0: to the end)
        durable (SBC-4 5.24), or say that it cannot be. Only the backing files holding that
        range are flushed (``Backend.flush``)."""
        failure = self.write_back_failure
        if failure is not None:
            raise self._write_back_refusal(None, failure)
        backend = self.backend
        offset = lba * self.block_size
        length = (blocks or self.block_count - lba) * self.block_size
        try:
            yield StorageCall(backend.lane, backend.flush, (offset, length))
        except WriteBackError as exc:
            raise self.write_error(None, exc) from exc
        except OSError as exc:  # a flush has no other kind of failure: earlier data may be lost
            raise self.write_error(None, WriteBackError(exc.errno, exc.strerror or str(exc), exc.filename)) from exc

    def announce_change(self, offset: int, length: int) -> None:
        """Bytes ``[offset, offset + length)`` of the medium are about to change."""
        for listener in self.change_listeners:
            listener(self, offset, length)

    def read_error(self, lba: int | None, exc: OSError) -> ScsiError:
        """MEDIUM ERROR, UNRECOVERED READ ERROR (03h/11h/00h) for a failed read at ``lba``."""
        log.error("%s: read at LBA %s failed: %s", self.name, lba, exc)
        return MediumError(Ascq.UNRECOVERED_READ_ERROR.asc, Ascq.UNRECOVERED_READ_ERROR.ascq, lba,
                           f"read error: {exc}")

    def write_error(self, lba: int | None, exc: OSError) -> ScsiError:
        """The sense for a failed write, deallocation or flush at ``lba`` (None: not known).

        No room (ENOSPC, EDQUOT): DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT
        (07h/27h/07h), which makes Hyper-V pause the VM instead of failing its disk. A
        ``WriteBackError`` also puts the LU in the write-back failed state. Anything else:
        MEDIUM ERROR, WRITE ERROR (03h/0Ch/00h).
        """
        if isinstance(exc, WriteBackError):
            self.write_back_failed(exc)
            return MediumError(Ascq.WRITE_ERROR.asc, Ascq.WRITE_ERROR.ascq, lba, f"write-back failed: {exc}")
        if exc.errno in OUT_OF_SPACE_ERRNOS:
            log.error("%s: write at LBA %s failed, out of space (DATA PROTECT 27h/07h): %s", self.name, lba, exc)
            return SpaceAllocationFailed(lba, f"out of space: {exc}")
        log.error("%s: write at LBA %s failed: %s", self.name, lba, exc)
        return MediumError(Ascq.WRITE_ERROR.asc, Ascq.WRITE_ERROR.ascq, lba, f"write error: {exc}")

    def write_back_failed(self, exc: OSError) -> None:
        """Enter the write-back failed state (once; later failures change nothing)."""
        if self.write_back_failure is not None:
            log.error("%s: write-back failed again: %s", self.name, exc)
            return
        self.write_back_failure = WriteBackFailure(str(exc), time.time())
        log.critical("%s: WRITE-BACK FAILED: %s. Data written before now may be lost. SYNCHRONIZE CACHE, FUA"
                     " writes and writes with the write cache off fail with MEDIUM ERROR (03h/0Ch/00h) until an"
                     " administrator checks the storage and runs `reopen confirm=true` on"
                     " /backstores/extents/%s (docs/errors.md)", self.name, exc, self.name)

    def clear_write_back_failure(self) -> WriteBackFailure | None:
        """Leave the write-back failed state (the administrator reopened the storage)."""
        failure, self.write_back_failure = self.write_back_failure, None
        if failure is not None:
            log.warning("%s: write-back failure cleared by the administrator; data written before %s may be"
                        " lost (the failure was: %s)", self.name,
                        datetime.datetime.fromtimestamp(failure.since).astimezone().isoformat(timespec="seconds"),
                        failure.error)
        return failure

    def _write_back_refusal(self, lba: int | None, failure: WriteBackFailure) -> MediumError:
        log.debug("%s: durable write or flush refused: write-back failed earlier", self.name)
        return MediumError(Ascq.WRITE_ERROR.asc, Ascq.WRITE_ERROR.ascq, lba,
                           f"write-back failed earlier ({failure.error})")
