"""Copy operations by list identifier, per I_T nexus and logical unit (SPC-4 5.16.4.2, 6.18).

A ``CopyOperation`` is what RRTI and RECEIVE COPY STATUS report: its status, transfer
count, sense data and (after POPULATE TOKEN) the token. Identifiers are 32-bit; an LID1 id
FDh is the same operation as 000000FDh. Rules kept here (SPC-4 5.16.4.2; docs/odx.md,
"Results, list identifiers and the Windows rules"):

* a new command reusing an identifier that is still active answers OPERATION IN PROGRESS;
  reusing a completed one replaces the old results;
* completed results are dropped once delivered, after ``retention`` seconds, on I_T nexus
  loss and on LU reset, and the oldest completed ones when a nexus holds too many;
* COPY OPERATION ABORT does not drop results: they say status 60h;
* on a shared nexus (LIO: one synthetic nexus for every initiator of an LU) a POPULATE TOKEN
  whose token was not yet retrieved also keeps its identifier in use. Otherwise a second
  host reusing the id would replace the token, and the first host's RECEIVE ROD TOKEN
  INFORMATION would return the second host's token: a copy of the wrong data. The second
  host gets OPERATION IN PROGRESS instead and falls back to reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from odxtarget.copy.constants import CopyOutAction, CopyStatus, Lid1Status, SAM_GOOD

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.copy.job import CopyJob

_IN_PROGRESS = (CopyStatus.IN_PROGRESS_FOREGROUND, CopyStatus.IN_PROGRESS_BACKGROUND)


@dataclass(eq=False)
class CopyOperation:
    list_id: int
    service_action: int
    lu: object
    requested: int = 0                       # blocks (LID4) or segments (LID1)
    status: int = CopyStatus.IN_PROGRESS_FOREGROUND
    transfer_count: int = 0                  # blocks for PT/WUT, bytes for EXTENDED COPY
    segments_processed: int = 0
    completion_status: int = SAM_GOOD
    sense: bytes = b""
    token: bytes | None = None
    job: "CopyJob | None" = None             # while it runs: RRTI's transfer count and delay
    completed_at: float | None = None
    hold: bool = True                        # LID1 LIST ID USAGE 00b keeps results
    started_at: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in _IN_PROGRESS

    def complete(self, status: int, now: float, sense: bytes = b"", completion_status: int = SAM_GOOD) -> None:
        self.status = status
        self.sense = sense
        self.completion_status = completion_status
        self.completed_at = now
        self.job = None

    @property
    def lid1_status(self) -> int:
        if self.active:
            return Lid1Status.IN_PROGRESS
        return Lid1Status.COMPLETED if self.status == CopyStatus.COMPLETED else Lid1Status.FAILED


class ListRegistry:
    def __init__(self, retention: float, max_per_nexus: int):
        self.retention = retention
        self.max_per_nexus = max_per_nexus
        self._operations: dict[tuple, CopyOperation] = {}

    @staticmethod
    def _key(nexus, lu, list_id: int) -> tuple:
        return (nexus, id(lu), list_id)

    def begin(self, nexus, lu, list_id: int, service_action: int, now: float) -> CopyOperation:
        """Start an operation, or raise OPERATION IN PROGRESS for an active duplicate id."""
        from odxtarget.copy.errors import OperationInProgress

        key = self._key(nexus, lu, list_id)
        existing = self._operations.get(key)
        if existing is not None:
            if existing.active:
                raise OperationInProgress(list_id)
            if nexus.shared and self._token_pending(existing) and not self._expired(existing, now):
                raise OperationInProgress(
                    list_id, "holds a ROD token not yet retrieved, and this nexus is shared by all "
                             "initiators of the LU (LIO), so the id cannot be reused until it is")
        operation = CopyOperation(list_id, service_action, lu, started_at=now)
        self._operations.pop(key, None)
        self._operations[key] = operation
        self._bound(nexus, lu)
        return operation

    def _expired(self, operation: CopyOperation, now: float) -> bool:
        return operation.completed_at is not None and now - operation.completed_at >= self.retention

    @staticmethod
    def _token_pending(operation: CopyOperation) -> bool:
        return operation.service_action == CopyOutAction.POPULATE_TOKEN and operation.token is not None

    def _bound(self, nexus, lu) -> None:
        mine = [(key, operation) for key, operation in self._operations.items()
                if key[0] == nexus and key[1] == id(lu)]
        excess = len(mine) - self.max_per_nexus
        for key, operation in mine:  # insertion order: oldest first
            if excess <= 0:
                break
            if not operation.active:
                del self._operations[key]
                excess -= 1

    def get(self, nexus, lu, list_id: int) -> CopyOperation | None:
        return self._operations.get(self._key(nexus, lu, list_id))

    def delivered(self, nexus, lu, operation: CopyOperation) -> None:
        """Results of a completed operation were returned: they may go (SPC-4 6.18.x)."""
        if not operation.active:
            key = self._key(nexus, lu, operation.list_id)
            if self._operations.get(key) is operation:
                del self._operations[key]

    def expire(self, now: float) -> None:
        stale = [key for key, operation in self._operations.items() if self._expired(operation, now)]
        for key in stale:
            del self._operations[key]

    def nexus_lost(self, nexus) -> list[CopyOperation]:
        """Drop a lost nexus' results; returns its still-running operations (to abort)."""
        return self._drop(lambda key: key[0] == nexus)

    def lu_reset(self, lu) -> list[CopyOperation]:
        return self._drop(lambda key: key[1] == id(lu))

    def _drop(self, matches) -> list[CopyOperation]:
        running = []
        for key in [key for key in self._operations if matches(key)]:
            operation = self._operations.pop(key)
            if operation.active:
                running.append(operation)
        return running
