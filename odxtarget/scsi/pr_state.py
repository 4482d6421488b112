"""Persistent reservations of one logical unit: registrations, the reservation, the generation,
and the on-disk copy that makes them persist through power loss (SPC-4 5.13).

Theory of operation
-------------------
``PersistentReservations`` is the state machine; the PERSISTENT RESERVE IN/OUT handlers
(``handlers.persistent_reservations``) only decode CDBs and parameter lists and encode the
answers. Each PERSISTENT RESERVE OUT service action is one method that either raises a
``ScsiError`` (RESERVATION CONFLICT, INVALID FIELD ...) having changed nothing, or changes the
state and returns an ``Outcome``: the unit attentions other I_T nexuses are owed and, for
PREEMPT AND ABORT, the nexuses whose queued tasks must be aborted.

Registrations are per I_T nexus (SPC-4 5.13.7), so an initiator with two sessions (two
ISIDs, e.g. two MPIO paths) registers twice, usually with the same key. All registrants
and holders survive LOGICAL UNIT RESET, I_T nexus loss and logout (SPC-4 5.13.1); only
PERSISTENT RESERVE OUT changes them.

The access check on the command path is ``Reservation.conflicts``: the dispatcher calls it
only while a reservation exists (``LogicalUnit.pr_reservation`` is not None), so an LU
without a reservation pays one attribute test per command.

APTPL (SPC-4 5.13.5): when the most recent REGISTER-family command set APTPL, every change
is written to the ``ReservationStore`` before the command completes (the daemon's is a file
replaced atomically: ``odxtarget.storage.reservation_file``), and read back when the daemon
starts. APTPL=0 removes the saved state, so it is not resurrected after a restart.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

from odxtarget.scsi.command_table import CommandFlags
from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.errors import InternalTargetFailure, InvalidFieldInParameterList, ReservationConflict, ScsiError
from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ItNexus

log = logging.getLogger(__name__)

#: Registrations one LU keeps; more are refused with INSUFFICIENT REGISTRATION RESOURCES.
MAX_REGISTRATIONS = 1024
#: The only scope SPC-4 still defines (5.13.2): the whole logical unit.
LU_SCOPE = 0
#: Byte offset of the SERVICE ACTION RESERVATION KEY in the PERSISTENT RESERVE OUT parameter
#: list (SPC-4 6.16.3), for field pointers.
SERVICE_ACTION_KEY_OFFSET = 8
#: The version of ``to_document``'s format (``odxtarget.storage.reservation_file`` checks it).
STORE_FORMAT_VERSION = 1

_PR_READ = int(CommandFlags.PR_READ)


class PrType(enum.IntEnum):
    """Persistent reservation types (SPC-4 6.16.3 table)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8


#: Types through which other I_T nexuses may still read (SPC-4 5.13.1 table).
WRITE_EXCLUSIVE_TYPES = frozenset({PrType.WRITE_EXCLUSIVE, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                                   PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS})
#: Types whose registrants get the holder's access (SPC-4 5.13.9: "registrants only" and "all registrants").
SHARED_TYPES = frozenset({PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
                          PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS})
#: Types where every registrant is a reservation holder (SPC-4 5.13.10).
ALL_REGISTRANTS_TYPES = frozenset({PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS})
#: Types whose release is announced to the other registrants (SPC-4 5.13.11.2).
RELEASE_NOTIFIES_TYPES = SHARED_TYPES


class InvalidReleaseOfPersistentReservation(ScsiError):
    """RELEASE by the holder with a type or scope other than the reservation's (SPC-4 5.13.11.2)."""

    def __init__(self):
        condition = Ascq.INVALID_RELEASE_OF_PERSISTENT_RESERVATION
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, condition.asc, condition.ascq),
                         "invalid release of persistent reservation")


class InsufficientRegistrationResources(ScsiError):
    """No room for one more registration (SPC-4 5.13.7)."""

    def __init__(self):
        condition = Ascq.INSUFFICIENT_REGISTRATION_RESOURCES
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, condition.asc, condition.ascq),
                         "insufficient registration resources")


class Reservation:
    """The persistent reservation of an LU: its type and holder, and the access rule."""

    __slots__ = ("type", "holder", "_registrations", "_reads_allowed", "_registrants_share")

    def __init__(self, pr_type: PrType, holder: ItNexus | None, registrations: dict[ItNexus, int]):
        self.type = PrType(pr_type)
        #: None for the all-registrants types, where every registrant is a holder.
        self.holder = None if self.type in ALL_REGISTRANTS_TYPES else holder
        self._registrations = registrations
        self._reads_allowed = self.type in WRITE_EXCLUSIVE_TYPES
        self._registrants_share = self.type in SHARED_TYPES

    @property
    def all_registrants(self) -> bool:
        return self.type in ALL_REGISTRANTS_TYPES

    def is_holder(self, nexus: ItNexus) -> bool:
        if self.holder is None:
            return nexus in self._registrations
        return nexus == self.holder

    def conflicts(self, nexus: ItNexus, flag_bits: int) -> bool:
        """SPC-4 5.13.1 / SBC-4 4.17: is a command of this access class from ``nexus`` refused?
        (Commands flagged PR_ALLOWED are let through by the dispatcher before this.)"""
        if nexus == self.holder:
            return False
        if self._registrants_share and nexus in self._registrations:
            return False
        return not (self._reads_allowed and flag_bits & _PR_READ)


@dataclass(slots=True)
class Outcome:
    """What a PERSISTENT RESERVE OUT command owes to other I_T nexuses once it succeeded."""

    unit_attentions: list[tuple[ItNexus, Ascq]] = field(default_factory=list)
    #: PREEMPT AND ABORT: abort the tasks these nexuses have queued for the LU (SPC-4 5.13.11.5).
    aborted: frozenset[ItNexus] = frozenset()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    generation: int
    registrations: dict[ItNexus, int]
    reservation: tuple[PrType, ItNexus | None] | None
    aptpl: bool


class ReservationStore(Protocol):
    """Where APTPL state goes (the core does no I/O: ``odxtarget.storage.reservation_file``
    keeps it in a file). Each method raises OSError when the medium fails."""

    def load(self) -> dict | None:
        """The saved document, None when there is none; ValueError when it is unreadable."""

    def save(self, document: dict) -> None:
        """Replace the saved document atomically and durably."""

    def remove(self) -> None:
        """Forget the saved document (APTPL turned off)."""


class PersistentReservations:
    """Registrations, reservation, generation and APTPL state of one logical unit.

    Args:
        publish: called with the new ``Reservation`` (or None) whenever it changes; the LU
            keeps it as ``pr_reservation`` for the dispatcher's one-attribute fast path.
    """

    def __init__(self, publish: Callable[[Reservation | None], None] | None = None, *,
                 always_persistent: bool = False):
        self._publish = publish
        #: The state is kept outside the daemon whatever APTPL says (shared reservations,
        #: ``odxtarget.scsi.shared_reservations``), so APTPL can always be honoured.
        self.always_persistent = always_persistent
        self.generation = 0
        self.registrations: dict[ItNexus, int] = {}
        self.reservation: Reservation | None = None
        self.aptpl = False
        self.store: ReservationStore | None = None

    # -- queries ------------------------------------------------------------------------------

    @property
    def persist_capable(self) -> bool:
        """PTPL_C of REPORT CAPABILITIES: there is somewhere to persist to."""
        return self.store is not None or self.always_persistent

    def key_of(self, nexus: ItNexus) -> int | None:
        return self.registrations.get(nexus)

    def is_holder(self, nexus: ItNexus) -> bool:
        return self.reservation is not None and self.reservation.is_holder(nexus)

    def blocks_spc2_reserve(self, nexus: ItNexus) -> bool | None:
        """SPC-4 5.13.3 (CRH=1) for RESERVE(6/10): None when SPC-2 rules apply (no registrations),
        False when the command completes GOOD without effect (a holder, or a registrant of a
        registrants-only/all-registrants reservation), True for RESERVATION CONFLICT."""
        if not self.registrations:
            return None
        reservation = self.reservation
        if reservation is not None and (reservation.is_holder(nexus) or (
                reservation.type in SHARED_TYPES and nexus in self.registrations)):
            return False
        return True

    def blocks_spc2_release(self, nexus: ItNexus) -> bool | None:
        """SPC-4 5.13.3 (CRH=1) for RELEASE(6/10): as ``blocks_spc2_reserve``; with registrations
        but no reservation, RELEASE has nothing to release and completes GOOD."""
        if self.reservation is None:
            return None if not self.registrations else False
        return self.blocks_spc2_reserve(nexus)

    # -- PERSISTENT RESERVE OUT service actions (SPC-4 5.13.7 - 5.13.11) -----------------------

    def register(self, nexus: ItNexus, reservation_key: int, new_key: int, *, ignore_existing: bool,
                 aptpl: bool) -> Outcome:
        """REGISTER and REGISTER AND IGNORE EXISTING KEY: register, change the key, or
        (``new_key`` 0) unregister."""
        current = self.registrations.get(nexus)
        if current is None:
            if not ignore_existing and reservation_key != 0:
                raise ReservationConflict("REGISTER from an unregistered I_T nexus with a reservation key")
            if new_key == 0:
                return Outcome()  # SPC-4 5.13.7: nothing registered, nothing to do, GOOD
            self._check_aptpl(aptpl)
            if len(self.registrations) >= MAX_REGISTRATIONS:
                raise InsufficientRegistrationResources()
            snapshot = self._snapshot()
            self.registrations[nexus] = new_key
            self.aptpl = aptpl
            self.generation += 1
            self._persist(snapshot)
            return Outcome()
        if not ignore_existing and reservation_key != current:
            raise ReservationConflict("REGISTER with a reservation key that is not the registered one")
        snapshot = self._snapshot()
        if new_key == 0:
            outcome = self._unregister(nexus)
        else:
            self._check_aptpl(aptpl)
            self.registrations[nexus] = new_key
            self.aptpl = aptpl
            outcome = Outcome()
        self.generation += 1
        self._persist(snapshot)
        return outcome

    def reserve(self, nexus: ItNexus, reservation_key: int, pr_type: PrType) -> Outcome:
        """RESERVE (SPC-4 5.13.9): the generation does not change."""
        self._check_key(nexus, reservation_key)
        reservation = self.reservation
        if reservation is not None:
            if reservation.is_holder(nexus) and reservation.type == pr_type:
                return Outcome()
            raise ReservationConflict("another persistent reservation is held")
        snapshot = self._snapshot()
        self._set_reservation(Reservation(pr_type, nexus, self.registrations))
        self._persist(snapshot)
        return Outcome()

    def release(self, nexus: ItNexus, reservation_key: int, pr_type: int, scope: int) -> Outcome:
        """RELEASE (SPC-4 5.13.11.2): only a holder releases; a non-holder gets GOOD."""
        self._check_key(nexus, reservation_key)
        reservation = self.reservation
        if reservation is None or not reservation.is_holder(nexus):
            return Outcome()
        if reservation.type != pr_type or scope != LU_SCOPE:
            raise InvalidReleaseOfPersistentReservation()
        snapshot = self._snapshot()
        self._set_reservation(None)
        self._persist(snapshot)
        if reservation.type not in RELEASE_NOTIFIES_TYPES:
            return Outcome()
        return Outcome([(other, Ascq.RESERVATIONS_RELEASED) for other in self.registrations if other != nexus])

    def clear(self, nexus: ItNexus, reservation_key: int) -> Outcome:
        """CLEAR (SPC-4 5.13.11.6): no reservation and no registrations are left."""
        self._check_key(nexus, reservation_key)
        others = [other for other in self.registrations if other != nexus]
        snapshot = self._snapshot()
        self.registrations.clear()
        self._set_reservation(None)
        self.generation += 1
        self._persist(snapshot)
        return Outcome([(other, Ascq.RESERVATIONS_PREEMPTED) for other in others])

    def preempt(self, nexus: ItNexus, reservation_key: int, victim_key: int, pr_type: PrType, *,
                abort: bool) -> Outcome:
        """PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.4/5): remove the registrations holding
        ``victim_key`` and, when that key holds the reservation, take it over with ``pr_type``."""
        self._check_key(nexus, reservation_key)
        reservation = self.reservation
        takes_reservation = False
        if reservation is not None and reservation.all_registrants and victim_key == 0:
            removed = [other for other in self.registrations if other != nexus]
            takes_reservation = True
        elif (reservation is not None and not reservation.all_registrants
              and victim_key == self.registrations.get(reservation.holder)):
            removed = [other for other, key in self.registrations.items() if key == victim_key and other != nexus]
            takes_reservation = True
        else:
            if victim_key == 0:
                raise InvalidFieldInParameterList(SERVICE_ACTION_KEY_OFFSET, None,
                                                  "PREEMPT with service action reservation key 0")
            removed = [other for other, key in self.registrations.items() if key == victim_key and other != nexus]
            if not removed:
                raise ReservationConflict("PREEMPT: no registration holds the service action reservation key")
        snapshot = self._snapshot()
        for other in removed:
            del self.registrations[other]
        type_changed = False
        if takes_reservation:
            type_changed = reservation.type != pr_type
            self._set_reservation(Reservation(pr_type, nexus, self.registrations))
        self.generation += 1
        self._persist(snapshot)
        attentions = [(other, Ascq.REGISTRATIONS_PREEMPTED) for other in removed]
        if type_changed:
            attentions += [(other, Ascq.RESERVATIONS_RELEASED) for other in self.registrations if other != nexus]
        return Outcome(attentions, frozenset(removed) if abort else frozenset())

    def register_and_move(self, nexus: ItNexus, reservation_key: int, new_key: int, destination: ItNexus, *,
                          unregister: bool, aptpl: bool, transport_id_offset: int) -> Outcome:
        """REGISTER AND MOVE (SPC-4 5.13.8): register ``destination`` and hand it the reservation."""
        self._check_key(nexus, reservation_key)
        reservation = self.reservation
        if reservation is None or reservation.all_registrants or reservation.holder != nexus:
            raise ReservationConflict("REGISTER AND MOVE from an I_T nexus that is not the reservation holder")
        if new_key == 0:
            raise InvalidFieldInParameterList(SERVICE_ACTION_KEY_OFFSET, None, "REGISTER AND MOVE with key 0")
        if destination == nexus:
            raise InvalidFieldInParameterList(transport_id_offset, None, "REGISTER AND MOVE to the issuing I_T nexus")
        self._check_aptpl(aptpl)
        if destination not in self.registrations and len(self.registrations) >= MAX_REGISTRATIONS:
            raise InsufficientRegistrationResources()
        snapshot = self._snapshot()
        self.registrations[destination] = new_key
        self._set_reservation(Reservation(reservation.type, destination, self.registrations))
        if unregister:
            del self.registrations[nexus]
        self.aptpl = aptpl
        self.generation += 1
        self._persist(snapshot)
        return Outcome()

    # -- persistence ----------------------------------------------------------------------------

    def attach_store(self, store: ReservationStore) -> bool:
        """Use ``store`` from now on and restore what it holds; True when state was restored.

        An unreadable file is logged and left in place (an operator may want it); the LU then
        starts without reservations rather than refusing to start.
        """
        self.store = store
        try:
            document = store.load()
        except ValueError as error:
            log.error("persistent reservations not restored: %s", error)
            return False
        if document is None:
            return False
        try:
            self.load_document(document)
        except ValueError as error:
            log.error("persistent reservations not restored: %s", error)
            return False
        self.aptpl = True
        return True

    def load_document(self, document: dict) -> None:
        """Replace the state with what ``to_document`` wrote; ValueError (and nothing changed)
        when the document is malformed."""
        try:
            registrations = {}
            for item in document["registrations"]:
                registrations[nexus_from_document(item)] = int(item["key"])
            reservation = document.get("reservation")
            generation = int(document["generation"])
            aptpl = bool(document.get("aptpl", True))
            if reservation is not None:
                pr_type = PrType(int(reservation["type"]))
                holder = nexus_from_document(reservation["holder"]) if reservation.get("holder") else None
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed persistent reservation state ({error})") from None
        self.registrations = registrations
        self.generation = generation
        self.aptpl = aptpl
        self._set_reservation(Reservation(pr_type, holder, registrations) if reservation is not None else None)

    def adopt(self, other: "PersistentReservations") -> None:
        """Take ``other``'s registrations, reservation, generation and APTPL: the shared state
        changed on another gateway (``odxtarget.scsi.shared_reservations``)."""
        self.registrations = dict(other.registrations)
        self.generation = other.generation
        self.aptpl = other.aptpl
        held = other.reservation
        self._set_reservation(None if held is None else Reservation(held.type, held.holder, self.registrations))

    def to_document(self) -> dict:
        reservation = self.reservation
        return {
            "version": STORE_FORMAT_VERSION,
            "generation": self.generation,
            "aptpl": self.aptpl,
            "registrations": [dict(nexus_to_document(nexus), key=key) for nexus, key in self.registrations.items()],
            "reservation": None if reservation is None else {
                "type": int(reservation.type),
                "holder": None if reservation.holder is None else nexus_to_document(reservation.holder),
            },
        }

    # -- internals --------------------------------------------------------------------------------

    def _check_key(self, nexus: ItNexus, reservation_key: int) -> None:
        """SPC-4 5.13.6: every service action but the REGISTER family needs a registered
        nexus quoting its own key."""
        registered = self.registrations.get(nexus)
        if registered is None or registered != reservation_key:
            raise ReservationConflict("I_T nexus not registered with this reservation key")

    def _check_aptpl(self, aptpl: bool) -> None:
        if aptpl and not self.persist_capable:
            # SPC-4 6.16.3: APTPL without PTPL_C is an invalid field (byte 20, bit 0).
            raise InvalidFieldInParameterList(20, 0, "APTPL: this logical unit cannot persist reservations")

    def _unregister(self, nexus: ItNexus) -> Outcome:
        """SPC-4 5.13.11.2.3: unregistering the holder releases the reservation (all-registrants
        types: only when the last registrant goes)."""
        del self.registrations[nexus]
        reservation = self.reservation
        if reservation is None:
            return Outcome()
        if reservation.all_registrants:
            if not self.registrations:
                self._set_reservation(None)
            return Outcome()
        if reservation.holder != nexus:
            return Outcome()
        self._set_reservation(None)
        if reservation.type not in RELEASE_NOTIFIES_TYPES:
            return Outcome()
        return Outcome([(other, Ascq.RESERVATIONS_RELEASED) for other in self.registrations])

    def _set_reservation(self, reservation: Reservation | None) -> None:
        self.reservation = reservation
        if self._publish is not None:
            self._publish(reservation)

    def _snapshot(self) -> _Snapshot:
        reservation = self.reservation
        return _Snapshot(self.generation, dict(self.registrations),
                         None if reservation is None else (reservation.type, reservation.holder), self.aptpl)

    def _restore(self, snapshot: _Snapshot) -> None:
        self.generation = snapshot.generation
        self.registrations.clear()
        self.registrations.update(snapshot.registrations)
        self.aptpl = snapshot.aptpl
        saved = snapshot.reservation
        self._set_reservation(None if saved is None else Reservation(saved[0], saved[1], self.registrations))

    def _persist(self, snapshot: _Snapshot) -> None:
        """Write the new state before the command completes; undo the change if that fails."""
        store = self.store
        if store is None or not (self.aptpl or snapshot.aptpl):
            return
        try:
            if self.aptpl:
                store.save(self.to_document())
            else:
                store.remove()
        except OSError as error:
            log.error("cannot save persistent reservations: %s", error)
            self._restore(snapshot)
            raise InternalTargetFailure(f"persistent reservations not saved: {error}") from None


def nexus_to_document(nexus: ItNexus) -> dict:
    """An I_T nexus as a JSON-able document (stored reservation state)."""
    return {"initiator_port": nexus.initiator_port, "target_port": nexus.target_port,
            "relative_target_port_id": nexus.relative_target_port_id,
            "target_port_group": nexus.target_port_group}


def nexus_from_document(item: dict) -> ItNexus:
    return ItNexus(str(item["initiator_port"]), str(item["target_port"]),
                   int(item["relative_target_port_id"]), int(item["target_port_group"]))
