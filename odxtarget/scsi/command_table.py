"""The command table: one row per (operation code, service action), the single source of truth.

Theory of operation
-------------------
Every command the core accepts is a ``CommandSpec``. Its ``usage`` bytes are the CDB USAGE
DATA of SPC-4 6.35.3: a one bit marks a bit the device server looks at. The same bytes

* validate incoming CDBs: any one bit outside the usage bits is a reserved or unsupported
  field, answered with INVALID FIELD IN CDB whose field pointer names the exact byte and bit
  (computed once per spec as one big-endian integer mask, so the check costs one AND);
* are returned by REPORT SUPPORTED OPERATION CODES, together with the timeouts.

``flags`` carry the gates the dispatcher applies before the handler runs (unit attention,
SPC-2 reservation conflict, persistent reservation access class, write protection). More rows (the copy manager's 83h/84h service
actions) are added at run time with ``CommandTable.register``; nothing in the core has to change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from odxtarget.scsi.constants import SERVICE_ACTION_MASK
from odxtarget.scsi.errors import InvalidFieldInCdb, InvalidOpcode

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit
    from odxtarget.scsi.target import ScsiTarget
    from odxtarget.scsi.types import ScsiCommand, ScsiResult

    Handler = Callable[[LogicalUnit, ScsiCommand, ScsiTarget], ScsiResult]


class DataDirection(enum.IntEnum):
    NONE = 0
    IN = 1
    OUT = 2


class CommandFlags(enum.IntFlag):
    NONE = 0
    #: Never reports (nor clears) a pending unit attention: INQUIRY, REPORT LUNS, REQUEST
    #: SENSE handles it itself (SPC-4 5.14, SAM-5 5.14).
    IGNORES_UNIT_ATTENTION = 0x01
    #: Allowed while another I_T nexus holds an SPC-2 reservation (SPC-2 5.5.1 table 10).
    ALLOWED_WHEN_RESERVED = 0x02
    #: Changes the medium: refused on a read-only LU or with SWP set (SBC-4 4.x).
    WRITES_MEDIUM = 0x04
    #: Works for a LUN that has no logical unit behind it (SPC-4 table on LUN 0 / absent LUs).
    WORKS_WITHOUT_LU = 0x08
    #: Runs while a removable medium is ejected (SBC-4 4.x: everything else is NOT READY,
    #: MEDIUM NOT PRESENT): discovery, mode pages, reservations, loading the medium.
    WORKS_WITHOUT_MEDIUM = 0x10
    #: Persistent reservations (SPC-4 5.13.1 and SBC-4 4.17 tables "commands and persistent
    #: reservations"): allowed whatever reservation another I_T nexus holds. A command with
    #: neither PR flag conflicts with every reservation type it is not a registrant/holder of.
    PR_ALLOWED = 0x20
    #: Persistent reservations: reads without changing the medium -- allowed through Write
    #: Exclusive types, RESERVATION CONFLICT through Exclusive Access types.
    PR_READ = 0x40


#: The protection field of SBC-4 CDBs (byte 1, bits 7..5), refused as a whole.
PROTECT_FIELD_MASK = 0xE0
PROTECT_FIELD_LSB = 5

#: Computes how many data-out bytes a CDB asks for, given the LU's block size.
DataOutLength = Callable[[bytes, int], int]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One supported command.

    Args:
        name: the T10 name, for logs and documentation.
        handler: ``handler(lu, command, target) -> ScsiResult``; raises ``ScsiError``.
        usage: CDB usage data; ``usage[0]`` is the opcode and, for service-action commands,
            ``usage[1]`` holds the service action value itself (SPC-4 6.35.3).
        service_action: None for commands without service actions.
        direction: data direction, for front ends and documentation.
        data_out_length: for data-out commands, the byte count the CDB requires.
        nominal_timeout / recommended_timeout: seconds, for the RCTD timeouts descriptor.
    """

    name: str
    handler: "Handler"
    usage: bytes
    service_action: int | None = None
    direction: DataDirection = DataDirection.NONE
    flags: CommandFlags = CommandFlags.NONE
    data_out_length: DataOutLength | None = None
    nominal_timeout: int = 0
    recommended_timeout: int = 30
    reserved_mask: int = field(init=False, repr=False, compare=False)
    #: ``flags`` as a plain int: the dispatcher tests it for every command, and an IntFlag
    #: ``&`` costs microseconds where an int ``&`` costs nanoseconds.
    flag_bits: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        usage = bytearray(self.usage)
        if self.service_action is not None:
            usage[1] |= SERVICE_ACTION_MASK  # matched exactly by the table lookup instead
        inverted = bytes((~b) & 0xFF for b in usage)
        object.__setattr__(self, "reserved_mask", int.from_bytes(inverted, "big"))
        object.__setattr__(self, "flag_bits", int(self.flags))

    @property
    def opcode(self) -> int:
        return self.usage[0]

    @property
    def cdb_length(self) -> int:
        return len(self.usage)

    def check_reserved_bits(self, cdb: bytes) -> None:
        """Raise INVALID FIELD IN CDB pointing at the first bit we do not support."""
        length = len(self.usage)
        if len(cdb) < length:
            raise InvalidFieldInCdb(len(cdb), None, f"{self.name}: CDB shorter than {length} bytes")
        if int.from_bytes(cdb[:length], "big") & self.reserved_mask:
            self._raise_for_reserved(cdb)

    def _raise_for_reserved(self, cdb: bytes) -> None:
        mask = self.reserved_mask.to_bytes(len(self.usage), "big")
        for index, (value, bad) in enumerate(zip(cdb, mask)):
            offending = value & bad
            if offending:
                # The bit pointer names the leftmost bit of the field (SPC-4 4.5.2.4.2). Single
                # bits point at themselves; the one multi-bit field we refuse is the 3-bit
                # RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT in byte 1 bits 7..5 (SBC-4 5.x).
                bit = offending.bit_length() - 1
                if index == 1 and bit >= PROTECT_FIELD_LSB and bad & PROTECT_FIELD_MASK == PROTECT_FIELD_MASK:
                    bit = 7
                raise InvalidFieldInCdb(index, bit,
                                        f"{self.name}: unsupported bits {offending:#04x} in CDB byte {index}")


class CommandTable:
    """Opcode (and service action) to ``CommandSpec``; one table per logical unit."""

    def __init__(self, specs: "list[CommandSpec] | None" = None):
        self._by_opcode: list[CommandSpec | None] = [None] * 256
        self._by_service_action: dict[int, dict[int, CommandSpec]] = {}
        for spec in specs or ():
            self.register(spec)

    def register(self, spec: CommandSpec, replace: bool = False) -> None:
        """Add a command; ``replace`` allows overriding an existing row."""
        opcode = spec.opcode
        if spec.service_action is None:
            if opcode in self._by_service_action or (self._by_opcode[opcode] is not None and not replace):
                raise ValueError(f"opcode {opcode:02X}h already registered")
            self._by_opcode[opcode] = spec
            return
        if self._by_opcode[opcode] is not None:
            raise ValueError(f"opcode {opcode:02X}h is registered without service actions")
        actions = self._by_service_action.setdefault(opcode, {})
        if spec.service_action in actions and not replace:
            raise ValueError(f"{opcode:02X}h/{spec.service_action:02X}h already registered")
        actions[spec.service_action] = spec

    def copy(self) -> "CommandTable":
        return CommandTable(list(self))

    def lookup(self, cdb: bytes) -> CommandSpec:
        """The spec for a CDB; raises INVALID COMMAND OPERATION CODE or, for an unknown service
        action of a known opcode, INVALID FIELD IN CDB at byte 1 (SPC-4 4.2.5.1)."""
        opcode = cdb[0]
        spec = self._by_opcode[opcode]
        if spec is not None:
            return spec
        actions = self._by_service_action.get(opcode)
        if actions is None:
            raise InvalidOpcode(opcode)
        service_action = cdb[1] & SERVICE_ACTION_MASK if len(cdb) > 1 else 0
        spec = actions.get(service_action)
        if spec is None:
            raise InvalidFieldInCdb(1, 4, f"unsupported service action {opcode:02X}h/{service_action:02X}h")
        return spec

    def find(self, opcode: int, service_action: int | None = None) -> CommandSpec | None:
        spec = self._by_opcode[opcode]
        if spec is not None:
            return spec
        actions = self._by_service_action.get(opcode)
        if actions is None or service_action is None:
            return None
        return actions.get(service_action)

    def has_service_actions(self, opcode: int) -> bool:
        return opcode in self._by_service_action

    def __iter__(self) -> Iterator[CommandSpec]:
        """All specs, ordered by opcode then service action."""
        for opcode in range(256):
            spec = self._by_opcode[opcode]
            if spec is not None:
                yield spec
            actions = self._by_service_action.get(opcode)
            if actions:
                for service_action in sorted(actions):
                    yield actions[service_action]

    def __len__(self) -> int:
        return sum(1 for _ in self)
