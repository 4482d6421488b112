"""Copies in progress: how a planned copy becomes steps of storage work, and how it ends.

Theory of operation
-------------------
A copy (one WRITE USING TOKEN, or the segment an EXTENDED COPY is on) is a ``CopyRun``: its
``CopyJob`` and what it touches. ``RunningCopies.steps`` yields the job's bounded steps
(``storage.copy_work.CopyStep``) until the job is done, stopped, out of its time budget, or its
live token is cancelled; the steps run on workers, never on the core's thread:

* a synchronous command (``synchronous``) is a generator of steps that the front end's
  ``CommandDriver`` runs (odxtarget/scsi/execution.py), so other commands, of this session
  and of every other, run while it copies;
* a background (IMMED=1) copy (``start_background``) yields the same steps to the daemon's
  workers through ``BackgroundCopies``.

Before each step the destination's change listeners hear which bytes it writes (the one path
every change of a medium takes, ``LogicalUnit.announce_change``), which cancels the live
tokens over them (SPC-4 5.16.6.3) -- but not the token the copy itself reads, which is
cancelled when the copy is done with it. A copy is stopped (``stop``: COPY OPERATION ABORT,
nexus loss, LU reset, an admin change of its storage) between two steps: the step on a worker
finishes under the backend's lease, and none starts after it. ``_settle`` records how the copy
ended for RRTI (SBC-4 5.25) and says what a synchronous command reports.

Everything here runs on the core's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from odxtarget.copy.background import BackgroundCopies, CopySteps
from odxtarget.copy.constants import SAM_CHECK_CONDITION, SAM_TASK_ABORTED, CopyStatus
from odxtarget.copy.counters import CopyCounters
from odxtarget.copy.errors import CopyTargetDataUnderrun, TokenCancelled
from odxtarget.copy.job import CopyJob, SourceSegment, set_aside
from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.lists import CopyOperation
from odxtarget.copy.token_store import TokenEntry, TokenStore
from odxtarget.scsi.errors import InternalTargetFailure, ScsiError
from odxtarget.scsi.execution import Steps
from odxtarget.scsi.types import ScsiResult, Status
from odxtarget.storage.backend import Backend
from odxtarget.storage.copy_work import CopyStep, CreateStagingFile, FindOverlaps, ReleaseFiles, SettledWork
from odxtarget.storage.work import StorageCall, StorageWork

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

#: A synchronous copy aims for steps of budget / this long (``RunningCopies.steps``) ...
STEP_TARGET_FRACTION = 20
#: ... and lets a step grow at most this many times over the previous one.
MAX_STEP_GROWTH = 16


def lba_after(ranges, blocks: int) -> int:
    """The destination LBA where a copy into ``ranges`` stopped after ``blocks`` whole blocks."""
    for lba, count in ranges:
        if blocks < count:
            return lba + blocks
        blocks -= count
    return ranges[-1][0] + ranges[-1][1] - 1 if ranges else 0


def complete_failed(operation: CopyOperation, error: ScsiError, now: float) -> None:
    """Record a failed command for RRTI / RECEIVE COPY STATUS: its status (CHECK CONDITION,
    or RESERVATION CONFLICT, which has no sense data) and sense."""
    sense = error.sense.pack(False) if error.sense is not None else b""
    operation.complete(CopyStatus.COMPLETED_WITH_ERRORS, now, sense, int(error.status))


@dataclass(eq=False)
class Staging:
    """A live token's source that a WRITE USING TOKEN may overwrite: the work that finds the
    overlapping segments, where to copy them aside, and how to plan the copy from there."""

    source: list[SourceSegment]
    find: FindOverlaps
    create_file: CreateStagingFile
    #: The source LU's block size: the segments are whole blocks of it.
    block_size: int
    replan: Callable[[list[SourceSegment]], CopyJob]


@dataclass(eq=False)
class CopyRun:
    """A copy in progress (a WRITE USING TOKEN, or the current segment of an EXTENDED COPY):
    what it touches, and what to finish when its job is done."""

    operation: CopyOperation | None
    job: CopyJob
    destination: "LogicalUnit"
    #: The destination's backend when the copy was planned: the one its steps write.
    backend: Backend
    entry: TokenEntry | None = None
    delete_token: bool = False
    background: bool = False
    ranges: tuple[tuple[int, int], ...] = ()    # destination (lba, blocks), for error LBAs
    #: Every logical unit the copy reads or writes directly (not through a ROD file).
    units: tuple["LogicalUnit", ...] = ()
    staging: Staging | None = None
    #: The copy's own writes touched its live token's source: cancelled once it is done.
    spare_cancelled: bool = False
    #: Terminated: COPY OPERATION ABORT, nexus loss, LU reset, an admin change of its storage.
    stopped: bool = False
    #: Called once when the copy ends, however it ends (a cluster token's lease goes then).
    on_finished: Callable[[], None] | None = None

    def touches(self, lu: "LogicalUnit") -> bool:
        """The copy writes ``lu``, or reads it through a live token or an EXTENDED COPY."""
        return any(unit is lu for unit in self.units)

    def stop(self) -> None:
        """No further step starts; the one on a worker, if any, finishes."""
        self.stopped = True


class RunningCopies:
    """See the module docstring. ``limits`` and ``counter`` read the copy manager's current
    limits and a logical unit's counters."""

    def __init__(self, tokens: TokenStore, clock: Callable[[], float], limits: Callable[[], CopyLimits],
                 counter: Callable[["LogicalUnit"], CopyCounters], background: BackgroundCopies):
        self.tokens = tokens
        self.clock = clock
        self._limits = limits
        self._counter = counter
        self.background = background
        self._runs: list[CopyRun] = []
        #: The copy whose step is being announced to the change listeners (``_announce``).
        self._announcing: CopyRun | None = None

    def add(self, running: CopyRun) -> None:
        self._runs.append(running)

    def finished(self, running: CopyRun) -> None:
        if running in self._runs:
            self._runs.remove(running)
            if running.on_finished is not None:
                running.on_finished()

    def start_background(self, running: CopyRun) -> None:
        """Run ``running`` as a background copy (IMMED=1)."""
        running.background = True
        self.background.start(running, self._background_copy(running))

    def stop_on(self, lu: "LogicalUnit") -> int:
        """Terminate the copies that write ``lu`` or read it directly; returns how many."""
        stopping = [running for running in self._runs if running.touches(lu) and not running.stopped]
        for running in stopping:
            self.stop(running)
        return len(stopping)

    def stop_all(self) -> None:
        for running in list(self._runs):
            if not running.stopped:
                self.stop(running)

    def lu_changing(self, lu: "LogicalUnit", offset: int, length: int) -> None:
        """``LogicalUnit.change_listeners``: bytes of ``lu`` are about to change, so the live
        tokens over them are cancelled -- except the token of the copy making the change, which
        is cancelled when that copy is done with it."""
        if not self.tokens.watches(lu):
            return
        copying = self._announcing
        spare = copying.entry if copying is not None else None
        if self.tokens.source_written(lu, offset, length, self.clock(), spare) and copying is not None:
            copying.spare_cancelled = True

    def _announce(self, running: CopyRun, step: CopyStep) -> None:
        """Tell the destination's change listeners what ``step`` is about to write."""
        self._announcing = running
        try:
            for offset, length in running.job.destination_spans(step):
                running.destination.announce_change(offset, length)
        finally:
            self._announcing = None

    def synchronous(self, running: CopyRun, length: int) -> Steps:
        """A WRITE USING TOKEN without IMMED: the command's own steps, within the time budget
        (Windows expects every command within 4 s; a truncated copy is partial success)."""
        deadline = self.clock() + self._limits().write_using_token_budget
        try:
            yield from self._stage(running)
            yield from self.steps(running, deadline=deadline, adaptive=True)
            flush_error = yield from self._flush(running)
            yield from self._release(running)
        except GeneratorExit:          # the command was aborted (SAM-5 7.2) between two steps
            running.stop()
            self._settle(running, None, terminated=True)
            self._release_off_thread(running)
            raise
        except BaseException:
            self._abandon(running)
            raise
        error = self._settle(running, flush_error)
        if error is not None:
            raise error
        return ScsiResult(Status.GOOD, b"", b"", length)

    def _background_copy(self, running: CopyRun) -> CopySteps:
        """A WRITE USING TOKEN with IMMED=1: the same steps, of ``background_step_bytes``
        each, on the daemon's workers; the result is for RRTI only."""
        try:
            yield from self._stage(running)
            yield from self.steps(running)
            flush_error = yield from self._flush(running)
            yield from self._release(running)
        except GeneratorExit:
            running.stop()
            self._settle(running, None, terminated=True)
            self._release_off_thread(running)
            raise
        except Exception:  # noqa: BLE001 - a bug in one copy must not leave its list id in use
            log.exception("%s: background copy failed", running.destination.name)
            self._abandon(running)
            return
        self._settle(running, flush_error)

    def _stage(self, running: CopyRun) -> Generator[StorageWork, object, None]:
        """Copy aside, in steps, the source data the copy overwrites; then plan from there."""
        staging, running.staging = running.staging, None
        if staging is None or running.stopped:
            return
        job = running.job
        try:
            overlapping = yield staging.find
            if not overlapping:
                return
            file = yield staging.create_file
        except OSError as error:
            job.fail(error)
            return
        job.owned.append(file)                  # released with the copy, whatever happens
        aside, source = set_aside(staging.source, overlapping, file, staging.block_size, job.lane)
        step_bytes = self._limits().background_step_bytes
        while not aside.done and not running.stopped:
            step = aside.next_step(step_bytes)
            aside.advanced(step, (yield step))
        if aside.error is not None:
            job.fail(aside.error)
            return
        if running.stopped:
            return
        replanned = staging.replan(source)
        replanned.owned.extend(job.take_owned())
        running.job = replanned
        if running.operation is not None:
            running.operation.job = replanned

    def steps(self, running: CopyRun, *, deadline: float | None = None,
              adaptive: bool = False) -> Generator[StorageWork, object, None]:
        """Yield the job's steps until it is done, stopped, its live token is cancelled, or
        ``deadline`` passes. Steps start at ``background_step_bytes``; ``adaptive`` steps are
        then resized towards a twentieth of the time budget (growing at most
        ``MAX_STEP_GROWTH`` times per step): a reflink of 64 MiB costs about what one of 8 MiB
        does, so fast methods make few steps, while a slow method keeps steps short enough
        that the budget is overrun by about a twentieth."""
        job = running.job
        step_bytes = self._limits().background_step_bytes
        target = self._limits().write_using_token_budget / STEP_TARGET_FRACTION
        while True:
            self._check_source_still_valid(running)
            if job.done or running.stopped:
                return
            step = job.next_step(step_bytes)
            self._announce(running, step)
            started = self.clock()
            outcome = yield step
            job.advanced(step, outcome)
            if job.done or running.stopped:
                return
            finished = self.clock()
            if deadline is not None and finished >= deadline:
                return
            if adaptive:
                elapsed = finished - started
                growth = MAX_STEP_GROWTH if elapsed <= 0 else min(MAX_STEP_GROWTH, target / elapsed)
                step_bytes = max(self._limits().background_step_bytes, int(max(step.length, 1) * growth))

    def _check_source_still_valid(self, running: CopyRun) -> None:
        """A copy from a live token stops when the token is cancelled: what it wrote so far was
        read before the source changed (point-in-time to that block)."""
        entry = running.entry
        if entry is not None and entry.rod_file is None and entry.invalid is not None and not running.spare_cancelled:
            running.job.fail(OSError(0, "source token invalidated"))
            if running.operation is not None:
                running.operation.extra["invalidated"] = entry.invalid

    def _flush(self, running: CopyRun) -> Generator[StorageWork, object, OSError | None]:
        """With the write cache off (WCE=0) the copied data must be durable before the command
        completes (SBC-4 4.28.2): flush the destination ranges, on a worker. Returns the
        flush's error, if any. A stopped copy flushes nothing: its storage may be going."""
        lu, backend = running.destination, running.backend
        if running.stopped or lu.mode.write_cache or not running.ranges:
            return None
        start = min(lba for lba, _ in running.ranges) * lu.block_size
        end = max(lba + count for lba, count in running.ranges) * lu.block_size
        try:
            yield StorageCall(backend.lane, backend.flush, (start, end - start))
        except OSError as error:
            return error
        return None

    def _release(self, running: CopyRun) -> Generator[StorageWork, object, None]:
        """Release the job's staging files, as the copy's last step."""
        files = running.job.take_owned()
        if files:
            try:
                yield ReleaseFiles(files, running.job.lane)
            except OSError as error:
                log.warning("%s: releasing staging files: %s", running.destination.name, error)

    def _release_off_thread(self, running: CopyRun) -> None:
        """Release the job's staging files on a worker, for a copy that ends without a step of
        its own."""
        files = running.job.take_owned()
        if files:
            self.background.errand(ReleaseFiles(files, running.job.lane))

    def stop(self, running: CopyRun) -> SettledWork | None:
        """Terminate a copy; returns the background step still on a worker, if any."""
        running.stop()
        if running.background:
            return self.background.stop(running)
        return None       # a synchronous command ends when its current step returns

    def terminate(self, operation: CopyOperation) -> SettledWork | None:
        for running in list(self._runs):
            if running.operation is operation:
                return self.stop(running)
        return None

    def _abandon(self, running: CopyRun) -> None:
        """A bug ended the copy: free its token, files and list identifier."""
        self.finished(running)
        if running.entry is not None:
            self.tokens.release(running.entry, self.clock())
        self._release_off_thread(running)
        if running.operation is not None and running.operation.active:
            complete_failed(running.operation, InternalTargetFailure(), self.clock())

    def _settle(self, running: CopyRun, flush_error: OSError | None, *, terminated: bool = False) -> ScsiError | None:
        """Complete the operation of a finished, failed or stopped copy; returns the error for
        a synchronous command to raise, if any."""
        self.finished(running)
        job, operation, lu = running.job, running.operation, running.destination
        now = self.clock()
        counters = self._counter(lu)
        counters.add_bytes(job.moved)
        if running.entry is not None:
            if running.spare_cancelled:
                self.tokens.release(running.entry, now)
                self.tokens.invalidate(running.entry, TokenCancelled, now)
            else:
                self.tokens.release(running.entry, now, delete=running.delete_token)
        transferred = job.transferred_blocks
        operation.transfer_count = transferred
        cut_short = running.stopped and not job.all_items_done
        if terminated or (cut_short and running.background):
            operation.complete(CopyStatus.TERMINATED, now, b"", SAM_TASK_ABORTED)
            return None
        error: ScsiError | None = None
        if cut_short:
            # A command stopped by an admin change, nexus loss or LU reset reports what it did,
            # as a truncation, whatever the step handed out before the stop met.
            error = CopyTargetDataUnderrun(transferred)
        elif flush_error is not None:
            # WCE=0 promises the data is on stable storage when the command completes, and none
            # of it is known to be: the LU's write error, not a short transfer count
            # (docs/odx.md, "Crash safety").
            operation.transfer_count = 0
            error = lu.write_error(lba_after(running.ranges, 0), flush_error)
        elif job.error is not None:
            invalid = operation.extra.get("invalidated")
            if transferred:
                error = CopyTargetDataUnderrun(transferred)
            elif invalid is not None:
                error = invalid()
            else:
                error = lu.write_error(lba_after(running.ranges, transferred), job.error)
        elif transferred < operation.requested:
            error = CopyTargetDataUnderrun(transferred)     # the ROD ran out, or the time budget
        if error is None:
            operation.complete(CopyStatus.COMPLETED, now)
            return None
        counters.add_failure(error.sense)
        status = CopyStatus.COMPLETED_PARTIAL if isinstance(error, CopyTargetDataUnderrun) \
            else CopyStatus.COMPLETED_WITH_ERRORS
        operation.complete(status, now, error.sense.pack(False), SAM_CHECK_CONDITION)
        return error

