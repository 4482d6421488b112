"""Where the core's storage work runs: worker threads per lane, results back on the event loop
(docs/execution.md).

Theory of operation
-------------------
``StorageWorkers`` keeps one pool of threads per lane (a backend's device): a command's
``StorageWork`` goes to its lane's queue, a worker runs it (``preadv``, ``pwritev``,
``fdatasync``, ``fallocate``, ``copy_file_range`` and ``FICLONERANGE`` release the GIL, so
workers use the other cores), and the outcome is handed back to the loop. Completions are
batched: a worker appends to one list and wakes the loop only when that list was empty, so a
queue-depth-32 burst costs one loop wake-up, not 32. Threads start as work arrives, up to
``threads_per_lane``, and stay.

Reads and writes declared as ``FileRead``/``FileWrite`` (in one file) do not need a thread at
all: where io_uring works they are submitted to a ring on the loop (``uring.UringIo``), which
takes a burst to the disk at full queue depth for a fraction of the CPU threads cost; flushes,
deallocations, copies and COMPARE AND WRITE stay on the worker threads.

``CommandDriver`` runs ``Pending`` commands to their end on top of it: it sends each piece
of work to the workers, resumes the command on the loop with the outcome, and starts the
queued commands of a logical unit's task set that a completion released. Front ends (the
native iSCSI target, the TCMU handler) own one driver each and never block on storage.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable

from odxtarget.scsi.execution import AbortOutcome, Pending, StorageWork
from odxtarget.storage.work import FileRead, FileWrite
from odxtarget.transport.uring import UringIo
from odxtarget.scsi.types import ScsiResult

log = logging.getLogger(__name__)

#: Workers per lane: enough to keep a disk's queue full at queue depth 32 (docs/execution.md).
DEFAULT_THREADS_PER_LANE = 16
#: The most pieces of work one worker takes at once (see ``_work``).
MAX_BATCH = 16

Completion = Callable[[object, BaseException | None], None]


class _Lane:
    __slots__ = ("queue", "threads", "idle", "queued")

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0           # workers waiting for work
        self.queued = 0         # work no worker has taken yet


class StorageWorkers:
    """Threads that run ``StorageWork`` off the loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads_per_lane: int = DEFAULT_THREADS_PER_LANE, *,
                 io_uring: bool = True):
        self._loop = loop
        #: Reads that miss the page cache, and writes, go through io_uring where it works
        #: (``uring``): reads of a cold working set (``FileRead.cold``) through a ring polled
        #: by a kernel thread, writes and other reads through an ordinary one
        #: (docs/execution.md, "Where the work runs").
        self._uring_writes = UringIo.open(loop, self._on_threads) if io_uring else None
        self._uring_reads = (UringIo.open(loop, self._on_threads, polled=True)
                             if self._uring_writes is not None else None) or self._uring_writes
        self._threads_per_lane = threads_per_lane
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()
        self._done: list[tuple[Completion, object, BaseException | None]] = []
        self._closed = False
        self.in_flight = 0          # submitted, completion not yet delivered (loop thread only)

    @property
    def io_uring(self) -> bool:
        """Reads and writes go through io_uring."""
        return self._uring_writes is not None

    def submit(self, work: StorageWork, completion: Completion) -> None:
        """Run ``work`` off the loop; ``completion(value, error)`` runs on the loop."""
        if self._closed:
            raise RuntimeError("storage workers are closed")
        if self._uring_writes is not None:
            kind = type(work)
            if kind is FileRead:
                self.in_flight += 1
                ring = self._uring_reads if work.cold else self._uring_writes
                ring.submit(work, self._uring_done(completion))
                return
            if kind is FileWrite:
                self.in_flight += 1
                self._uring_writes.submit(work, self._uring_done(completion))
                return
        self._on_threads(work, completion)

    def _uring_done(self, completion: Completion) -> Completion:
        def done(value: object, error: BaseException | None) -> None:
            self.in_flight -= 1
            completion(value, error)
        return done

    def _on_threads(self, work: StorageWork, completion: Completion) -> None:
        """Run ``work`` on a worker thread of its lane."""
        lane = self._lanes.get(work.lane)
        if lane is None:
            lane = self._lanes[work.lane] = _Lane()
        self.in_flight += 1
        with self._lock:
            lane.queued += 1
            short = lane.queued > lane.idle
        if short and len(lane.threads) < self._threads_per_lane:
            thread = threading.Thread(target=self._work, args=(lane,), daemon=True,
                                      name=f"odx-storage-{len(lane.threads)}")
            lane.threads.append(thread)
            thread.start()
        lane.queue.put((work, completion))

    async def drain(self, timeout: float) -> bool:
        """Wait until no work is running or waiting (at most ``timeout`` seconds); True if so."""
        deadline = self._loop.time() + timeout
        while self.in_flight and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.in_flight

    def close(self) -> None:
        """Stop every worker once its queue is empty (daemon shutdown)."""
        self._closed = True
        if self._uring_reads is not None and self._uring_reads is not self._uring_writes:
            self._uring_reads.close()
        if self._uring_writes is not None:
            self._uring_writes.close()
        self._uring_writes = self._uring_reads = None
        for lane in self._lanes.values():
            for _ in lane.threads:
                lane.queue.put(None)

    # -- worker side ---------------------------------------------------------------------------

    def _work(self, lane: _Lane) -> None:
        stop = False
        while not stop:
            with self._lock:
                lane.idle += 1
            first = lane.queue.get()
            batch = [first]
            with self._lock:
                lane.idle -= 1
                if first is not None:
                    lane.queued -= 1
                    # Take this worker's share of what is queued: quick work (page-cache
                    # writes) keeps few workers busy, so each takes a batch and a burst costs
                    # one wake-up each way; slow work (disk reads) makes the lane start a
                    # worker per queued piece, so each takes one and they run side by side.
                    extra = min(MAX_BATCH - 1, lane.queued // len(lane.threads))
                    lane.queued -= extra
            if first is None:
                return
            for _ in range(extra):
                item = lane.queue.get()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            results = []
            for work, completion in batch:
                try:
                    results.append((completion, work.run(), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the command, which maps it
                    results.append((completion, None, exc))
            with self._lock:
                wake = not self._done
                self._done.extend(results)
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:      # the loop is closed: the daemon is gone
                    return

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        self.in_flight -= len(done)
        for completion, value, error in done:
            try:
                completion(value, error)
            except Exception:  # noqa: BLE001 - one command's bug must not stop the others
                log.exception("storage completion failed")


class CommandDriver:
    """Runs ``Pending`` commands to their end; see the module docstring."""

    def __init__(self, workers: StorageWorkers):
        self.workers = workers
        self._waiting: dict[Pending, Callable[[ScsiResult | None], None]] = {}

    def run(self, pending: Pending, done: Callable[[ScsiResult | None], None]) -> None:
        """Drive ``pending``; ``done(result)`` runs on the loop once it has ended, with None
        when it was aborted without a result."""
        if pending.queued:
            self._waiting[pending] = done
            return
        self._step(pending, done)

    def abort(self, pending: Pending) -> AbortOutcome:
        """Abort ``pending`` (SAM-5 7.2); see ``Pending.abort`` for what each outcome means.
        A command whose work is on a worker still reports through ``done`` when it returns."""
        outcome = pending.abort()
        if outcome is AbortOutcome.NEVER_STARTED:
            done = self._waiting.pop(pending, None)
            if done is not None:
                done(None)
            self._start_released(pending)
        elif outcome is AbortOutcome.STOPPED:
            self._start_released(pending)
        return outcome

    def run_work(self, work: StorageWork, done: Callable[[BaseException | None], None]) -> None:
        """Run ``work`` that belongs to no command (a TMF's); ``done(error)`` on the loop."""
        self.workers.submit(work, lambda _value, error: done(error))

    @property
    def busy(self) -> int:
        """Commands queued in a task set and waiting to start."""
        return len(self._waiting)

    def _step(self, pending: Pending, done: Callable[[ScsiResult | None], None]) -> None:
        work = pending.work
        if work is None:
            done(pending.result)
            self._start_released(pending)
            return

        def resume(value: object, error: BaseException | None) -> None:
            if error is not None:
                pending.fail(error)
            else:
                pending.resume(value)
            self._step(pending, done)

        self.workers.submit(work, resume)

    def _start_released(self, pending: Pending) -> None:
        """Start what the end of ``pending`` released in its task set, and what the end of
        those (if they finish at once) releases in turn -- iteratively, not recursively."""
        task_set = pending.lu.task_set
        ready = task_set.take_ready()
        while ready:
            released = ready.pop(0)
            done = self._waiting.pop(released, None)
            if done is None:       # queued by another front end's driver
                continue
            released.start()
            if released.work is None:
                done(released.result)
                ready.extend(task_set.take_ready())
            else:
                self._step(released, done)
