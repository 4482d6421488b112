"""Reservations shared by every gateway that serves a logical unit (docs/cluster.md).

Theory of operation
-------------------
When several daemons ("gateways") serve one logical unit, its reservation state must be one
state, not one per daemon: a registration made through gateway A must fence a write that
arrives through gateway B. ``LogicalUnit.shared_reservations`` is then set to a
``SharedReservations`` store (``odxtarget.cluster``: a RADOS object), and every change to
persistent reservations (SPC-4 5.13) or to the SPC-2 reservation (SPC-2 5.5.1) is made by the
store instead of in memory:

1. The handler decodes the command into a ``ReservationChange``: a pure function of a
   ``ReservationState`` that either raises a ``ScsiError`` or changes the state and returns an
   ``Outcome``.
2. It yields ``store.change(change)``, storage work a front end runs off its event loop. The
   store applies the change to the newest shared state atomically (retrying on a concurrent
   change), stores it, and has every other gateway adopt it, deliver the unit attentions owed
   to its own I_T nexuses and abort their tasks for PREEMPT AND ABORT, all before the work
   completes. Its result is an ``Adopted``.
3. Back on the event loop, the handler adopts the new state locally (``adopt_document``) and
   delivers the outcome to this gateway's nexuses.

The in-memory state (``persistent_reservations``, ``reservation_holder``) stays what the
dispatcher checks on every command; on every gateway it is replaced whenever the shared state
changes, before the command that changed it completes. Each stored state has a version that
only grows, so a late or repeated announcement never replaces newer state.

This module does no I/O: it is the contract (``SharedReservations``) and the document format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.pr_state import Outcome, PersistentReservations, nexus_from_document, nexus_to_document
from odxtarget.scsi.types import ItNexus
from odxtarget.storage.work import StorageWork

#: The version of ``ReservationState.to_document``'s format.
SHARED_FORMAT_VERSION = 1


@dataclass(slots=True)
class ReservationState:
    """Everything about reservations that all gateways of a logical unit share."""

    persistent: PersistentReservations
    #: The SPC-2 reservation holder (RESERVE(6/10)), None when there is none.
    spc2_holder: ItNexus | None = None

    @classmethod
    def empty(cls) -> "ReservationState":
        return cls(PersistentReservations(always_persistent=True))

    @classmethod
    def from_document(cls, document: dict | None) -> "ReservationState":
        """The state a stored document holds (None: nothing stored yet); ValueError when the
        document is not one this version wrote."""
        state = cls.empty()
        if document is None:
            return state
        if document.get("version") != SHARED_FORMAT_VERSION:
            raise ValueError(f"shared reservation state of format {document.get('version')!r}")
        try:
            state.persistent.load_document(document["persistent"])
            holder = document.get("spc2_holder")
            state.spc2_holder = None if holder is None else nexus_from_document(holder)
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed shared reservation state ({error})") from None
        return state

    def to_document(self) -> dict:
        holder = self.spc2_holder
        return {"version": SHARED_FORMAT_VERSION, "persistent": self.persistent.to_document(),
                "spc2_holder": None if holder is None else nexus_to_document(holder)}


#: A reservation command's effect: raises ``ScsiError`` having changed nothing, or changes the
#: state and returns what the other I_T nexuses are owed.
ReservationChange = Callable[[ReservationState], Outcome]


@dataclass(frozen=True, slots=True)
class Adopted:
    """The result of a shared change: the new stored state, its version, and the outcome."""

    document: dict
    version: int
    outcome: Outcome


class SharedReservations(Protocol):
    """Where a logical unit's reservation state lives when several gateways serve it."""

    def change(self, change: ReservationChange) -> StorageWork:
        """Storage work that applies ``change`` to the shared state and returns an ``Adopted``
        once every other gateway has adopted it; it raises the change's ``ScsiError``, or
        ``OSError`` when the shared state cannot be reached."""
        ...

    def announce_reset(self, condition: Ascq) -> StorageWork:
        """Storage work that has every other gateway reset the logical unit as this one just
        did (SAM-5 6.3.3: a LOGICAL UNIT RESET reaches every I_T nexus): unit attention
        ``condition`` for their nexuses, their tasks aborted, the SPC-2 reservation released."""
        ...
