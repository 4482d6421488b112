"""SPC-2 RESERVE(6/10) and RELEASE(6/10): whole-LU reservations held by one I_T nexus (SPC-2 7.21,
7.22; kept by SPC-4 for compatibility).

Only logical-unit reservations: third-party and extent reservations are refused by the usage
masks. While another nexus holds the reservation, the dispatcher answers RESERVATION
CONFLICT for every command without ``ALLOWED_WHEN_RESERVED`` (SPC-2 5.5.1), PERSISTENT
RESERVE IN/OUT included.

With persistent reservation registrations present, SPC-4 5.13.3 (compatible reservation
handling, CRH=1 in REPORT CAPABILITIES) applies instead: a holder of the persistent
reservation (or a registrant of a registrants-only/all-registrants one) gets GOOD and nothing
changes; everyone else gets RESERVATION CONFLICT. The PR state decides
(``PersistentReservations.blocks_spc2_reserve/release``).
"""

from __future__ import annotations

from odxtarget.scsi.errors import ReservationConflict
from odxtarget.scsi.execution import Steps
from odxtarget.scsi.handlers.persistent_reservations import change_shared_reservations
from odxtarget.scsi.pr_state import Outcome
from odxtarget.scsi.shared_reservations import ReservationChange, ReservationState
from odxtarget.scsi.types import ItNexus, ScsiResult


def reserve(lu, command, target) -> ScsiResult | Steps:
    nexus = command.nexus
    return _change(lu, command, target, lambda state: _reserve(state, nexus))


def release(lu, command, target) -> ScsiResult | Steps:
    """Releasing a reservation held by someone else, or none at all, is GOOD and does nothing."""
    nexus = command.nexus
    return _change(lu, command, target, lambda state: _release(state, nexus))


def _change(lu, command, target, change: ReservationChange) -> ScsiResult | Steps:
    if lu.shared_reservations is not None:
        return change_shared_reservations(lu, command, target, change)
    state = ReservationState(lu.persistent_reservations, lu.reservation_holder)
    change(state)
    lu.reservation_holder = state.spc2_holder
    return ScsiResult()


def _reserve(state: ReservationState, nexus: ItNexus) -> Outcome:
    persistent = state.persistent.blocks_spc2_reserve(nexus)
    if persistent is not None:
        if persistent:
            raise ReservationConflict("RESERVE while persistent reservation registrations exist")
        return Outcome()
    holder = state.spc2_holder
    if holder is not None and holder != nexus:
        raise ReservationConflict()
    state.spc2_holder = nexus
    return Outcome()


def _release(state: ReservationState, nexus: ItNexus) -> Outcome:
    persistent = state.persistent.blocks_spc2_release(nexus)
    if persistent is not None:
        if persistent:
            raise ReservationConflict("RELEASE while a persistent reservation is held by another I_T nexus")
        return Outcome()
    if state.spc2_holder == nexus:
        state.spc2_holder = None
    return Outcome()
