"""PERSISTENT RESERVE IN and PERSISTENT RESERVE OUT (SPC-4 6.15, 6.16): decoding and encoding.

The rules live in ``odxtarget.scsi.pr_state``; this module turns CDBs and parameter lists
into calls on ``lu.persistent_reservations`` and the state into PERSISTENT RESERVE IN data,
then delivers what a successful PERSISTENT RESERVE OUT owes the other I_T nexuses: unit
attentions (SPC-4 5.13.11) and, for PREEMPT AND ABORT, the abort of their queued tasks,
which only the front end holds (``ScsiTarget.abort_tasks``).

Not offered, and refused with INVALID FIELD IN PARAMETER LIST as SPC-4 6.16.3 requires when
the capability bit is zero: SPEC_I_PT (SIP_C=0) and ALL_TG_PT (ATP_C=0). Every I_T nexus
registers for itself, as Windows and Linux initiators do.
"""

from __future__ import annotations

import struct

from odxtarget.scsi.cdb import U16, U32
from odxtarget.scsi.constants import SERVICE_ACTION_MASK, PersistentReserveIn, PersistentReserveOut
from odxtarget.scsi.dataout import take
from odxtarget.scsi.errors import InvalidFieldInCdb, InvalidFieldInParameterList, ParameterListLengthError
from odxtarget.scsi.execution import Steps
from odxtarget.scsi.pr_state import LU_SCOPE, Outcome, PrType
from odxtarget.scsi.shared_reservations import ReservationChange, ReservationState
from odxtarget.scsi.types import ItNexus, ScsiResult, Status

#: PERSISTENT RESERVE OUT CDB: scope (bits 7..4) and type (bits 3..0) in byte 2, parameter
#: list length in bytes 5..8 (SPC-4 6.16.1).
SCOPE_TYPE_BYTE = 2
PARAMETER_LIST_LENGTH_OFFSET = 5
#: PERSISTENT RESERVE IN CDB: allocation length in bytes 7..8 (SPC-4 6.15.1).
ALLOCATION_LENGTH_OFFSET = 7

#: The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3): RESERVATION KEY,
#: SERVICE ACTION RESERVATION KEY, obsolete, flags byte 20, reserved, obsolete.
BASIC_PARAMETER_LIST = struct.Struct(">QQ4xB3x")
BASIC_PARAMETER_LIST_LENGTH = BASIC_PARAMETER_LIST.size   # 24
FLAGS_BYTE = 20
SPEC_I_PT = 0x08
ALL_TG_PT = 0x04
APTPL = 0x01
SPEC_I_PT_BIT = 3
ALL_TG_PT_BIT = 2

#: REGISTER AND MOVE parameter list (SPC-4 6.16.4): keys, reserved, UNREG/APTPL, RELATIVE
#: TARGET PORT IDENTIFIER, TRANSPORTID PARAMETER DATA LENGTH, then the TransportID.
MOVE_PARAMETER_LIST = struct.Struct(">QQxBHI")
MOVE_FLAGS_BYTE = 17
MOVE_UNREG = 0x02
MOVE_RELATIVE_PORT_OFFSET = 18
MOVE_TRANSPORT_ID_OFFSET = MOVE_PARAMETER_LIST.size      # 24

# TransportID for iSCSI (SPC-4 7.6.4.6): protocol identifier 5h; format 00b names an
# initiator device, 01b an initiator port ("name,i,0xISID").
PROTOCOL_ID_ISCSI = 0x5
TRANSPORT_ID_FORMAT_DEVICE = 0x00
TRANSPORT_ID_FORMAT_PORT = 0x40
TRANSPORT_ID_FORMAT_MASK = 0xC0
TRANSPORT_ID_PROTOCOL_MASK = 0x0F
TRANSPORT_ID_HEADER = 4
TRANSPORT_ID_MIN_NAME_BYTES = 20
ISCSI_PORT_SEPARATOR = ",i,0x"

# REPORT CAPABILITIES (SPC-4 6.15.4).
CAPABILITIES_LENGTH = 8
CRH = 0x10          # compatible reservation handling: SPC-4 5.13.3 (handlers.reservations)
PTPL_C = 0x01
TMV = 0x80
#: ALLOW COMMANDS 100b: TEST UNIT READY through every type; MODE SENSE, RECEIVE COPY RESULTS,
#: REPORT SUPPORTED OPERATION CODES and READ DEFECT DATA through Write Exclusive.
ALLOW_COMMANDS = 0x4 << 4
PTPL_A = 0x01
#: PERSISTENT RESERVATION TYPE MASK bits (bytes 4..5), one per supported type.
TYPE_MASK_BITS = {
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x8000,
    PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x4000,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x2000,
    PrType.EXCLUSIVE_ACCESS: 0x0800,
    PrType.WRITE_EXCLUSIVE: 0x0200,
    PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x0001,
}

# READ FULL STATUS descriptor (SPC-4 6.15.5): key, reserved, ALL_TG_PT/R_HOLDER, scope/type,
# reserved, RELATIVE TARGET PORT IDENTIFIER, ADDITIONAL DESCRIPTOR LENGTH, then TransportID.
FULL_STATUS_DESCRIPTOR = struct.Struct(">Q4xBB4xHI")
R_HOLDER = 0x01
HEADER = struct.Struct(">II")        # PRGENERATION, ADDITIONAL LENGTH
READ_RESERVATION_DESCRIPTOR = struct.Struct(">Q4xxB2x")   # key, obsolete, reserved, scope/type, obsolete


# -- PERSISTENT RESERVE IN -------------------------------------------------------------------

def _data_in(command, data: bytes) -> ScsiResult:
    allocation_length = U16.unpack_from(command.cdb, ALLOCATION_LENGTH_OFFSET)[0]
    data = data[:allocation_length]
    return ScsiResult(Status.GOOD, data, b"", len(data))


def read_keys(lu, command, target) -> ScsiResult:
    """READ KEYS (SPC-4 6.15.2): the ADDITIONAL LENGTH counts every key, even cut ones."""
    state = lu.persistent_reservations
    keys = b"".join(key.to_bytes(8, "big") for key in state.registrations.values())
    return _data_in(command, HEADER.pack(state.generation, len(keys)) + keys)


def read_reservation(lu, command, target) -> ScsiResult:
    """READ RESERVATION (SPC-4 6.15.3): the key is 0 for all-registrants types."""
    state = lu.persistent_reservations
    reservation = state.reservation
    if reservation is None:
        return _data_in(command, HEADER.pack(state.generation, 0))
    key = 0 if reservation.holder is None else state.registrations[reservation.holder]
    descriptor = READ_RESERVATION_DESCRIPTOR.pack(key, LU_SCOPE << 4 | reservation.type)
    return _data_in(command, HEADER.pack(state.generation, len(descriptor)) + descriptor)


def report_capabilities(lu, command, target) -> ScsiResult:
    state = lu.persistent_reservations
    type_mask = 0
    for bit in TYPE_MASK_BITS.values():
        type_mask |= bit
    data = struct.pack(">HBBH2x", CAPABILITIES_LENGTH, CRH | (PTPL_C if state.persist_capable else 0),
                       TMV | ALLOW_COMMANDS | (PTPL_A if state.aptpl else 0), type_mask)
    return _data_in(command, data)


def read_full_status(lu, command, target) -> ScsiResult:
    """READ FULL STATUS (SPC-4 6.15.5): one descriptor per registered I_T nexus."""
    state = lu.persistent_reservations
    reservation = state.reservation
    descriptors = bytearray()
    for nexus, key in state.registrations.items():
        holder = reservation is not None and reservation.is_holder(nexus)
        transport_id = encode_transport_id(nexus.initiator_port)
        descriptors += FULL_STATUS_DESCRIPTOR.pack(
            key, R_HOLDER if holder else 0, (LU_SCOPE << 4 | reservation.type) if holder else 0,
            nexus.relative_target_port_id, len(transport_id))
        descriptors += transport_id
    return _data_in(command, HEADER.pack(state.generation, len(descriptors)) + bytes(descriptors))


def encode_transport_id(initiator_port: str) -> bytes:
    """An iSCSI TransportID (SPC-4 7.6.4.6): the port format when the name has an ISID part."""
    port_format = ISCSI_PORT_SEPARATOR in initiator_port.lower()
    name = initiator_port.encode() + b"\0"
    length = max(TRANSPORT_ID_MIN_NAME_BYTES, (len(name) + 3) // 4 * 4)
    first = (TRANSPORT_ID_FORMAT_PORT if port_format else TRANSPORT_ID_FORMAT_DEVICE) | PROTOCOL_ID_ISCSI
    return bytes((first, 0)) + U16.pack(length) + name.ljust(length, b"\0")


def decode_transport_id(data, offset: int) -> str:
    """The initiator port an iSCSI port-format TransportID names; INVALID FIELD IN PARAMETER
    LIST at ``offset`` (where it starts in the parameter list) for anything else."""
    if len(data) < TRANSPORT_ID_HEADER:
        raise InvalidFieldInParameterList(offset, None, "TransportID too short")
    first = data[0]
    if first & TRANSPORT_ID_PROTOCOL_MASK != PROTOCOL_ID_ISCSI:
        raise InvalidFieldInParameterList(offset, 3, "TransportID: not an iSCSI protocol identifier")
    if first & TRANSPORT_ID_FORMAT_MASK != TRANSPORT_ID_FORMAT_PORT:
        raise InvalidFieldInParameterList(offset, 7, "TransportID: an I_T nexus needs the port format (01b)")
    length = U16.unpack_from(data, 2)[0]
    raw = bytes(data[TRANSPORT_ID_HEADER:TRANSPORT_ID_HEADER + length]).split(b"\0", 1)[0]
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidFieldInParameterList(offset + TRANSPORT_ID_HEADER, None, "TransportID: not UTF-8") from None
    name, separator, isid = text.partition(ISCSI_PORT_SEPARATOR)
    if not separator:
        lowered = text.lower()
        cut = lowered.find(ISCSI_PORT_SEPARATOR)
        if cut < 0:
            raise InvalidFieldInParameterList(offset + TRANSPORT_ID_HEADER, None, "TransportID: no ',i,0x' ISID")
        name, isid = text[:cut], text[cut + len(ISCSI_PORT_SEPARATOR):]
    return f"{name}{ISCSI_PORT_SEPARATOR}{isid.lower()}"


# -- PERSISTENT RESERVE OUT ------------------------------------------------------------------

def persistent_reserve_out(lu, command, target) -> ScsiResult | Steps:
    length = U32.unpack_from(command.cdb, PARAMETER_LIST_LENGTH_OFFSET)[0]
    change = _decode_out(command, length)
    if lu.shared_reservations is not None:
        return change_shared_reservations(lu, command, target, change, length)
    deliver(lu, target, change(ReservationState(lu.persistent_reservations, lu.reservation_holder)))
    return ScsiResult(Status.GOOD, b"", b"", length)


def change_shared_reservations(lu, command, target, change: ReservationChange, transfer_length: int = 0) -> Steps:
    """Make ``change`` in the state every gateway of ``lu`` shares, adopt it here and deliver
    its outcome to this gateway's I_T nexuses (``odxtarget.scsi.shared_reservations``)."""
    adopted = yield lu.shared_reservations.change(change)
    lu.adopt_shared_reservations(adopted.document, adopted.version)
    deliver(lu, target, adopted.outcome)
    return ScsiResult(Status.GOOD, b"", b"", transfer_length)


def _decode_out(command, length: int) -> ReservationChange:
    """The PERSISTENT RESERVE OUT command as a change of the reservation state."""
    cdb = command.cdb
    action = cdb[1] & SERVICE_ACTION_MASK
    scope, type_code = cdb[SCOPE_TYPE_BYTE] >> 4, cdb[SCOPE_TYPE_BYTE] & 0x0F
    nexus = command.nexus
    if action == PersistentReserveOut.REGISTER_AND_MOVE:
        return _register_and_move(command, length, scope, type_code)
    if length < BASIC_PARAMETER_LIST_LENGTH:
        raise ParameterListLengthError(f"PERSISTENT RESERVE OUT parameter list of {length} bytes")
    data = take(command, length)
    key, action_key, flags = BASIC_PARAMETER_LIST.unpack_from(data)
    if flags & SPEC_I_PT:
        raise InvalidFieldInParameterList(FLAGS_BYTE, SPEC_I_PT_BIT, "SPEC_I_PT is not supported (SIP_C=0)")
    if length != BASIC_PARAMETER_LIST_LENGTH:
        raise ParameterListLengthError(f"PERSISTENT RESERVE OUT parameter list of {length} bytes, not 24")
    if action in (PersistentReserveOut.REGISTER, PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY):
        if flags & ALL_TG_PT:
            raise InvalidFieldInParameterList(FLAGS_BYTE, ALL_TG_PT_BIT, "ALL_TG_PT is not supported (ATP_C=0)")
        ignore_existing = action == PersistentReserveOut.REGISTER_AND_IGNORE_EXISTING_KEY
        aptpl = bool(flags & APTPL)
        return lambda state: state.persistent.register(nexus, key, action_key, aptpl=aptpl,
                                                       ignore_existing=ignore_existing)
    if action == PersistentReserveOut.RESERVE:
        pr_type = _reservation_type(scope, type_code)
        return lambda state: state.persistent.reserve(nexus, key, pr_type)
    if action == PersistentReserveOut.RELEASE:
        return lambda state: state.persistent.release(nexus, key, type_code, scope)
    if action == PersistentReserveOut.CLEAR:
        return lambda state: state.persistent.clear(nexus, key)
    # PREEMPT, PREEMPT AND ABORT (the command table has no other service actions)
    pr_type = _reservation_type(scope, type_code)
    abort = action == PersistentReserveOut.PREEMPT_AND_ABORT
    return lambda state: state.persistent.preempt(nexus, key, action_key, pr_type, abort=abort)


def _reservation_type(scope: int, type_code: int) -> PrType:
    if scope != LU_SCOPE:
        raise InvalidFieldInCdb(SCOPE_TYPE_BYTE, 7, f"persistent reservation scope {scope:#x} (only LU_SCOPE)")
    try:
        return PrType(type_code)
    except ValueError:
        raise InvalidFieldInCdb(SCOPE_TYPE_BYTE, 3, f"persistent reservation type {type_code:#x}") from None


def _register_and_move(command, length: int, scope: int, type_code: int) -> ReservationChange:
    if length < MOVE_PARAMETER_LIST.size + TRANSPORT_ID_HEADER:
        raise ParameterListLengthError(f"REGISTER AND MOVE parameter list of {length} bytes")
    data = take(command, length)
    key, action_key, flags, relative_port, transport_id_length = MOVE_PARAMETER_LIST.unpack_from(data)
    if MOVE_TRANSPORT_ID_OFFSET + transport_id_length > length:
        raise ParameterListLengthError("REGISTER AND MOVE: TransportID beyond the parameter list")
    nexus: ItNexus = command.nexus
    if relative_port != nexus.relative_target_port_id:
        raise InvalidFieldInParameterList(MOVE_RELATIVE_PORT_OFFSET, None,
                                          f"REGISTER AND MOVE to unknown relative target port {relative_port}")
    transport_id = memoryview(data)[MOVE_TRANSPORT_ID_OFFSET:MOVE_TRANSPORT_ID_OFFSET + transport_id_length]
    initiator_port = decode_transport_id(transport_id, MOVE_TRANSPORT_ID_OFFSET)
    destination = ItNexus(initiator_port, nexus.target_port, nexus.relative_target_port_id, nexus.target_port_group)
    return lambda state: state.persistent.register_and_move(
        nexus, key, action_key, destination, unregister=bool(flags & MOVE_UNREG), aptpl=bool(flags & APTPL),
        transport_id_offset=MOVE_TRANSPORT_ID_OFFSET)


def deliver(lu, target, outcome: Outcome) -> None:
    """Unit attentions to the other I_T nexuses, then the front end's abort of the preempted
    nexuses' queued tasks (SPC-4 5.13.11.5: PREEMPT AND ABORT). Only this gateway's nexuses:
    the shared state's store delivers to the others (``odxtarget.scsi.shared_reservations``)."""
    for nexus, condition in outcome.unit_attentions:
        if lu.serves_port(nexus):
            lu.queue_unit_attention(nexus, condition)
    aborted = frozenset(nexus for nexus in outcome.aborted if lu.serves_port(nexus))
    if aborted and target is not None:
        target.abort_tasks(lu, aborted)


# Service action -> handler, for the command table.
IN_HANDLERS = {
    PersistentReserveIn.READ_KEYS: read_keys,
    PersistentReserveIn.READ_RESERVATION: read_reservation,
    PersistentReserveIn.REPORT_CAPABILITIES: report_capabilities,
    PersistentReserveIn.READ_FULL_STATUS: read_full_status,
}
