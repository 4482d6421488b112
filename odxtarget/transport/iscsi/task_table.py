"""The tasks one session holds, and how task management aborts them (RFC 7143 4.2.3, 11.5; SAM-5 7).

Theory of operation
-------------------
A task of the native front end is in one of two places:

* ``waiting``: a ``ScsiTask`` still collecting its Data-Out or waiting for its CmdSN turn;
  the SCSI core has not seen it. Aborting it drops it at once.
* ``running``: a ``RunningCommand`` the core is executing (``execution.Pending``): its
  storage work runs on a worker or it is queued in the logical unit's task set. Aborting it
  goes through the front end's ``CommandRunner``: a queued command never runs, a running
  one finishes the piece of work a worker is doing and then stops.

RFC 7143 4.2.3.3: an aborted task gets no SCSI Response. A task management function answers
only once every task it aborted has stopped, so "FUNCTION COMPLETE" is never sent while an
aborted write is still reaching the disk: each abort registers the tasks still finishing with
an ``AbortBarrier``, and the response goes out when the barrier opens. Logout waits the same
way. ``TaskTable.abort`` is what task management (``tmf``), PREEMPT AND ABORT (``session``)
and the connection itself call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from odxtarget.scsi.execution import AbortOutcome, Pending
from odxtarget.scsi.types import ScsiResult
from odxtarget.storage.work import StorageWork
from odxtarget.transport.iscsi.task import ScsiTask


class CommandRunner(Protocol):
    """Runs the core's ``Pending`` commands (``odxtarget.transport.workers.CommandDriver``)."""

    def run(self, pending: Pending, done: Callable[[ScsiResult | None], None]) -> None: ...

    def abort(self, pending: Pending) -> AbortOutcome: ...

    def run_work(self, work: StorageWork, done: Callable[[BaseException | None], None]) -> None:
        """Run storage work that belongs to no command (a TMF's); ``done(error)`` on the loop."""
        ...


class WaitingTaskOwner(Protocol):
    """What drops a waiting task: the connection, which holds its R2Ts and its CmdSN slot."""

    def drop_waiting(self, task: ScsiTask) -> None: ...


@dataclass(eq=False, slots=True)
class RunningCommand:
    """A command the core is executing; what its response needs once it ends."""

    initiator_task_tag: int
    lun_field: bytes
    lun: int
    read: bool
    expected_data_transfer_length: int
    r2ts_sent: int
    pending: Pending
    in_window: bool = False       # numbered: it holds a place in the CmdSN window until answered
    aborted: bool = False
    barriers: list["AbortBarrier"] = field(default_factory=list)


class AbortBarrier:
    """Opens (calls ``then``) once every aborted task registered with it has stopped."""

    __slots__ = ("_count", "_then", "_armed")

    def __init__(self) -> None:
        self._count = 0
        self._then: Callable[[], None] | None = None
        self._armed = False

    def hold(self) -> None:
        self._count += 1

    def release(self) -> None:
        self._count -= 1
        self._fire()

    def when_open(self, then: Callable[[], None]) -> None:
        """Run ``then`` when the last held task stops (at once if none is held)."""
        self._then = then
        self._armed = True
        self._fire()

    @property
    def open(self) -> bool:
        return self._count == 0

    def _fire(self) -> None:
        if self._armed and self._count == 0 and self._then is not None:
            then, self._then = self._then, None
            then()


class TaskTable:
    """The waiting and running tasks of one connection, by Initiator Task Tag."""

    __slots__ = ("waiting", "running", "_owner", "_runner")

    def __init__(self, owner: WaitingTaskOwner, runner: CommandRunner):
        self.waiting: dict[int, ScsiTask] = {}
        self.running: dict[int, RunningCommand] = {}
        self._owner = owner
        self._runner = runner

    def __len__(self) -> int:
        return len(self.waiting) + len(self.running)

    def __bool__(self) -> bool:
        return bool(self.waiting or self.running)

    def in_use(self, itt: int) -> bool:
        return itt in self.waiting or itt in self.running

    def find(self, itt: int) -> ScsiTask | RunningCommand | None:
        return self.waiting.get(itt) or self.running.get(itt)

    def run_work(self, work: StorageWork, done: Callable[[BaseException | None], None]) -> None:
        """Run ``work`` on the runner's workers (a TMF's share of shared state)."""
        self._runner.run_work(work, done)

    def start(self, command: RunningCommand, done: Callable[[RunningCommand, ScsiResult | None], None]) -> None:
        """Hand ``command`` to the runner; ``done(command, result)`` when it ends."""
        self.running[command.initiator_task_tag] = command
        self._runner.run(command.pending, lambda result: done(command, result))

    def ended(self, command: RunningCommand) -> None:
        """``command`` stopped: forget it and open the barriers waiting for it."""
        if self.running.get(command.initiator_task_tag) is command:
            del self.running[command.initiator_task_tag]
        barriers, command.barriers = command.barriers, []
        for barrier in barriers:
            barrier.release()

    def abort(self, predicate: Callable[[ScsiTask | RunningCommand], bool],
              barrier: AbortBarrier | None = None) -> int:
        """Abort every task ``predicate`` selects; those still finishing hold ``barrier``.
        Returns how many were aborted."""
        waiting = [task for task in self.waiting.values() if predicate(task)]
        for task in waiting:
            self._owner.drop_waiting(task)
        running = [command for command in self.running.values() if predicate(command) and not command.aborted]
        for command in running:
            command.aborted = True
            if barrier is not None:
                barrier.hold()
                command.barriers.append(barrier)
            self._runner.abort(command.pending)     # a queued one ends (done) at once
        return len(waiting) + len(running)

    def abort_all(self) -> None:
        """The connection is gone: stop everything, nobody waits for an answer."""
        self.abort(lambda task: True)
