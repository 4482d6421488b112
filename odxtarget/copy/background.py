"""Background (IMMED=1) copies: their storage work runs on workers, never on the core's thread.

Theory of operation
-------------------
A background copy is a generator of ``StorageWork`` (the same steps a synchronous command
yields, odxtarget/scsi/execution.py) that receives each piece's result and ends when the copy
is done. ``BackgroundCopies`` hands each piece to a ``WorkSubmitter`` -- the daemon's
``transport.workers.StorageWorkers`` -- and resumes the generator with the outcome when the
workers report back on the core's thread. No thread and no event loop is used here: the
submitter owns them, and tests pass a synchronous stand-in.

At most ``limit`` copies (``CopyLimits.max_concurrent_copies``) run at once; the others wait,
in order of arrival, and RRTI reports them in progress (SBC-4 5.25). A copy is stopped by
telling its job (the copy manager does that) and then ``stop``: a waiting copy then runs to
its end at once (it sees it was stopped and moves nothing), a running one ends when its
current piece of work returns. ``deliver`` lets a command that waited for that piece (COPY
OPERATION ABORT, SPC-4 6.4) take its outcome without waiting for the workers' report.

``errand`` runs work nobody waits for (removing a dead token's ROD file, releasing staging
files) on the same workers. Work that arrives before there are workers is held until
``use_workers``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import Protocol

from odxtarget.storage.work import StorageWork
from odxtarget.storage.copy_work import SettledWork

log = logging.getLogger(__name__)

Completion = Callable[[object, BaseException | None], None]
#: A background copy: yields storage work, receives each piece's result (or has its error
#: thrown in), returns when the copy is over.
CopySteps = Generator[StorageWork, object, None]


class WorkSubmitter(Protocol):
    """Runs storage work off the core's thread; ``completion(value, error)`` runs back on it
    (``transport.workers.StorageWorkers`` is one)."""

    def submit(self, work: StorageWork, completion: Completion) -> None: ...


@dataclass(eq=False, slots=True)
class _Copy:
    key: Hashable
    steps: CopySteps
    in_flight: SettledWork | None = None


class BackgroundCopies:
    """See the module docstring."""

    def __init__(self, limit: int):
        self.limit = limit
        self._workers: WorkSubmitter | None = None
        self._running: dict[Hashable, _Copy] = {}
        self._waiting: OrderedDict[Hashable, _Copy] = OrderedDict()
        self._held: list[tuple[StorageWork, Completion]] = []
        self._closed = False

    def use_workers(self, workers: WorkSubmitter) -> None:
        """Run background work on ``workers`` from now on (the daemon, once its loop runs)."""
        self._workers = workers
        held, self._held = self._held, []
        for work, completion in held:
            workers.submit(work, completion)
        self._start_waiting()

    @property
    def busy(self) -> bool:
        """Copies are running or waiting."""
        return bool(self._running or self._waiting)

    def start(self, key: Hashable, steps: CopySteps) -> None:
        """Run ``steps`` as soon as fewer than ``limit`` copies run."""
        self._waiting[key] = _Copy(key, steps)
        self._start_waiting()

    def stop(self, key: Hashable) -> SettledWork | None:
        """The copy ``key`` was told to stop: a waiting one runs to its end now; returns the
        piece of work a running one still has on a worker, if any."""
        copy = self._waiting.pop(key, None)
        if copy is not None:
            self._running[key] = copy
            self._advance(copy, None, None)
            return None
        copy = self._running.get(key)
        return copy.in_flight if copy is not None else None

    def deliver(self, settled: SettledWork) -> None:
        """``settled`` has finished on its worker: resume its copy with the outcome now, rather
        than when the workers report it (that report is then ignored)."""
        if not settled.finished:
            return
        for copy in self._running.values():
            if copy.in_flight is settled:
                copy.in_flight = None
                self._advance(copy, settled.value, settled.error)
                return

    def errand(self, work: StorageWork) -> None:
        """Run ``work`` on the workers; nobody waits for it, a failure is logged."""
        if self._closed:
            return
        self._submit(work, _log_failure)

    def close(self) -> None:
        """Daemon shutdown (every copy was told to stop): finish what can finish now; a copy
        whose step is still on a worker ends when it returns, starting nothing more."""
        for key in list(self._waiting):
            self.stop(key)
        for copy in list(self._running.values()):
            if copy.in_flight is not None:
                self.deliver(copy.in_flight)
        self._closed = True

    # -- internals ---------------------------------------------------------------------------

    def _start_waiting(self) -> None:
        while self._workers is not None and self._waiting and len(self._running) < self.limit:
            key, copy = self._waiting.popitem(last=False)
            self._running[key] = copy
            self._advance(copy, None, None)

    def _advance(self, copy: _Copy, value: object, error: BaseException | None) -> None:
        try:
            work = copy.steps.throw(error) if error is not None else copy.steps.send(value)
        except StopIteration:
            self._finished(copy)
        except Exception:  # noqa: BLE001 - one copy's bug must not stop the others
            log.exception("background copy failed")
            self._finished(copy)
        else:
            if self._closed:            # the daemon is stopping: nothing more is started
                copy.steps.close()
                self._finished(copy)
                return
            settled = copy.in_flight = SettledWork(work)
            self._submit(settled, lambda result, failure: self._reported(copy, settled, result, failure))

    def _reported(self, copy: _Copy, settled: SettledWork, value: object, error: BaseException | None) -> None:
        if copy.in_flight is not settled:
            return                      # delivered already
        copy.in_flight = None
        self._advance(copy, value, error)

    def _finished(self, copy: _Copy) -> None:
        if self._running.get(copy.key) is copy:
            del self._running[copy.key]
        self._start_waiting()

    def _submit(self, work: StorageWork, completion: Completion) -> None:
        if self._workers is None:
            self._held.append((work, completion))
        else:
            self._workers.submit(work, completion)


def _log_failure(value: object, error: BaseException | None) -> None:
    if error is not None:
        log.warning("copy manager storage work failed: %s", error)
