"""Commands that wait for storage, without the core ever blocking (docs/execution.md).

Theory of operation
-------------------
The core never waits for a disk. A handler either returns its ``ScsiResult`` at once, or is a
generator that yields ``StorageWork`` -- one blocking storage call each -- and finally returns
its ``ScsiResult``. ``dispatch.execute`` turns such a generator into a ``Pending`` command:

    outcome = target.execute(command)        # ScsiResult, or Pending
    while isinstance(outcome, Pending) and outcome.result is None:
        value = run_somewhere(outcome.work)  # the front end: a worker thread, off its loop
        outcome.resume(value)                # or outcome.fail(exc); back on the core's thread
    result = outcome.result

Everything but ``StorageWork.run`` happens on the core's one thread (the front end's event
loop), so core state needs no locks; ``run`` touches only the backend, whose implementations
are safe to call from several threads at once. A storage error is thrown into the generator
where it yielded, so the handler's own error mapping (``LogicalUnit.read_error`` and
``write_error``, docs/errors.md) applies as before.

Task attributes (SAM-5 8.6): one task set per logical unit for all I_T nexuses (the Control
mode page's TST 000b). ``TaskSet`` admits SIMPLE tasks while no ORDERED task runs or waits
ahead of them, an ORDERED task once every older task has completed, and HEAD OF QUEUE tasks at
once. A task that cannot start yet is a ``Pending`` whose ``queued`` is true: the front end
holds it until ``TaskSet.take_ready`` hands it back, and then calls ``start``; the gates
(unit attention, reservations, write protection) run only then, at execution.

Aborting (SAM-5 7.2): a queued task is dropped before it ran; a task between two pieces of
work is closed (its generator sees ``GeneratorExit`` and cleans up); a task whose work is on a
worker finishes that piece first. ``abort`` says which happened.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from odxtarget.scsi.types import ScsiCommand, ScsiResult, TaskAttribute
from odxtarget.storage.work import StorageCall, StorageWork

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit


#: What a handler that waits for storage is: it yields work, receives each piece's result
#: (or has its ``OSError`` thrown in) and returns its ScsiResult.
Steps = Generator[StorageWork, object, ScsiResult]


class AbortOutcome(enum.Enum):
    NEVER_STARTED = "never started"          # it was still queued in the task set
    STOPPED = "stopped between steps"        # some steps ran, the rest never will
    FINISHING = "finishing its running step" # its result comes when the worker returns
    ALREADY_DONE = "already completed"


class Pending:
    """A command in progress: ``work`` to run next, or ``result`` once it has finished.

    Made by ``dispatch.execute``; a front end only reads ``work``/``result``/``queued`` and
    calls ``start``, ``resume``, ``fail`` and ``abort``.
    """

    __slots__ = ("lu", "command", "attribute", "work", "result", "queued", "aborted", "received", "_steps",
                 "_start", "_on_error", "_running")

    def __init__(self, lu: "LogicalUnit", command: ScsiCommand, start: Callable[["Pending"], None],
                 received: float):
        self.lu = lu
        self.command = command
        self.attribute = command.task_attribute
        self.work: StorageWork | None = None
        self.result: ScsiResult | None = None
        self.queued = True
        self.aborted = False
        #: When the LU received the command (``IoStats.clock``), for its latency.
        self.received = received
        self._steps: Steps | None = None
        self._start = start
        self._on_error: Callable[[BaseException], ScsiResult] | None = None
        self._running = False

    @classmethod
    def running(cls, lu: "LogicalUnit", command: ScsiCommand, received: float) -> "Pending":
        """A command that started at once and now waits for storage."""
        pending = cls(lu, command, _never_queued, received)
        pending.queued = False
        pending._running = True
        lu.task_set.started(pending)
        return pending

    # -- driven by the dispatcher -------------------------------------------------------------

    def run_steps(self, steps: Steps, on_error: Callable[[BaseException], ScsiResult]) -> None:
        """Take over a handler's generator and run it up to its first piece of work."""
        self._steps = steps
        self._on_error = on_error
        self._advance(None, None)

    def finish(self, result: ScsiResult) -> None:
        """The command ended without (more) storage work."""
        self.work = None
        self.result = result
        self._steps = None
        self.lu.io_stats.record(self.command.cdb, result, self.received)
        if self._running:
            self._running = False
            self.lu.task_set.finished(self)

    # -- driven by the front end --------------------------------------------------------------

    def start(self) -> None:
        """Run a queued command that ``TaskSet.take_ready`` released."""
        if not self.queued:
            raise RuntimeError("start() of a command that is not queued")
        self.queued = False
        self.lu.task_set.started(self)
        self._running = True
        self._start(self)

    def resume(self, value: object) -> None:
        """The last ``work`` returned ``value``."""
        self._advance(value, None)

    def fail(self, error: BaseException) -> None:
        """The last ``work`` raised ``error``."""
        self._advance(None, error)

    def abort(self) -> AbortOutcome:
        """Abort the command (ABORT TASK, ABORT TASK SET, LU reset, PREEMPT AND ABORT)."""
        if self.result is not None:
            return AbortOutcome.ALREADY_DONE
        self.aborted = True
        if self.queued:
            self.lu.task_set.forget(self)
            self.queued = False
            return AbortOutcome.NEVER_STARTED
        if self.work is not None:
            return AbortOutcome.FINISHING      # resume/fail then closes it
        self._close()
        return AbortOutcome.STOPPED

    # -- internals -----------------------------------------------------------------------------

    def _advance(self, value: object, error: BaseException | None) -> None:
        steps = self._steps
        if steps is None:
            raise RuntimeError("no step is running")
        if self.aborted and self.work is not None:
            self.work = None
            self._close()
            return
        try:
            work = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            self.finish(done.value)
        except BaseException as exc:  # noqa: BLE001 - the dispatcher's mapping turns it into sense
            self.finish(self._on_error(exc))
        else:
            self.work = work

    def _close(self) -> None:
        steps, self._steps = self._steps, None
        if steps is not None:
            steps.close()
        if self._running:
            self._running = False
            self.lu.task_set.finished(self)


def _never_queued(pending: Pending) -> None:  # pragma: no cover - start() refuses first
    raise RuntimeError("a running command cannot be started again")


class TaskSet:
    """SAM-5 8.6 task attributes for the commands of one logical unit that wait for storage.

    Only commands that became ``Pending`` count as running: a command that ends at once cannot
    overlap any other. Pure bookkeeping; the front end holds the queued ``Pending`` objects.
    """

    __slots__ = ("running", "ordered_running", "_queue", "_ready")

    def __init__(self) -> None:
        self.running = 0
        self.ordered_running = 0
        self._queue: deque[Pending] = deque()
        self._ready: list[Pending] = []

    def may_start(self, attribute: int) -> bool:
        """Could a new task with ``attribute`` start now?"""
        if attribute == TaskAttribute.HEAD_OF_QUEUE:
            return True
        if self._queue or self._ready or self.ordered_running:
            return False
        return attribute != TaskAttribute.ORDERED or self.running == 0

    def enqueue(self, pending: Pending) -> None:
        self._queue.append(pending)

    def started(self, pending: Pending) -> None:
        self.running += 1
        if pending.attribute == TaskAttribute.ORDERED:
            self.ordered_running += 1

    def finished(self, pending: Pending) -> None:
        self.running -= 1
        if pending.attribute == TaskAttribute.ORDERED:
            self.ordered_running -= 1
        self._release()

    def forget(self, pending: Pending) -> None:
        """A queued task was aborted."""
        try:
            self._queue.remove(pending)
        except ValueError:
            pass
        self._release()

    def take_ready(self) -> list[Pending]:
        """Queued tasks that may start now, oldest first; the caller ``start``s each."""
        ready, self._ready = self._ready, []
        return ready

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _release(self) -> None:
        queue, ready = self._queue, self._ready
        while queue:
            if self.ordered_running or any(task.attribute == TaskAttribute.ORDERED for task in ready):
                return              # nothing starts beside an ORDERED task
            head = queue[0]
            if head.attribute == TaskAttribute.ORDERED and (self.running or ready):
                return              # it waits for every older task
            ready.append(queue.popleft())


def complete_inline(outcome: "ScsiResult | Pending") -> ScsiResult | None:
    """Run a command's storage work on the calling thread until it ends; its result, or None
    when it was aborted. For tests and offline tools only: a front end must never call it,
    since it waits for the disk."""
    if not isinstance(outcome, Pending):
        return outcome
    if outcome.queued:
        raise RuntimeError("the command is queued behind older tasks; start it first")
    while outcome.result is None and outcome.work is not None:
        try:
            value = outcome.work.run()
        except Exception as exc:  # noqa: BLE001 - handed to the command, which maps it
            outcome.fail(exc)
        else:
            outcome.resume(value)
    return outcome.result


class InlineRunner:
    """Runs each ``Pending`` to its end on the calling thread, at once (``complete_inline``).

    For tests of front ends and for offline tools only: it waits for the disk, which a front
    end serving initiators must never do (it uses ``odxtarget.transport.workers``).
    """

    def run(self, pending: Pending, done: Callable[[ScsiResult | None], None]) -> None:
        done(complete_inline(pending))

    def run_work(self, work: StorageWork, done: Callable[[BaseException | None], None]) -> None:
        try:
            work.run()
        except Exception as error:   # noqa: BLE001 - handed to the caller, as a worker would
            done(error)
        else:
            done(None)

    def abort(self, pending: Pending) -> AbortOutcome:
        return pending.abort()
