"""The copy manager: ODX (POPULATE TOKEN / WRITE USING TOKEN) and EXTENDED COPY(LID1) for
every logical unit of the daemon, on one token store and one copy engine.

Use (the daemon)::

    manager = CopyManager(config.state_dir, CopyLimits())
    manager.startup_cleanup()            # ROD files a crashed run left behind
    for lu in logical_units:
        manager.attach(lu)               # commands 83h/84h, VPD 8Fh, 3PC=1, write observer
    ...
    while manager.has_pending_work():    # the front end's scheduling hook (IMMED=1 copies)
        manager.run_background(0.02)
    manager.housekeeping()               # about once a second: token expiry, stale results
    manager.nexus_lost(nexus) / manager.lu_reset(lu)   # from the core's TMF / session events
    manager.use_access(access)           # the front end's CopyAccess (docs/odx.md, "Access control")
    manager.storage_replacing(lu)        # before an admin change swaps or closes lu's storage
    manager.close()

Protocol logic lives in pure modules (params, token, responses, xcopy, lists, job planning);
this module binds them to logical units and runs the jobs. Time comes from ``clock`` (a
monotonic seconds function), so tests inject it. Everything runs on the core's single
thread: ``execute`` calls the handlers, the front end calls ``run_background``.

Access control: a copy reads and writes only what the I_T nexus that sent it could read and
write itself. EXTENDED COPY's CSCD descriptors resolve only to logical units of the command's
own target, a ROD token is usable (and listed by REPORT ALL ROD TOKENS) only by a nexus whose
initiator can reach the token's source LU (``CopyAccess``, odxtarget.copy.access), and every
LU a copy reads or writes passes the dispatcher's reservation test (``reservation_conflict``)
as a READ or a WRITE from that nexus would. Tokens count against per-initiator quotas.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from odxtarget.copy import params, responses
from odxtarget.copy.access import READ_ACCESS, WRITE_ACCESS, CopyAccess, OwnTargetOnly, maps
from odxtarget.copy.constants import (
    CSCD_ID_THIS_LU, DELAY_COMPLETE, SAM_CHECK_CONDITION, SAM_TASK_ABORTED, CopyInAction, CopyOutAction, CopyStatus,
    RodType,
)
from odxtarget.copy.counters import CopyCounters
from odxtarget.copy.errors import (
    CopyAborted, CopyTargetDataUnderrun, InsufficientResourcesToCreateRod, InvalidTokenLength, TokenCancelled,
)
from odxtarget.copy.job import (CopyJob, live_source, places_of, plan_copy, plan_zero, rod_file_source,
                                stage_overlapping_sources)
from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.lists import CopyOperation, ListRegistry
from odxtarget.copy.observer import ObservingBackend, inner_backend
from odxtarget.copy.rod_files import RodDirectory
from odxtarget.copy.token import build_token, creator_descriptor, is_zero_token, token_length_of
from odxtarget.copy.token_store import TokenEntry, TokenStore, remove_quietly
from odxtarget.copy import xcopy
from odxtarget.copy.constants import ROD_TOKEN_LENGTH
from odxtarget.scsi.command_table import CommandFlags, CommandSpec, DataDirection
from odxtarget.scsi.constants import Opcode, VpdPage
from odxtarget.scsi.dataout import take
from odxtarget.scsi.dispatch import reservation_conflict
from odxtarget.scsi.errors import (
    InternalTargetFailure, InvalidFieldInCdb, InvalidFieldInParameterList, ParameterListLengthError,
    ReservationConflict, ScsiError, WriteProtected,
)
from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.target import ScsiTarget

log = logging.getLogger(__name__)

U32 = struct.Struct(">I")
#: ESTIMATED STATUS UPDATE DELAY bounds for a running copy, in milliseconds.
MIN_UPDATE_DELAY_MS = 50
MAX_UPDATE_DELAY_MS = 1000
DEFAULT_UPDATE_DELAY_MS = 500
#: Nominal / recommended command timeouts reported by REPORT SUPPORTED OPERATION CODES.
COPY_TIMEOUTS = {"nominal_timeout": 4, "recommended_timeout": 60}
GROUP_NUMBER = 0x1F
#: A synchronous copy aims for steps of budget / this long (``_run_within_budget``) ...
STEP_TARGET_FRACTION = 20
#: ... and lets a step grow at most this many times over the previous one.
MAX_STEP_GROWTH = 16


def _parameter_list_length(cdb: bytes, block_size: int) -> int:
    return U32.unpack_from(cdb, 10)[0]


def _good(data: bytes = b"", transfer_length: int | None = None) -> ScsiResult:
    return ScsiResult(Status.GOOD, data, b"", len(data) if transfer_length is None else transfer_length)


def _data_in(data: bytes, allocation_length: int) -> ScsiResult:
    data = data[:allocation_length]
    return ScsiResult(Status.GOOD, data, b"", len(data))


def _lba_after(ranges, blocks: int) -> int:
    """The destination LBA where a copy into ``ranges`` stopped after ``blocks`` whole blocks."""
    for lba, count in ranges:
        if blocks < count:
            return lba + blocks
        blocks -= count
    return ranges[-1][0] + ranges[-1][1] - 1 if ranges else 0


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def _complete_failed(operation: CopyOperation, error: ScsiError, now: float) -> None:
    """Record a failed command for RRTI / RECEIVE COPY STATUS: its status (CHECK CONDITION,
    or RESERVATION CONFLICT, which has no sense data) and sense."""
    sense = error.sense.pack(False) if error.sense is not None else b""
    operation.complete(CopyStatus.COMPLETED_WITH_ERRORS, now, sense, int(error.status))


@dataclass(eq=False)
class _Running:
    """A copy in progress: what to finish when its job is done."""

    operation: CopyOperation
    job: CopyJob
    destination: object
    entry: TokenEntry | None
    delete_token: bool
    spare_cancelled: bool
    background: bool
    ranges: tuple[tuple[int, int], ...] = ()    # destination (lba, blocks), for error LBAs

    def touches(self, lu) -> bool:
        """The copy writes ``lu``, or reads it through a live token."""
        entry = self.entry
        return self.destination is lu or (entry is not None and entry.rod_file is None and entry.creator is lu)


class CopyManager:
    """See the module docstring."""

    def __init__(self, state_dir: str | None, limits: CopyLimits | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "odxtarget",
                 access: CopyAccess | None = None):
        self._limits = limits or CopyLimits()
        self.clock = clock
        self.name = name
        self.access: CopyAccess = access or OwnTargetOnly()
        self.rod_directory = RodDirectory(state_dir) if state_dir else None
        self.tokens = TokenStore(self._limits.max_tokens, self._limits.max_rod_bytes, watch=self._watch,
                                 max_tokens_per_initiator=self._limits.max_tokens_per_initiator,
                                 max_rod_bytes_per_initiator=self._limits.max_rod_bytes_per_initiator)
        self.lists = ListRegistry(self._limits.result_retention, self._limits.max_lists_per_nexus)
        self._units: dict[int, object] = {}
        self._by_designator: dict[bytes, object] = {}
        self._counters: dict[str, CopyCounters] = {}
        self._background: list[_Running] = []

    @property
    def limits(self) -> CopyLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: CopyLimits) -> None:
        """New limits apply to the next command; the token store's caps and quotas at once."""
        self._limits = limits
        self.tokens.max_tokens = limits.max_tokens
        self.tokens.max_rod_bytes = limits.max_rod_bytes
        self.tokens.max_tokens_per_initiator = limits.max_tokens_per_initiator
        self.tokens.max_rod_bytes_per_initiator = limits.max_rod_bytes_per_initiator

    # -- daemon API -------------------------------------------------------------------------

    def use_access(self, access: CopyAccess) -> None:
        """The front end's knowledge of who reaches which LU; set once its targets exist."""
        self.access = access

    def startup_cleanup(self) -> int:
        """Delete ROD files left by a previous run; returns how many."""
        return self.rod_directory.startup_cleanup() if self.rod_directory else 0

    def attach(self, lu) -> None:
        """Offer third-party copy on ``lu``: commands, VPD 8Fh, 3PC=1, the write observer."""
        if id(lu) in self._units:
            return
        for spec in self._command_specs():
            lu.commands.register(spec, replace=True)
        limits = self.limits
        lu.vpd_pages.register(VpdPage.THIRD_PARTY_COPY,
                              lambda unit, nexus: responses.third_party_copy_vpd(limits, unit.block_size),
                              replace=True)
        lu.third_party_copy = True
        lu.backend = ObservingBackend(lu.backend, lambda offset, length, unit=lu: self._lu_written(unit, offset, length))
        self._units[id(lu)] = lu
        self._by_designator[bytes(lu.naa_designator)] = lu
        self.tokens.register_designator(lu.naa_designator)
        self._counters.setdefault(lu.name, CopyCounters())
        listeners = getattr(lu, "event_listeners", None)
        if listeners is not None:  # LogicalUnit.event_listeners: resets and nexus loss (scsi/lu.py)
            listeners.append(self._on_lu_event)

    def _on_lu_event(self, lu, event: str, nexus) -> None:
        """Core hook: ``reset`` (LU or target reset) or ``nexus_lost`` (loss or logout)."""
        if event == "reset":
            self.lu_reset(lu)
        elif event == "nexus_lost":
            self.nexus_lost(nexus)

    def detach(self, lu) -> None:
        """Stop offering copies on ``lu`` (its tokens are revoked, its copies terminated)."""
        if self._units.pop(id(lu), None) is None:
            return
        self._stop_copies_on(lu)
        self.lu_reset(lu)
        self.tokens.creator_gone(lu, self.clock())
        self._by_designator.pop(bytes(lu.naa_designator), None)
        if isinstance(lu.backend, ObservingBackend):
            lu.backend = lu.backend.inner

    def storage_replacing(self, lu) -> None:
        """``lu``'s storage is about to be swapped or closed (an admin change of its extents,
        size or read-only flag, or its deletion): after this returns, no copy uses a file
        descriptor of that storage. Background (IMMED=1) copies that write ``lu``, or read it
        through a live token, are terminated (status 60h, as after COPY OPERATION ABORT) and
        ``lu``'s live tokens are cancelled (23h/08h on next use); snapshot tokens keep their own
        ROD files. Synchronous copies run to completion inside one command, and admin changes
        run between commands on the same event loop, so none is ever in flight here."""
        terminated = self._stop_copies_on(lu)
        cancelled = self.tokens.creator_storage_replaced(lu, self.clock())
        if terminated or cancelled:
            log.info("%s: storage replaced: %d background copies terminated, %d live tokens cancelled",
                     lu.name, terminated, cancelled)

    def _stop_copies_on(self, lu) -> int:
        """Terminate the background copies that write ``lu`` or read it through a live token;
        returns how many."""
        stopping = [running for running in self._background if running.touches(lu)]
        for running in stopping:
            running.job.abort()
            self._background.remove(running)
            self._finish(running)
        return len(stopping)

    def has_pending_work(self) -> bool:
        return bool(self._background)

    def run_background(self, max_seconds: float) -> bool:
        """Advance background (IMMED=1) copies for about ``max_seconds``; True if work remains.

        The front end calls this from its event loop while ``has_pending_work()``; each call
        blocks the loop for at most ``max_seconds`` plus one step (``background_step_bytes``).
        """
        deadline = self.clock() + max_seconds
        while self._background:
            for running in list(self._background):
                self._check_source_still_valid(running)
                if not running.job.done:
                    running.job.step(self.limits.background_step_bytes)
                if running.job.done:
                    self._background.remove(running)
                    self._finish(running)
            if self.clock() >= deadline:
                break
        return bool(self._background)

    def housekeeping(self) -> None:
        """Expire idle tokens (removing their ROD files) and stale list results."""
        now = self.clock()
        self.tokens.expire(now)
        self.lists.expire(now)

    def nexus_lost(self, nexus) -> None:
        """I_T nexus loss or logout: its list results go, its running copies are terminated."""
        for operation in self.lists.nexus_lost(nexus):
            self._terminate(operation)

    def lu_reset(self, lu) -> None:
        """LOGICAL UNIT RESET (or target reset): drop the LU's operations (SAM-5 6.3)."""
        for operation in self.lists.lu_reset(lu):
            self._terminate(operation)

    def revoke_token(self, token_id: int) -> bool:
        return self.tokens.revoke(token_id, self.clock())

    def counters(self, lu_name: str) -> dict:
        return self._counters.setdefault(lu_name, CopyCounters()).as_dict()

    def all_counters(self) -> dict[str, dict]:
        return {name: counters.as_dict() for name, counters in sorted(self._counters.items())}

    def close(self) -> None:
        for running in list(self._background):
            running.job.abort()
            self._background.remove(running)
            self._finish(running)
        self.tokens.close()
        for name, counters in sorted(self._counters.items()):
            log.info("copy counters %s: %s", name, counters.as_dict())

    # -- observers --------------------------------------------------------------------------

    def _watch(self, lu, watching: bool) -> None:
        backend = getattr(lu, "backend", None)
        if isinstance(backend, ObservingBackend):
            backend.set_watching(watching)

    def _lu_written(self, lu, offset: int, length: int) -> None:
        self.tokens.source_written(lu, offset, length, self.clock())

    def _destination_written(self, lu, ranges, spare: TokenEntry | None) -> bool:
        """The copy is about to write ``ranges`` of ``lu`` (bypassing the observer): cancel
        live tokens over them, except ``spare`` (the token being used, cancelled at the end).
        Returns whether ``spare`` was hit."""
        now = self.clock()
        hit = False
        if spare is not None and spare.rod_file is None and spare.creator is lu:
            spans = spare.byte_spans()
            for lba, blocks in ranges:
                start, end = lba * lu.block_size, (lba + blocks) * lu.block_size
                if any(a < end and start < b for a, b in spans):
                    hit = True
            if hit:  # cancelled when this copy completes, not under its feet
                self.tokens.stop_watching(spare)
        for lba, blocks in ranges:
            self.tokens.source_written(lu, lba * lu.block_size, blocks * lu.block_size, now)
        return hit

    def _counter(self, lu) -> CopyCounters:
        return self._counters.setdefault(lu.name, CopyCounters())

    # -- command table ------------------------------------------------------------------------

    def _command_specs(self) -> list[CommandSpec]:
        out, into = Opcode.THIRD_PARTY_COPY_OUT, Opcode.THIRD_PARTY_COPY_IN
        list_id_4 = (0xFF, 0xFF, 0xFF, 0xFF)
        length_4 = (0xFF, 0xFF, 0xFF, 0xFF)
        OUT, IN = DataDirection.OUT, DataDirection.IN

        def token_usage(action: int) -> bytes:
            return bytes((out, action, 0, 0, 0, 0, *list_id_4, *length_4, GROUP_NUMBER, 0))

        def lid4_in(action: int) -> bytes:
            return bytes((into, action, *list_id_4, 0, 0, 0, 0, *length_4, 0, 0))

        def lid1_in(action: int) -> bytes:
            return bytes((into, action, 0xFF, 0, 0, 0, 0, 0, 0, 0, *length_4, 0, 0))

        def plain_in(action: int) -> bytes:
            return bytes((into, action, 0, 0, 0, 0, 0, 0, 0, 0, *length_4, 0, 0))

        A, I = CopyOutAction, CopyInAction
        # Persistent reservations (SBC-4 4.17 / SPC-4 5.13.1 tables): POPULATE TOKEN and the
        # 84h status commands read -- allowed through Write Exclusive types; WRITE USING TOKEN
        # and EXTENDED COPY (which may write this LU) have no PR flag and conflict with all.
        READS = CommandFlags.PR_READ
        return [
            CommandSpec("EXTENDED COPY(LID1)", self._extended_copy,
                        bytes((out, A.EXTENDED_COPY_LID1, *([0] * 8), *length_4, 0, 0)),
                        service_action=A.EXTENDED_COPY_LID1, direction=OUT,
                        data_out_length=_parameter_list_length, **COPY_TIMEOUTS),
            CommandSpec("POPULATE TOKEN", self._populate_token, token_usage(A.POPULATE_TOKEN),
                        service_action=A.POPULATE_TOKEN, direction=OUT, flags=READS,
                        data_out_length=_parameter_list_length, **COPY_TIMEOUTS),
            CommandSpec("WRITE USING TOKEN", self._write_using_token, token_usage(A.WRITE_USING_TOKEN),
                        service_action=A.WRITE_USING_TOKEN, direction=OUT, flags=CommandFlags.WRITES_MEDIUM,
                        data_out_length=_parameter_list_length, **COPY_TIMEOUTS),
            CommandSpec("COPY OPERATION ABORT", self._copy_operation_abort,
                        bytes((out, A.COPY_OPERATION_ABORT, *list_id_4, *([0] * 9), 0)),
                        service_action=A.COPY_OPERATION_ABORT, flags=READS),
            CommandSpec("RECEIVE COPY STATUS(LID1)", self._receive_copy_status_lid1,
                        lid1_in(I.RECEIVE_COPY_STATUS_LID1), service_action=I.RECEIVE_COPY_STATUS_LID1,
                        direction=IN, flags=READS),
            CommandSpec("RECEIVE COPY OPERATING PARAMETERS", self._receive_copy_operating_parameters,
                        plain_in(I.RECEIVE_COPY_OPERATING_PARAMETERS),
                        service_action=I.RECEIVE_COPY_OPERATING_PARAMETERS, direction=IN, flags=READS),
            CommandSpec("RECEIVE COPY FAILURE DETAILS(LID1)", self._receive_copy_failure_details,
                        lid1_in(I.RECEIVE_COPY_FAILURE_DETAILS_LID1),
                        service_action=I.RECEIVE_COPY_FAILURE_DETAILS_LID1, direction=IN, flags=READS),
            CommandSpec("RECEIVE COPY STATUS(LID4)", self._receive_copy_status_lid4,
                        lid4_in(I.RECEIVE_COPY_STATUS_LID4), service_action=I.RECEIVE_COPY_STATUS_LID4,
                        direction=IN, flags=READS),
            CommandSpec("RECEIVE ROD TOKEN INFORMATION", self._receive_rod_token_information,
                        lid4_in(I.RECEIVE_ROD_TOKEN_INFORMATION),
                        service_action=I.RECEIVE_ROD_TOKEN_INFORMATION, direction=IN, flags=READS),
            CommandSpec("REPORT ALL ROD TOKENS", self._report_all_rod_tokens,
                        plain_in(I.REPORT_ALL_ROD_TOKENS), service_action=I.REPORT_ALL_ROD_TOKENS,
                        direction=IN, flags=READS),
        ]

    # -- POPULATE TOKEN (SBC-4 5.x) ---------------------------------------------------------

    def _populate_token(self, lu, command, target) -> ScsiResult:
        cdb = command.cdb
        list_id, length = struct.unpack_from(">II", cdb, 6)
        if length == 0:
            return _good()
        if length < params.PT_HEADER_SIZE:
            raise ParameterListLengthError("POPULATE TOKEN parameter list of 1..15 bytes")
        data = take(command, length)
        counters = self._counter(lu)
        counters.populate_token += 1
        try:
            request = params.parse_populate_token(data, lu.block_count, lu.block_size, self.limits)
        except ScsiError as error:
            counters.add_failure(error.sense)
            raise
        now = self.clock()
        operation = self.lists.begin(command.nexus, lu, list_id, CopyOutAction.POPULATE_TOKEN, now)
        blocks = sum(count for _, count in request.ranges)
        operation.requested = blocks
        try:
            entry = self._create_token(lu, request, now, command.nexus.initiator_name)
        except ScsiError as error:
            counters.add_failure(error.sense)
            _complete_failed(operation, error, self.clock())
            if request.immed:
                return _good(transfer_length=length)
            raise
        counters.tokens_created += 1
        counters.snapshot_tokens += entry.snapshot
        operation.token = entry.token
        operation.transfer_count = blocks
        operation.complete(CopyStatus.COMPLETED, self.clock())
        self.tokens.touch(entry, self.clock())
        log.debug("%s: token %016x (%s) for %d blocks", lu.name, entry.token_id,
                  "snapshot" if entry.snapshot else "live", blocks)
        return _good(transfer_length=length)

    def _create_token(self, lu, request: params.PopulateTokenRequest, now: float, owner: str) -> TokenEntry:
        """A token of ``owner`` (an initiator name), within the daemon's caps and its quotas."""
        self.tokens.check_room(owner)
        block_size = lu.block_size
        size = sum(count for _, count in request.ranges) * block_size
        token_id = self.tokens.next_token_id()
        rod_file = None
        if request.rod_type != RodType.PIT_CHANGE_VULNERABLE and self.rod_directory is not None:
            backend = inner_backend(lu.backend)
            places = [item for lba, count in request.ranges
                      for item in places_of(backend, lba * block_size, count * block_size)]
            if self.rod_directory.can_snapshot(places):
                self.tokens.check_room(owner, size)
                try:
                    rod_file = self.rod_directory.create_snapshot(token_id, places)
                except OSError as error:
                    log.error("%s: cannot create ROD file: %s", lu.name, error)
                    raise InsufficientResourcesToCreateRod(f"ROD file: {error}") from None
        rod_type = RodType.PIT_DEFAULT if rod_file is not None else RodType.PIT_CHANGE_VULNERABLE
        token = build_token(rod_type, token_id, creator_descriptor(lu.naa_designator, block_size), size,
                            block_size, lu.block_count, self.name)
        entry = TokenEntry(token, token_id, rod_type, lu, request.ranges, block_size, lu.block_count, size,
                           float(request.inactivity_timeout), now, rod_file, owner=owner)
        try:
            self.tokens.add(entry)
        except BaseException:
            if rod_file is not None:
                remove_quietly(rod_file.path)
            raise
        return entry

    # -- WRITE USING TOKEN (SBC-4 5.x) --------------------------------------------------------

    def _write_using_token(self, lu, command, target) -> ScsiResult:
        cdb = command.cdb
        list_id, length = struct.unpack_from(">II", cdb, 6)
        if length == 0:
            return _good()
        data = take(command, length)
        counters = self._counter(lu)
        counters.write_using_token += 1
        try:
            request = params.parse_write_using_token(data, lu.block_count, lu.block_size, self.limits)
        except ScsiError as error:
            counters.add_failure(error.sense)
            raise
        now = self.clock()
        operation = self.lists.begin(command.nexus, lu, list_id, CopyOutAction.WRITE_USING_TOKEN, now)
        operation.requested = sum(count for _, count in request.ranges)
        try:
            running = self._prepare_write(lu, command, target, operation, request, now)
        except ScsiError as error:
            counters.add_failure(error.sense)
            _complete_failed(operation, error, self.clock())
            if request.immed:
                return _good(transfer_length=length)
            raise
        except BaseException:
            _complete_failed(operation, InternalTargetFailure(), self.clock())   # frees the list id
            raise
        if request.immed:
            operation.status = CopyStatus.IN_PROGRESS_BACKGROUND
            running.background = True
            self._background.append(running)
            return _good(transfer_length=length)
        self._run_within_budget(running.job)
        error = self._finish(running)
        if error is not None:
            raise error
        return _good(transfer_length=length)

    def _run_within_budget(self, job: CopyJob) -> None:
        """Step a synchronous copy until done or out of time (then it ends truncated).

        Steps start at ``background_step_bytes`` and are resized towards a twentieth of the
        budget (growing at most ``MAX_STEP_GROWTH`` times per step): a reflink of 64 MiB costs
        about what one of 8 MiB does, so fast methods make few calls, while a slow method
        keeps steps short enough that the budget is overrun by about a twentieth.
        """
        budget = self.limits.write_using_token_budget
        deadline = self.clock() + budget
        target = budget / STEP_TARGET_FRACTION
        step_bytes = self.limits.background_step_bytes
        while not job.done:
            started = self.clock()
            moved = job.step(step_bytes)
            finished = self.clock()
            if job.done or finished >= deadline:
                break
            elapsed = finished - started
            growth = MAX_STEP_GROWTH if elapsed <= 0 else min(MAX_STEP_GROWTH, target / elapsed)
            step_bytes = max(self.limits.background_step_bytes, int(max(moved, 1) * growth))

    def _prepare_write(self, lu, command: ScsiCommand, target: "ScsiTarget | None", operation: CopyOperation,
                       request: params.WriteUsingTokenRequest, now: float) -> _Running:
        token = request.token
        destination = inner_backend(lu.backend)
        block_size = lu.block_size
        if is_zero_token(token):
            if token_length_of(token) != ROD_TOKEN_LENGTH:
                raise InvalidTokenLength(token_length_of(token))
            items, blocks = plan_zero(destination, request.ranges, block_size)
            self._destination_written(lu, request.ranges, None)
            job = CopyJob(items, block_size, blocks, operation.requested)
            running = _Running(operation, job, lu, None, False, False, False, request.ranges)
            operation.job = job
            return running
        nexus = command.nexus
        reached: list[ItNexus] = []        # the nexus through which the token's source is read

        def visible(creator) -> bool:
            # A deleted LU's tokens are all revoked and guard no data: they keep saying so.
            found = nexus if id(creator) not in self._units else self._reach(nexus, lu, target, creator)
            if found is None:
                log.warning("WRITE USING TOKEN refused: initiator %r, on %s, presented a token of %s, "
                            "which it cannot reach", nexus.initiator_name, lu.name, creator.name)
                return False
            reached.append(found)
            return True

        entry = self.tokens.resolve(token, now, visible)
        if reservation_conflict(entry.creator, reached[-1], READ_ACCESS):
            raise ReservationConflict(f"the token's source {entry.creator.name} is reserved")
        rod_offset = request.offset_into_rod * block_size
        if rod_offset >= entry.bytes_represented:
            raise InvalidFieldInParameterList(8, None, "OFFSET INTO ROD beyond the bytes represented")
        owned: list[int] = []
        try:
            if entry.rod_file is not None:
                try:
                    fd = os.open(entry.rod_file.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as error:
                    log.error("ROD file %s: %s", entry.rod_file.path, error)
                    raise TokenCancelled() from None
                owned.append(fd)
                source = rod_file_source(fd, entry.rod_file.segments)
            else:
                source = live_source(inner_backend(entry.creator.backend), entry.ranges, entry.block_size)
                source = stage_overlapping_sources(
                    source, destination, request.ranges, block_size, owned,
                    self.rod_directory.path if self.rod_directory else None)
            items, blocks = plan_copy(source, rod_offset, destination, request.ranges, block_size)
        except OSError as error:
            _close_all(owned)
            raise lu.write_error(_lba_after(request.ranges, 0), error) from None
        except BaseException:
            _close_all(owned)
            raise
        alignment = self.rod_directory.alignment if self.rod_directory else 4096
        job = CopyJob(items, block_size, blocks, operation.requested, reflink_alignment=alignment,
                      owned_fds=owned)
        self.tokens.acquire(entry)
        spare_hit = self._destination_written(lu, request.ranges, entry)
        operation.job = job
        return _Running(operation, job, lu, entry, request.delete_token, spare_hit, False, request.ranges)

    def _reach(self, nexus: ItNexus, addressed, target: "ScsiTarget | None", lu) -> ItNexus | None:
        """The nexus through which ``nexus``'s initiator reaches ``lu``, or None: ``nexus``
        for the LU the command addresses and for the LUs of its target, else the front end's
        answer (``CopyAccess.reach``)."""
        if lu is addressed or maps(target, lu):
            return nexus
        return self.access.reach(nexus, lu)

    def _check_source_still_valid(self, running: _Running) -> None:
        """A background copy from a live token stops when the token is cancelled: what it
        wrote so far was read before the source changed (point-in-time to that block)."""
        entry = running.entry
        if entry is not None and entry.rod_file is None and entry.invalid is not None and not running.spare_cancelled:
            running.job.error = running.job.error or OSError(0, "source token invalidated")
            running.operation.extra["invalidated"] = entry.invalid

    def _finish(self, running: _Running) -> ScsiError | None:
        """Complete the operation of a finished (or stopped) job; returns the error for a
        synchronous command to raise, if any."""
        job, operation, lu = running.job, running.operation, running.destination
        job.close()
        now = self.clock()
        counters = self._counter(lu)
        counters.add_bytes(job.moved)
        if running.entry is not None:
            if running.spare_cancelled:
                self.tokens.release(running.entry, now)
                self.tokens.invalidate(running.entry, TokenCancelled, now)
            else:
                self.tokens.release(running.entry, now, delete=running.delete_token)
        flush_error: OSError | None = None
        if not lu.mode.write_cache:
            try:
                inner_backend(lu.backend).flush()
            except OSError as failure:
                flush_error = failure
        transferred = job.transferred_blocks
        operation.transfer_count = transferred
        error: ScsiError | None = None
        if job.aborted:
            operation.complete(CopyStatus.TERMINATED, now, b"", SAM_TASK_ABORTED)
            return None
        if flush_error is not None:
            # WCE=0 promises the data is on stable storage when the command completes, and none
            # of it is known to be: the LU's write error, not a short transfer count
            # (docs/odx.md, "Crash safety").
            operation.transfer_count = 0
            error = lu.write_error(_lba_after(running.ranges, 0), flush_error)
        elif job.error is not None:
            invalid = operation.extra.get("invalidated")
            if transferred:
                error = CopyTargetDataUnderrun(transferred)
            elif invalid is not None:
                error = invalid()
            else:
                error = lu.write_error(_lba_after(running.ranges, transferred), job.error)
        elif transferred < operation.requested:
            error = CopyTargetDataUnderrun(transferred)
        if error is None:
            operation.complete(CopyStatus.COMPLETED, now)
            return None
        counters.add_failure(error.sense)
        status = CopyStatus.COMPLETED_PARTIAL if isinstance(error, CopyTargetDataUnderrun) \
            else CopyStatus.COMPLETED_WITH_ERRORS
        operation.complete(status, now, error.sense.pack(False), SAM_CHECK_CONDITION)
        return error

    def _terminate(self, operation: CopyOperation) -> None:
        for running in list(self._background):
            if running.operation is operation:
                running.job.abort()
                self._background.remove(running)
                self._finish(running)

    # -- COPY OPERATION ABORT (SPC-4 6.3) ---------------------------------------------------

    def _copy_operation_abort(self, lu, command, target) -> ScsiResult:
        list_id = U32.unpack_from(command.cdb, 2)[0]
        operation = self.lists.get(command.nexus, lu, list_id)
        if operation is None:
            raise InvalidFieldInCdb(2, None, f"no copy operation with list identifier {list_id:#x}")
        if operation.active:
            self._terminate(operation)
        return _good()

    # -- status commands ----------------------------------------------------------------------

    def _update_delay(self, operation: CopyOperation) -> int:
        if not operation.active:
            return DELAY_COMPLETE
        job = operation.job
        elapsed = self.clock() - operation.started_at
        if job is None or job.bytes_done == 0 or elapsed <= 0:
            return DEFAULT_UPDATE_DELAY_MS
        remaining = (job.total_bytes - job.bytes_done) / (job.bytes_done / elapsed) * 1000
        return int(min(MAX_UPDATE_DELAY_MS, max(MIN_UPDATE_DELAY_MS, remaining)))

    def _lid4_status(self, lu, command, with_token_part: bool) -> ScsiResult:
        list_id, = U32.unpack_from(command.cdb, 2)
        allocation_length, = U32.unpack_from(command.cdb, 10)
        operation = self.lists.get(command.nexus, lu, list_id)
        if operation is None:
            raise InvalidFieldInCdb(2, None, f"no copy operation with list identifier {list_id:#x}")
        transfer_count = operation.transfer_count
        if operation.active and operation.job is not None:
            transfer_count = operation.job.transferred_blocks
        token = operation.token if operation.status in (CopyStatus.COMPLETED, CopyStatus.COMPLETED_PARTIAL) else None
        data = responses.lid4_status(operation.service_action, operation.status, transfer_count,
                                     operation.sense, operation.completion_status,
                                     self._update_delay(operation), token, with_token_part)
        self.lists.delivered(command.nexus, lu, operation)
        return _data_in(data, allocation_length)

    def _receive_rod_token_information(self, lu, command, target) -> ScsiResult:
        return self._lid4_status(lu, command, with_token_part=True)

    def _receive_copy_status_lid4(self, lu, command, target) -> ScsiResult:
        return self._lid4_status(lu, command, with_token_part=False)

    def _lid1_operation(self, lu, command) -> CopyOperation:
        list_id = command.cdb[2]
        operation = self.lists.get(command.nexus, lu, list_id)
        if operation is None:
            raise InvalidFieldInCdb(2, None, f"no copy operation with list identifier {list_id:#x}")
        return operation

    def _receive_copy_status_lid1(self, lu, command, target) -> ScsiResult:
        operation = self._lid1_operation(lu, command)
        allocation_length, = U32.unpack_from(command.cdb, 10)
        transferred = operation.transfer_count
        if operation.service_action != CopyOutAction.EXTENDED_COPY_LID1:
            transferred *= lu.block_size
        data = responses.lid1_status(operation.lid1_status, operation.segments_processed, transferred)
        self.lists.delivered(command.nexus, lu, operation)
        return _data_in(data, allocation_length)

    def _receive_copy_failure_details(self, lu, command, target) -> ScsiResult:
        operation = self._lid1_operation(lu, command)
        allocation_length, = U32.unpack_from(command.cdb, 10)
        data = responses.lid1_failure_details(operation.completion_status, operation.sense)
        self.lists.delivered(command.nexus, lu, operation)
        return _data_in(data, allocation_length)

    def _receive_copy_operating_parameters(self, lu, command, target) -> ScsiResult:
        allocation_length, = U32.unpack_from(command.cdb, 10)
        return _data_in(responses.operating_parameters(self.limits), allocation_length)

    def _report_all_rod_tokens(self, lu, command, target) -> ScsiResult:
        """Only the tokens the requesting nexus could use: the others' leading bytes would
        name LUs (and token identifiers) it has no business knowing (docs/odx.md)."""
        allocation_length, = U32.unpack_from(command.cdb, 10)
        self.tokens.expire(self.clock())
        reachable: dict[int, bool] = {}

        def usable(entry: TokenEntry) -> bool:
            key = id(entry.creator)
            if key not in reachable:
                reachable[key] = self._reach(command.nexus, lu, target, entry.creator) is not None
            return reachable[key]

        tokens = [entry.token for entry in self.tokens.active() if usable(entry)]
        return _data_in(responses.report_all_rod_tokens(tokens), allocation_length)

    # -- EXTENDED COPY(LID1) (SPC-4 6.3) --------------------------------------------------------

    def _resolve_cscd(self, lu, command: ScsiCommand, target: "ScsiTarget | None",
                      copy_list: xcopy.ExtendedCopyList, index: int, segment_number: int):
        """The LU a CSCD descriptor names, if the command's nexus reaches it through its own
        target: any other LU, existing or not, is COPY TARGET DEVICE NOT REACHABLE alike."""
        if index == CSCD_ID_THIS_LU:
            return lu
        if index >= len(copy_list.cscds):
            raise CopyAborted(0x08, 0x04, f"CSCD index {index} beyond the CSCD list", segment_number)
        cscd = copy_list.cscds[index]
        target_lu = self._by_designator.get(cscd.designator) if cscd.designator_type == 3 else None
        if target_lu is None:
            target_lu = self._match_other_designator(cscd)
        if target_lu is None or not (target_lu is lu or self._in_own_target(command.nexus, target, target_lu)):
            log.warning("EXTENDED COPY refused: initiator %r, on %s, named designator %s (%s), which "
                        "its target does not map", command.nexus.initiator_name, lu.name, cscd.designator.hex(),
                        "no LU" if target_lu is None else f"LU {target_lu.name}")
            raise CopyAborted(0x0D, 0x02, f"CSCD {index} names no logical unit reachable here", segment_number)
        if cscd.peripheral_type != 0 or (cscd.block_size and cscd.block_size != target_lu.block_size):
            raise CopyAborted(0x0D, 0x03, f"CSCD {index}: not a block device of that block size", segment_number)
        return target_lu

    def _in_own_target(self, nexus: ItNexus, target: "ScsiTarget | None", lu) -> bool:
        """``lu`` is behind the target port the command came through: the command's
        ScsiTarget maps it, or the front end says so (LIO: one ScsiTarget per LU)."""
        return maps(target, lu) or self.access.in_own_target(nexus, lu)

    def _match_other_designator(self, cscd: xcopy.Cscd):
        """T10 vendor ID designators (vendor + serial, as VPD 83h reports them)."""
        if cscd.designator_type != 1:
            return None
        for unit in self._units.values():
            vendor = unit.config.vendor.encode("ascii", "replace")[:8].ljust(8, b" ")
            if cscd.designator == (vendor + unit.serial.encode("ascii", "replace"))[:20]:
                return unit
        return None

    def _extended_copy(self, lu, command, target) -> ScsiResult:
        length = U32.unpack_from(command.cdb, 10)[0]
        if length == 0:
            return _good()
        data = take(command, length)
        counters = self._counter(lu)
        counters.extended_copy += 1
        try:
            copy_list = xcopy.parse_extended_copy(data, self.limits)
            plan = self._plan_extended_copy(lu, command, target, copy_list)
        except ScsiError as error:
            counters.add_failure(error.sense)
            raise
        operation = None
        now = self.clock()
        if copy_list.holds_results:
            operation = self.lists.begin(command.nexus, lu, copy_list.list_id,
                                         CopyOutAction.EXTENDED_COPY_LID1, now)
            operation.requested = len(plan)
        transferred = 0

        def failed(number: int, error: ScsiError) -> CopyAborted:
            """A copy target reported ``error`` for segment ``number``: COPY ABORTED with the
            copy target's sense after it (SPC-2 7.2.3, errors during segment processing)."""
            target_sense = error.sense.fixed() if error.sense is not None else b""
            aborted = CopyAborted(0x00, 0x00, f"segment {number}: {error}", number, target_sense)
            counters.add_failure(aborted.sense)
            if operation is not None:
                operation.transfer_count = transferred
                operation.segments_processed = number
                operation.complete(CopyStatus.COMPLETED_WITH_ERRORS, self.clock(), aborted.sense.pack(False),
                                   SAM_CHECK_CONDITION)
            return aborted

        unflushed: dict[int, tuple] = {}    # id(LU) -> (LU, backend, first LBA, last segment), WCE=0
        for number, (source_lu, destination_lu, source_range, destination_range) in enumerate(plan):
            source = live_source(inner_backend(source_lu.backend), [source_range], source_lu.block_size)
            destination = inner_backend(destination_lu.backend)
            items, blocks = plan_copy(source, 0, destination, [destination_range], destination_lu.block_size)
            self._destination_written(destination_lu, [destination_range], None)
            job = CopyJob(items, destination_lu.block_size, blocks, destination_range[1],
                          reflink_alignment=self.rod_directory.alignment if self.rod_directory else 4096)
            job.run(self.limits.background_step_bytes)
            self._counter(destination_lu).add_bytes(job.moved)
            transferred += job.bytes_done
            if job.error is not None:
                lba = destination_range[0] + job.transferred_blocks
                raise failed(number, destination_lu.write_error(lba, job.error))
            if not destination_lu.mode.write_cache:
                first = unflushed.get(id(destination_lu), (None, None, destination_range[0]))[2]
                unflushed[id(destination_lu)] = (destination_lu, destination, min(first, destination_range[0]),
                                                 number)
        for destination_lu, destination, first_lba, number in unflushed.values():
            try:
                destination.flush()
            except OSError as error:
                raise failed(number, destination_lu.write_error(first_lba, error)) from None
        if operation is not None:
            operation.transfer_count = transferred
            operation.segments_processed = len(plan)
            operation.complete(CopyStatus.COMPLETED, self.clock())
        return _good(transfer_length=length)

    def _plan_extended_copy(self, lu, command: ScsiCommand, target: "ScsiTarget | None",
                            copy_list: xcopy.ExtendedCopyList) -> list:
        """Validate every segment before moving a byte: (src LU, dst LU, src range, dst range).

        Each LU a segment reads or writes is checked for reservations as a READ or a WRITE from
        the command's nexus would be (SPC-4 5.13.1). A conflict is an error the copy target
        reports during segment processing, so the command ends with COPY ABORTED, THIRD PARTY
        DEVICE FAILURE and the segment number (SPC-2 7.2.3; docs/odx.md, "Access control"),
        not with RESERVATION CONFLICT, which would say the LU the command was sent to is
        reserved.
        """
        plan = []
        checked: set[tuple[int, int]] = set()
        for number, segment in enumerate(copy_list.segments):
            source_lu = self._resolve_cscd(lu, command, target, copy_list, segment.source_index, number)
            destination_lu = self._resolve_cscd(lu, command, target, copy_list, segment.destination_index, number)
            if destination_lu.write_protected:
                raise WriteProtected()
            unit = destination_lu.block_size if segment.count_in_destination_blocks else source_lu.block_size
            size = segment.blocks * unit
            if size % source_lu.block_size or size % destination_lu.block_size:
                raise InvalidFieldInParameterList(segment.offset + 10, None,
                                                  "segment length is not whole blocks on both sides")
            if size > self.limits.max_segment_bytes:
                raise InvalidFieldInParameterList(segment.offset + 10, None, "segment exceeds MAXIMUM SEGMENT LENGTH")
            source_range = (segment.source_lba, size // source_lu.block_size)
            destination_range = (segment.destination_lba, size // destination_lu.block_size)
            for unit_lu, (lba, blocks) in ((source_lu, source_range), (destination_lu, destination_range)):
                if lba + blocks > unit_lu.block_count:
                    target_sense = SenseData(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00).fixed()
                    raise CopyAborted(0x00, 0x00, f"segment {number}: LBA {lba}+{blocks} out of range",
                                      number, target_sense)
            if not size:
                continue
            for unit_lu, access in ((source_lu, READ_ACCESS), (destination_lu, WRITE_ACCESS)):
                if (id(unit_lu), access) in checked:
                    continue
                if reservation_conflict(unit_lu, command.nexus, access):
                    raise CopyAborted(0x0D, 0x01, f"segment {number}: {unit_lu.name} is reserved", number)
                checked.add((id(unit_lu), access))
            plan.append((source_lu, destination_lu, source_range, destination_range))
        return plan
