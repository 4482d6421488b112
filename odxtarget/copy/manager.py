"""The copy manager: ODX (POPULATE TOKEN / WRITE USING TOKEN) and EXTENDED COPY(LID1) for
every logical unit of the daemon, on one token store.

Use (the daemon)::

    manager = CopyManager(config.state_dir, CopyLimits())
    manager.startup_cleanup()            # ROD files a crashed run left behind
    for lu in logical_units:
        manager.attach(lu)               # commands 83h/84h, VPD 8Fh, 3PC=1, change listener
    manager.use_workers(workers)         # where background copies run (StorageWorkers)
    manager.housekeeping()               # about once a second: token expiry, stale results
    manager.use_access(access)           # the front end's CopyAccess (docs/odx.md, "Access control")
    manager.storage_replacing(lu)        # before an admin change swaps or closes lu's storage
    manager.close()

Protocol logic lives in pure modules (params, token, responses, xcopy, lists, job planning);
this module binds them to logical units: it parses, checks and plans each command, and hands
the copy to ``running.RunningCopies``. Nothing here waits for a disk (docs/odx.md, "How copies
run"): a command that moves data is a generator of storage work (odxtarget/scsi/execution.py),
whose steps -- reflinks, copy_file_range, reads and writes, deallocations, flushes, each of
bounded size (``storage.copy_work``) -- the front end runs on its workers; a background
(IMMED=1) copy yields the same steps to the daemon's workers (``background.BackgroundCopies``).
Everything in this module runs on the core's one thread, so its state needs no locks. Time
comes from ``clock`` (monotonic seconds), so tests inject it.

Tokens of logical units stored in RBD images are not in the token store: they are RBD
snapshots with records in RADOS, which every gateway serving the image resolves alike
(``cluster_tokens``; docs/rbd.md, "ROD tokens across gateways").

Live tokens are cancelled through the one path every change of a logical unit's medium
takes: ``LogicalUnit.change_listeners`` (SPC-4 5.16.6.3). A copy announces each step's
destination bytes there too, before the step runs.

Access control: a copy reads and writes only what the I_T nexus that sent it could read and
write itself. EXTENDED COPY's CSCD descriptors resolve only to logical units of the command's
own target, a ROD token is usable (and listed by REPORT ALL ROD TOKENS) only by a nexus whose
initiator can reach the token's source LU (``CopyAccess``, odxtarget.copy.access), and every
LU a copy reads or writes passes the dispatcher's reservation test (``reservation_conflict``)
as a READ or a WRITE from that nexus would. Tokens count against per-initiator quotas.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from odxtarget.copy import params, responses, xcopy
from odxtarget.copy.access import READ_ACCESS, WRITE_ACCESS, CopyAccess, OwnTargetOnly, maps
from odxtarget.copy.background import BackgroundCopies, WorkSubmitter
from odxtarget.copy.cluster_tokens import ClusterTokens, IssuedToken, rados_backend, snapshot_source
from odxtarget.copy.constants import (
    CSCD_ID_THIS_LU, DELAY_COMPLETE, ROD_TOKEN_LENGTH, SAM_CHECK_CONDITION, SAM_TASK_ABORTED, CopyInAction,
    CopyOutAction, CopyStatus, RodType,
)
from odxtarget.copy.counters import CopyCounters
from odxtarget.copy.errors import CopyAborted, InsufficientResourcesToCreateRod, InvalidTokenLength, TokenUnknown
from odxtarget.copy.job import (CopyJob, SourceSegment, live_source, may_overlap, overlaps_for, plan_copy,
                                plan_zero, rod_file_source)
from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.lists import CopyOperation, ListRegistry
from odxtarget.copy.rod_files import RodDirectory
from odxtarget.copy.running import CopyRun, RunningCopies, Staging, complete_failed
from odxtarget.copy.token import (build_token, creator_descriptor, creator_designator_of, is_zero_token,
                                  rod_type_of, token_length_of)
from odxtarget.copy.token_record import TokenRecord, TokenState, snapshot_name, token_digest
from odxtarget.copy.token_store import RodFile, TokenEntry, TokenStore
from odxtarget.scsi.command_table import CommandFlags, CommandSpec, DataDirection
from odxtarget.scsi.constants import Opcode, VpdPage
from odxtarget.scsi.dataout import take
from odxtarget.scsi.dispatch import reservation_conflict
from odxtarget.scsi.errors import (
    InternalTargetFailure, InvalidFieldInCdb, InvalidFieldInParameterList, ParameterListLengthError,
    ReservationConflict, ScsiError, WriteProtected,
)
from odxtarget.scsi.execution import Steps
from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status
from odxtarget.storage.backend import FileBacked
from odxtarget.storage.copy_work import CreateStagingFile, SettledWork
from odxtarget.storage.rbd_snapshots import RadosBacked
from odxtarget.storage.work import StorageCall

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit
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
#: Reflink alignment when there is no ROD directory to measure a filesystem block on.
DEFAULT_REFLINK_ALIGNMENT = 4096


def _parameter_list_length(cdb: bytes, block_size: int) -> int:
    return U32.unpack_from(cdb, 10)[0]


def _good(data: bytes = b"", transfer_length: int | None = None) -> ScsiResult:
    return ScsiResult(Status.GOOD, data, b"", len(data) if transfer_length is None else transfer_length)


def _data_in(data: bytes, allocation_length: int) -> ScsiResult:
    data = data[:allocation_length]
    return ScsiResult(Status.GOOD, data, b"", len(data))


@dataclass(frozen=True, slots=True)
class _Populate:
    """A POPULATE TOKEN being served."""

    lu: "LogicalUnit"
    operation: CopyOperation
    request: params.PopulateTokenRequest
    owner: str      # the initiator name whose quotas the token counts against
    now: float
    length: int     # the PARAMETER LIST LENGTH, reported as transferred


def _terminated_segment(number: int) -> CopyAborted:
    """An EXTENDED COPY stopped by an admin change of a copy target's storage, nexus loss or
    LU reset: COPY TARGET DEVICE NOT REACHABLE for the segment (SPC-4 6.3.4)."""
    return CopyAborted(0x0D, 0x02, f"segment {number}: the copy was terminated", number)


class CopyManager:
    """See the module docstring."""

    def __init__(self, state_dir: str | None, limits: CopyLimits | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "odxtarget",
                 access: CopyAccess | None = None, workers: WorkSubmitter | None = None):
        self._limits = limits or CopyLimits()
        self.clock = clock
        self.name = name
        self.access: CopyAccess = access or OwnTargetOnly()
        self.rod_directory = RodDirectory(state_dir) if state_dir else None
        self.tokens = TokenStore(self._limits.max_tokens, self._limits.max_rod_bytes, self._discard_rod_file,
                                 max_tokens_per_initiator=self._limits.max_tokens_per_initiator,
                                 max_rod_bytes_per_initiator=self._limits.max_rod_bytes_per_initiator)
        self.lists = ListRegistry(self._limits.result_retention, self._limits.max_lists_per_nexus)
        self._units: dict[int, "LogicalUnit"] = {}
        self._by_designator: dict[bytes, "LogicalUnit"] = {}
        self._counters: dict[str, CopyCounters] = {}
        self._background = BackgroundCopies(self._limits.max_concurrent_copies)
        #: Every copy in progress, synchronous or not.
        self.copies = RunningCopies(self.tokens, lambda: self.clock(), lambda: self._limits, self._counter,
                                    self._background)
        #: Tokens of LUs stored in RBD images: snapshots and records in the cluster.
        self.cluster = ClusterTokens(lambda: self.clock())
        self._closing = False
        if workers is not None:
            self.use_workers(workers)

    @property
    def limits(self) -> CopyLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: CopyLimits) -> None:
        """New limits apply to the next command; the token store's caps and quotas, and the
        number of background copies that may run, at once."""
        self._limits = limits
        self.tokens.max_tokens = limits.max_tokens
        self.tokens.max_rod_bytes = limits.max_rod_bytes
        self.tokens.max_tokens_per_initiator = limits.max_tokens_per_initiator
        self.tokens.max_rod_bytes_per_initiator = limits.max_rod_bytes_per_initiator
        self._background.limit = limits.max_concurrent_copies

    # -- daemon API -------------------------------------------------------------------------

    def use_access(self, access: CopyAccess) -> None:
        """The front end's knowledge of who reaches which LU; set once its targets exist."""
        self.access = access

    def use_workers(self, workers: WorkSubmitter) -> None:
        """Where background copies and the removal of dead tokens' files run (the daemon's
        ``StorageWorkers``); until then they wait."""
        self._background.use_workers(workers)

    def startup_cleanup(self) -> int:
        """Delete ROD files left by a previous run; returns how many."""
        return self.rod_directory.startup_cleanup() if self.rod_directory else 0

    def attach(self, lu: "LogicalUnit") -> None:
        """Offer third-party copy on ``lu``: commands, VPD 8Fh, 3PC=1, the change listener."""
        if id(lu) in self._units:
            return
        for spec in self._command_specs():
            lu.commands.register(spec, replace=True)
        limits = self.limits
        lu.vpd_pages.register(VpdPage.THIRD_PARTY_COPY,
                              lambda unit, nexus: responses.third_party_copy_vpd(limits, unit.block_size),
                              replace=True)
        lu.third_party_copy = True
        lu.change_listeners.append(self.copies.lu_changing)
        lu.event_listeners.append(self._on_lu_event)
        self._units[id(lu)] = lu
        self._by_designator[bytes(lu.naa_designator)] = lu
        self.tokens.register_designator(lu.naa_designator)
        self._counters.setdefault(lu.name, CopyCounters())

    def _on_lu_event(self, lu: "LogicalUnit", event: str, nexus: ItNexus | None) -> None:
        """Core hook: ``reset`` (LU or target reset) or ``nexus_lost`` (loss or logout)."""
        if event == "reset":
            self.lu_reset(lu)
        elif event == "nexus_lost" and nexus is not None:
            self.nexus_lost(nexus)

    def detach(self, lu: "LogicalUnit") -> None:
        """Stop offering copies on ``lu`` (its tokens are revoked, its copies terminated)."""
        if self._units.pop(id(lu), None) is None:
            return
        self.copies.stop_on(lu)
        self.lu_reset(lu)
        self.tokens.creator_gone(lu, self.clock())
        self.cluster.forget_creator(lu)
        self._by_designator.pop(bytes(lu.naa_designator), None)
        lu.change_listeners.remove(self.copies.lu_changing)
        lu.event_listeners.remove(self._on_lu_event)

    def storage_replacing(self, lu: "LogicalUnit") -> None:
        """``lu``'s storage is about to be swapped or closed (an admin change of its extents,
        size or read-only flag, a reopen, or its deletion): after this returns, no copy starts
        another step on that storage. Copies that write ``lu``, or read it through a live token
        or an EXTENDED COPY, are terminated (a background one's status is 60h, as after COPY
        OPERATION ABORT); a step already on a worker finishes under the backend's lease, which
        keeps its descriptors open until then. ``lu``'s live tokens are cancelled (23h/08h on
        next use); snapshot tokens keep their own ROD files. The cluster tokens of an RBD image
        are cancelled on every gateway (docs/rbd.md, "ROD tokens across gateways")."""
        terminated = self.copies.stop_on(lu)
        cancelled = self.tokens.creator_storage_replaced(lu, self.clock())
        backend = rados_backend(lu)
        if backend is not None:
            self.cluster.forget_creator(lu)
            self._background.errand(self.cluster.invalidate_image(
                lambda: rados_backend(lu) or backend, backend.spec.pool, backend.spec.image, TokenState.CANCELLED))
        if terminated or cancelled:
            log.info("%s: storage replaced: %d copies terminated, %d live tokens cancelled",
                     lu.name, terminated, cancelled)

    def has_pending_work(self) -> bool:
        """Background copies are running or waiting for a slot."""
        return self._background.busy

    def housekeeping(self) -> None:
        """Expire idle tokens (removing their ROD files) and stale list results; now and then,
        sweep the cluster for dead tokens' records and snapshots (``ClusterTokens``)."""
        now = self.clock()
        self.tokens.expire(now)
        self.lists.expire(now)
        sweep = self.cluster.housekeeping(self._rados_backends())
        if sweep is not None:
            self._background.errand(sweep)

    def _rados_backends(self) -> list[RadosBacked]:
        return [backend for backend in map(rados_backend, self._units.values()) if backend is not None]

    def nexus_lost(self, nexus: ItNexus) -> None:
        """I_T nexus loss or logout: its list results go, its running copies are terminated."""
        for operation in self.lists.nexus_lost(nexus):
            self.copies.terminate(operation)

    def lu_reset(self, lu: "LogicalUnit") -> None:
        """LOGICAL UNIT RESET (or target reset): drop the LU's operations (SAM-5 6.3)."""
        for operation in self.lists.lu_reset(lu):
            self.copies.terminate(operation)

    def revoke_token(self, token_id: int) -> bool:
        return self.tokens.revoke(token_id, self.clock())

    def counters(self, lu_name: str) -> dict:
        return self._counters.setdefault(lu_name, CopyCounters()).as_dict()

    def all_counters(self) -> dict[str, dict]:
        return {name: counters.as_dict() for name, counters in sorted(self._counters.items())}

    def close(self) -> None:
        """Daemon shutdown: every copy stops (a step on a worker finishes), every token and ROD
        file goes. Runs after the front end stopped, so removing the files here stalls nobody."""
        self._closing = True
        self.copies.stop_all()
        self._background.close()
        self.tokens.close()
        if self.rod_directory is not None:
            self.rod_directory.remove_all()
        for name, counters in sorted(self._counters.items()):
            log.info("copy counters %s: %s", name, counters.as_dict())

    # -- storage work nobody waits for ---------------------------------------------------------

    def _discard_rod_file(self, rod_file: RodFile) -> None:
        """A dead token's ROD file goes, on a worker (``close`` removes the rest at once)."""
        if self.rod_directory is not None and not self._closing:
            self._background.errand(self.rod_directory.removal(rod_file))

    def _counter(self, lu: "LogicalUnit") -> CopyCounters:
        return self._counters.setdefault(lu.name, CopyCounters())

    def _reflink_alignment(self) -> int:
        return self.rod_directory.alignment if self.rod_directory else DEFAULT_REFLINK_ALIGNMENT

    def _staging_directory(self) -> str | None:
        return self.rod_directory.path if self.rod_directory else None

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

    def _populate_token(self, lu: "LogicalUnit", command: ScsiCommand, target) -> ScsiResult | Steps:
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
        operation.requested = sum(count for _, count in request.ranges)
        populate = _Populate(lu, operation, request, command.nexus.initiator_name, now, length)
        try:
            self.tokens.check_room(populate.owner)
        except ScsiError as error:
            return self._token_refused(populate, error)
        backend = rados_backend(lu) if request.rod_type != RodType.PIT_CHANGE_VULNERABLE else None
        if backend is not None:
            return self._populate_cluster(populate, backend)
        token_id = self.tokens.next_token_id()
        source = self._snapshot_source(lu, request)
        if source is not None:
            return self._populate_snapshot(populate, token_id, source)
        return self._token_made(populate, token_id, None)

    def _snapshot_source(self, lu: "LogicalUnit", request: params.PopulateTokenRequest) -> FileBacked | None:
        """The backend to snapshot into a ROD file, when one may be tried (docs/odx.md, "Token
        semantics"): not asked for cancel-on-write, files on a reflink-capable state directory."""
        backend = lu.backend
        if (request.rod_type == RodType.PIT_CHANGE_VULNERABLE or self.rod_directory is None
                or not self.rod_directory.reflink_capable or not isinstance(backend, FileBacked)):
            return None
        return backend

    def _populate_snapshot(self, populate: "_Populate", token_id: int, source: FileBacked) -> Steps:
        """Reflink the ranges into a ROD file on a worker, then issue the token."""
        lu, block_size = populate.lu, populate.lu.block_size
        spans = [(lba * block_size, count * block_size) for lba, count in populate.request.ranges]
        try:
            outcome = yield self.rod_directory.snapshot(token_id, source, lu.backend.lane, spans)
        except OSError as error:
            log.error("%s: cannot create ROD file: %s", lu.name, error)
            return self._token_refused(populate, InsufficientResourcesToCreateRod(f"ROD file: {error}"))
        if outcome.reflink_refused:
            self.rod_directory.reflink_refused()
        return self._token_made(populate, token_id, outcome.rod_file)

    def _populate_cluster(self, populate: "_Populate", backend: RadosBacked) -> Steps:
        """An RBD snapshot and its record in RADOS, on a worker: a token every gateway serving
        the image can use (``cluster_tokens``)."""
        lu, request, owner = populate.lu, populate.request, populate.owner
        if self.cluster.held_by(owner) + self.tokens.tokens_of(owner) >= self.limits.max_tokens_per_initiator:
            return self._token_refused(populate, InsufficientResourcesToCreateRod(
                f"initiator {owner!r} holds its quota of ROD tokens"))
        if len(self.cluster.issued) + len(self.tokens) >= self.limits.max_tokens:
            return self._token_refused(populate, InsufficientResourcesToCreateRod("too many ROD tokens"))
        block_size = lu.block_size
        size = sum(count for _, count in request.ranges) * block_size
        timeout = float(request.inactivity_timeout)
        for _ in range(3):
            token_id = self.cluster.new_token_id()
            token = build_token(RodType.PIT_DEFAULT, token_id, creator_descriptor(lu.naa_designator, block_size),
                                size, block_size, lu.block_count, self.name)
            now = self.cluster.wall_clock()
            record = TokenRecord(token_id, token_digest(token), RodType.PIT_DEFAULT, backend.spec.pool,
                                 backend.spec.image, snapshot_name(token_id), bytes(lu.naa_designator),
                                 tuple((lba, count) for lba, count in request.ranges), block_size,
                                 lu.block_count * block_size, size, owner, self.cluster.gateway, now, timeout, now)
            try:
                yield self.cluster.issue(backend, record)
            except FileExistsError:
                continue                       # another gateway drew the same identifier
            except OSError as error:
                log.error("%s: cannot snapshot %s/%s for a ROD token: %s", lu.name, backend.spec.pool,
                          backend.spec.image, error)
                return self._token_refused(populate, InsufficientResourcesToCreateRod(f"RBD snapshot: {error}"))
            break
        else:
            return self._token_refused(populate, InsufficientResourcesToCreateRod("no free token identifier"))
        self.cluster.remember(token_id, token, lu, owner, timeout)
        counters = self._counter(lu)
        counters.tokens_created += 1
        counters.snapshot_tokens += 1
        operation = populate.operation
        operation.token = token
        operation.transfer_count = operation.requested
        operation.complete(CopyStatus.COMPLETED, self.clock())
        log.debug("%s: cluster token %016x (snapshot %s) for %d blocks", lu.name, token_id, record.snapshot,
                  operation.requested)
        return _good(transfer_length=populate.length)

    def _token_made(self, populate: "_Populate", token_id: int, rod_file: RodFile | None) -> ScsiResult:
        lu, operation = populate.lu, populate.operation
        try:
            entry = self._create_token(populate, token_id, rod_file)
        except ScsiError as error:
            return self._token_refused(populate, error)
        counters = self._counter(lu)
        counters.tokens_created += 1
        counters.snapshot_tokens += entry.snapshot
        operation.token = entry.token
        operation.transfer_count = operation.requested
        operation.complete(CopyStatus.COMPLETED, self.clock())
        self.tokens.touch(entry, self.clock())
        log.debug("%s: token %016x (%s) for %d blocks", lu.name, entry.token_id,
                  "snapshot" if entry.snapshot else "live", operation.requested)
        return _good(transfer_length=populate.length)

    def _token_refused(self, populate: "_Populate", error: ScsiError) -> ScsiResult:
        """POPULATE TOKEN failed: RRTI reports it; with IMMED=1 only RRTI does (SBC-4 5.x)."""
        self._counter(populate.lu).add_failure(error.sense)
        complete_failed(populate.operation, error, self.clock())
        if populate.request.immed:
            return _good(transfer_length=populate.length)
        raise error

    def _create_token(self, populate: "_Populate", token_id: int, rod_file: RodFile | None) -> TokenEntry:
        """A token of the command's initiator, within the daemon's caps and its quotas."""
        lu, request = populate.lu, populate.request
        block_size = lu.block_size
        size = sum(count for _, count in request.ranges) * block_size
        rod_type = RodType.PIT_DEFAULT if rod_file is not None else RodType.PIT_CHANGE_VULNERABLE
        token = build_token(rod_type, token_id, creator_descriptor(lu.naa_designator, block_size), size,
                            block_size, lu.block_count, self.name)
        entry = TokenEntry(token, token_id, rod_type, lu, request.ranges, block_size, lu.block_count, size,
                           float(request.inactivity_timeout), populate.now, rod_file, owner=populate.owner,
                           created=populate.now)
        try:
            self.tokens.add(entry)
        except BaseException:
            if rod_file is not None:
                self._discard_rod_file(rod_file)
            raise
        return entry

    # -- WRITE USING TOKEN (SBC-4 5.x) --------------------------------------------------------

    def _write_using_token(self, lu: "LogicalUnit", command: ScsiCommand, target) -> ScsiResult | Steps:
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
        creator = self._cluster_token_creator(request.token)
        if creator is not None:
            return self._write_using_cluster_token(lu, command, target, operation, request, creator, length)
        try:
            running = self._prepare_write(lu, command, target, operation, request, now)
        except ScsiError as error:
            counters.add_failure(error.sense)
            complete_failed(operation, error, self.clock())
            if request.immed:
                return _good(transfer_length=length)
            raise
        except BaseException:
            complete_failed(operation, InternalTargetFailure(), self.clock())   # frees the list id
            raise
        self.copies.add(running)
        if request.immed:
            operation.status = CopyStatus.IN_PROGRESS_BACKGROUND
            self.copies.start_background(running)
            return _good(transfer_length=length)
        return self.copies.synchronous(running, length)

    def _cluster_token_creator(self, token: bytes) -> "LogicalUnit | None":
        """The LU whose cluster token ``token`` claims to be (a snapshot token of an LU of this
        daemon stored in an RBD image), or None for a token the local store resolves."""
        if token_length_of(token) != ROD_TOKEN_LENGTH or rod_type_of(token) != RodType.PIT_DEFAULT:
            return None
        creator = self._by_designator.get(creator_designator_of(token))
        return creator if creator is not None and rados_backend(creator) is not None else None

    def _write_using_cluster_token(self, lu: "LogicalUnit", command: ScsiCommand, target: "ScsiTarget | None",
                                   operation: CopyOperation, request: params.WriteUsingTokenRequest,
                                   creator: "LogicalUnit", length: int) -> Steps:
        """WRITE USING TOKEN of a cluster token: its record is read (and a lease taken) on a
        worker, then the copy runs as any other, reading the snapshot."""
        try:
            running = yield from self._prepare_cluster_write(lu, command, target, operation, request, creator)
        except ScsiError as error:
            self._counter(lu).add_failure(error.sense)
            complete_failed(operation, error, self.clock())
            if request.immed:
                return _good(transfer_length=length)
            raise
        except GeneratorExit:          # the command was aborted (SAM-5 7.2) while the record was read
            operation.complete(CopyStatus.TERMINATED, self.clock(), b"", SAM_TASK_ABORTED)
            raise
        except BaseException:
            complete_failed(operation, InternalTargetFailure(), self.clock())   # frees the list id
            raise
        self.copies.add(running)
        if request.immed:
            operation.status = CopyStatus.IN_PROGRESS_BACKGROUND
            self.copies.start_background(running)
            return _good(transfer_length=length)
        return (yield from self.copies.synchronous(running, length))

    def _prepare_cluster_write(self, lu: "LogicalUnit", command: ScsiCommand, target: "ScsiTarget | None",
                               operation: CopyOperation, request: params.WriteUsingTokenRequest,
                               creator: "LogicalUnit") -> Steps:
        """Check access, resolve the token in RADOS under a lease, and plan the copy from the
        snapshot; returns the ``CopyRun`` (nothing moves yet)."""
        nexus = command.nexus
        reached = self._reach(nexus, lu, target, creator)
        if reached is None:
            log.warning("WRITE USING TOKEN refused: initiator %r, on %s, presented a token of %s, "
                        "which it cannot reach", nexus.initiator_name, lu.name, creator.name)
            raise TokenUnknown()
        backend = rados_backend(creator)
        assert backend is not None
        holder = secrets.token_hex(8)
        try:
            record: TokenRecord = yield self.cluster.acquire(backend, backend.spec.pool, request.token, holder)
        except OSError as error:
            log.error("%s: reading the ROD token's record: %s", lu.name, error)
            raise lu.write_error(request.ranges[0][0] if request.ranges else 0, error) from None

        def release() -> None:
            self._background.errand(self.cluster.finish(backend, record, holder, False))

        if (record.pool, record.image, record.designator) != (backend.spec.pool, backend.spec.image,
                                                               bytes(creator.naa_designator)):
            release()
            log.warning("WRITE USING TOKEN refused: the token of %s names image %s/%s, which %s does not store",
                        creator.name, record.pool, record.image, creator.name)
            raise TokenUnknown()
        if reservation_conflict(creator, reached, READ_ACCESS):
            release()
            raise ReservationConflict(f"the token's source {creator.name} is reserved")
        destination, block_size = lu.backend, lu.block_size
        rod_offset = request.offset_into_rod * block_size
        if rod_offset >= record.bytes_represented:
            release()
            raise InvalidFieldInParameterList(8, None, "OFFSET INTO ROD beyond the bytes represented")
        source = snapshot_source(self.cluster, backend, record, holder)
        items, blocks = plan_copy(source, rod_offset, destination, request.ranges, block_size)
        job = CopyJob(items, block_size, blocks, operation.requested, destination.lane)
        operation.job = job
        token, delete = bytes(request.token), request.delete_token

        def finished() -> None:
            self.cluster.used_here(token, delete)
            self._background.errand(self.cluster.finish(backend, record, holder, delete))

        return CopyRun(operation, job, lu, destination, None, delete, ranges=request.ranges,
                       units=(lu, creator), on_finished=finished)

    def _prepare_write(self, lu: "LogicalUnit", command: ScsiCommand, target: "ScsiTarget | None",
                       operation: CopyOperation, request: params.WriteUsingTokenRequest, now: float) -> CopyRun:
        """Resolve the token, check access, and plan the copy (nothing moves yet)."""
        token = request.token
        destination = lu.backend
        block_size = lu.block_size
        if is_zero_token(token):
            if token_length_of(token) != ROD_TOKEN_LENGTH:
                raise InvalidTokenLength(token_length_of(token))
            items, blocks = plan_zero(destination, request.ranges, block_size)
            job = CopyJob(items, block_size, blocks, operation.requested, destination.lane)
            operation.job = job
            return CopyRun(operation, job, lu, destination, ranges=request.ranges, units=(lu,))
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
        creator: LogicalUnit = entry.creator
        if reservation_conflict(creator, reached[-1], READ_ACCESS):
            raise ReservationConflict(f"the token's source {creator.name} is reserved")
        rod_offset = request.offset_into_rod * block_size
        if rod_offset >= entry.bytes_represented:
            raise InvalidFieldInParameterList(8, None, "OFFSET INTO ROD beyond the bytes represented")
        alignment = self._reflink_alignment()

        def planned(source: list[SourceSegment]) -> CopyJob:
            items, blocks = plan_copy(source, rod_offset, destination, request.ranges, block_size)
            return CopyJob(items, block_size, blocks, operation.requested, destination.lane,
                           reflink_alignment=alignment)

        staging = None
        if entry.rod_file is not None:
            source = rod_file_source(entry.rod_file)
            units: tuple[LogicalUnit, ...] = (lu,)
        else:
            source = live_source(creator.backend, entry.ranges, entry.block_size)
            units = (lu, creator)
            if may_overlap(creator.backend, destination):
                staging = Staging(source, overlaps_for(source, destination, request.ranges, block_size),
                                  CreateStagingFile(self._staging_directory(), destination.lane),
                                  entry.block_size, planned)
        job = planned(source)
        self.tokens.acquire(entry)
        operation.job = job
        return CopyRun(operation, job, lu, destination, entry, request.delete_token, ranges=request.ranges,
                        units=units, staging=staging)

    def _reach(self, nexus: ItNexus, addressed: "LogicalUnit", target: "ScsiTarget | None",
               lu: "LogicalUnit") -> ItNexus | None:
        """The nexus through which ``nexus``'s initiator reaches ``lu``, or None: ``nexus``
        for the LU the command addresses and for the LUs of its target, else the front end's
        answer (``CopyAccess.reach``)."""
        if lu is addressed or maps(target, lu):
            return nexus
        return self.access.reach(nexus, lu)

    # -- COPY OPERATION ABORT (SPC-4 6.4) ---------------------------------------------------

    def _copy_operation_abort(self, lu: "LogicalUnit", command: ScsiCommand, target) -> ScsiResult | Steps:
        list_id = U32.unpack_from(command.cdb, 2)[0]
        operation = self.lists.get(command.nexus, lu, list_id)
        if operation is None:
            raise InvalidFieldInCdb(2, None, f"no copy operation with list identifier {list_id:#x}")
        if not operation.active:
            return _good()
        in_flight = self.copies.terminate(operation)
        if in_flight is None:
            return _good()
        return self._aborted_once_settled(in_flight)

    def _aborted_once_settled(self, in_flight: SettledWork) -> Steps:
        """The command completes once the copy has stopped, so what RRTI reports next is final:
        wait (on a worker) for the step the copy still has on a worker, then take its outcome."""
        yield in_flight.waiter()
        self._background.deliver(in_flight)
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

        def usable(entry: "TokenEntry | IssuedToken") -> bool:
            key = id(entry.creator)
            if key not in reachable:
                reachable[key] = self._reach(command.nexus, lu, target, entry.creator) is not None
            return reachable[key]

        tokens = [entry.token for entry in self.tokens.active() if usable(entry)]
        tokens += [issued.token for issued in self.cluster.issued.values() if usable(issued)]
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

    def _extended_copy(self, lu: "LogicalUnit", command: ScsiCommand, target) -> ScsiResult | Steps:
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
        if copy_list.holds_results:
            operation = self.lists.begin(command.nexus, lu, copy_list.list_id,
                                         CopyOutAction.EXTENDED_COPY_LID1, self.clock())
            operation.requested = len(plan)
        return self._run_extended_copy(plan, operation, counters, length)

    def _run_extended_copy(self, plan: list, operation: CopyOperation | None, counters: CopyCounters,
                           length: int) -> Steps:
        """The segments in order, each a job of steps on the front end's workers, then one
        flush per destination whose write cache is off."""
        transferred = 0
        running: CopyRun | None = None

        def failed(number: int, error: ScsiError) -> CopyAborted:
            """A copy target reported ``error`` for segment ``number``: COPY ABORTED with the
            copy target's sense after it (SPC-2 7.2.3, errors during segment processing)."""
            target_sense = error.sense.fixed() if error.sense is not None else b""
            return finish(number, CopyAborted(0x00, 0x00, f"segment {number}: {error}", number, target_sense))

        def finish(number: int, aborted: CopyAborted) -> CopyAborted:
            counters.add_failure(aborted.sense)
            if operation is not None:
                operation.transfer_count = transferred
                operation.segments_processed = number
                operation.complete(CopyStatus.COMPLETED_WITH_ERRORS, self.clock(), aborted.sense.pack(False),
                                   SAM_CHECK_CONDITION)
            return aborted

        units = tuple({id(unit): unit for segment in plan for unit in segment[:2]}.values())
        #: id(LU) -> (LU, backend, first LBA, end LBA, last segment) of destinations with WCE=0
        unflushed: dict[int, tuple] = {}
        try:
            for number, (source_lu, destination_lu, source_range, destination_range) in enumerate(plan):
                destination = destination_lu.backend
                source = live_source(source_lu.backend, [source_range], source_lu.block_size)
                items, blocks = plan_copy(source, 0, destination, [destination_range], destination_lu.block_size)
                job = CopyJob(items, destination_lu.block_size, blocks, destination_range[1], destination.lane,
                              reflink_alignment=self._reflink_alignment())
                if running is None:
                    running = CopyRun(operation, job, destination_lu, destination, units=units)
                    self.copies.add(running)
                else:
                    running.job, running.destination, running.backend = job, destination_lu, destination
                yield from self.copies.steps(running, adaptive=True)
                self._counter(destination_lu).add_bytes(job.moved)
                transferred += job.bytes_done
                if job.error is not None:
                    lba = destination_range[0] + job.transferred_blocks
                    raise failed(number, destination_lu.write_error(lba, job.error))
                if running.stopped:
                    raise finish(number, _terminated_segment(number))
                if not destination_lu.mode.write_cache:
                    first, count = destination_range
                    end = first + count
                    earlier = unflushed.get(id(destination_lu))
                    if earlier is not None:
                        first, end = min(first, earlier[2]), max(end, earlier[3])
                    unflushed[id(destination_lu)] = (destination_lu, destination, first, end, number)
            for destination_lu, backend, first, end, number in unflushed.values():
                if running.stopped:
                    raise finish(number, _terminated_segment(number))
                block_size = destination_lu.block_size
                try:
                    yield StorageCall(backend.lane, backend.flush, (first * block_size, (end - first) * block_size))
                except OSError as error:
                    raise failed(number, destination_lu.write_error(first, error)) from None
        except GeneratorExit:          # the command was aborted (SAM-5 7.2) between two steps
            if operation is not None and operation.active:
                operation.transfer_count = transferred
                operation.complete(CopyStatus.TERMINATED, self.clock(), b"", SAM_TASK_ABORTED)
            raise
        finally:
            if running is not None:
                self.copies.finished(running)
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
            if destination_lu.write_protected or command.write_protected or (
                    target is not None and target.write_protects(destination_lu)):
                raise WriteProtected()   # read-only, or read-only to this nexus, or mapped write-protected to it
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
