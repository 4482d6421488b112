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
from odxtarget.scsi.types import ScsiResult


def reserve(lu, command, target) -> ScsiResult:
    persistent = lu.persistent_reservations.blocks_spc2_reserve(command.nexus)
    if persistent is not None:
        if persistent:
            raise ReservationConflict("RESERVE while persistent reservation registrations exist")
        return ScsiResult()
    holder = lu.reservation_holder
    if holder is not None and holder != command.nexus:
        raise ReservationConflict()
    lu.reservation_holder = command.nexus
    return ScsiResult()


def release(lu, command, target) -> ScsiResult:
    """Releasing a reservation held by someone else, or none at all, is GOOD and does nothing."""
    persistent = lu.persistent_reservations.blocks_spc2_release(command.nexus)
    if persistent is not None:
        if persistent:
            raise ReservationConflict("RELEASE while a persistent reservation is held by another I_T nexus")
        return ScsiResult()
    if lu.reservation_holder == command.nexus:
        lu.reservation_holder = None
    return ScsiResult()
