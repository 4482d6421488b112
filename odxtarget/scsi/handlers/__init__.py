"""Command handlers, one module per family, and the standard command table that binds them.

The table below is the one place that says which commands exist, which CDB bits they look
at (usage data, SPC-4 6.35.3), and which dispatcher gates apply. It drives CDB validation and
REPORT SUPPORTED OPERATION CODES alike.

Usage bytes: byte 0 is the opcode; for service-action commands byte 1 is the service action;
the last byte is CONTROL, of which we support nothing (NACA=1 is refused, SAM-5 5.2).
"""

from __future__ import annotations

from odxtarget.scsi.cdb import U16, U32, LBA32_LEN16, LBA32_LEN32, LBA64_LEN32, lba_and_length_6
from odxtarget.scsi.command_table import CommandFlags as F
from odxtarget.scsi.command_table import CommandSpec, CommandTable, DataDirection
from odxtarget.scsi.constants import MaintenanceIn, Opcode, PersistentReserveOut, ServiceActionIn16
from odxtarget.scsi.handlers import (alua, inquiry, misc, mode, opcodes, persistent_reservations, provisioning,
                                    reservations, rw)

IN = DataDirection.IN
OUT = DataDirection.OUT
CONTROL = 0x00
#: Group number: 6 bits (SBC-4 4.22).
GROUP = 0x3F

# Byte 1 usage of the READ/WRITE family.
READ_FLAGS = 0x1E      # DPO, FUA, RARC, FUA_NV (obsolete, ignored)
WRITE_FLAGS = 0x1A     # DPO, FUA, FUA_NV (obsolete, ignored)
VERIFY_FLAGS = 0x16    # DPO, BYTCHK
IMMED = 0x02
SYNC_FLAGS = 0x06      # SYNC_NV (obsolete), IMMED


def _u(*usage: int) -> bytes:
    return bytes(usage)


def _lba10(opcode: int, flags: int) -> bytes:
    return _u(opcode, flags, 0xFF, 0xFF, 0xFF, 0xFF, GROUP, 0xFF, 0xFF, CONTROL)


def _lba12(opcode: int, flags: int) -> bytes:
    return _u(opcode, flags, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, GROUP, CONTROL)


def _lba16(opcode: int, flags: int) -> bytes:
    return _u(opcode, flags, *([0xFF] * 12), GROUP, CONTROL)


def _blocks_out(decode):
    """data_out_length for CDBs whose transfer length counts logical blocks."""
    def length(cdb: bytes, block_size: int) -> int:
        return decode(cdb)[1] * block_size
    return length


def _verify_out(decode):
    def length(cdb: bytes, block_size: int) -> int:
        bytchk = (cdb[1] >> 1) & 0x03
        blocks = decode(cdb)[1]
        if bytchk == rw.BYTCHK_COMPARE:
            return blocks * block_size
        if bytchk == rw.BYTCHK_SINGLE_BLOCK and blocks:
            return block_size
        return 0
    return length


def _decode_10(cdb):
    return LBA32_LEN16.unpack_from(cdb)


def _decode_12(cdb):
    return LBA32_LEN32.unpack_from(cdb)


def _decode_16(cdb):
    return LBA64_LEN32.unpack_from(cdb)


def _write_same_out(cdb: bytes, block_size: int) -> int:
    if cdb[0] == Opcode.WRITE_SAME_16 and cdb[1] & provisioning.NDOB:
        return 0
    return block_size


def _compare_and_write_out(cdb: bytes, block_size: int) -> int:
    return 2 * cdb[rw.CAW_LENGTH_BYTE] * block_size


def _unmap_out(cdb: bytes, block_size: int) -> int:
    return U16.unpack_from(cdb, 7)[0]


def _mode_select_6_out(cdb: bytes, block_size: int) -> int:
    return cdb[4]


def _mode_select_10_out(cdb: bytes, block_size: int) -> int:
    return U16.unpack_from(cdb, 7)[0]


def _persistent_reserve_out_out(cdb: bytes, block_size: int) -> int:
    return U32.unpack_from(cdb, persistent_reservations.PARAMETER_LIST_LENGTH_OFFSET)[0]


_IO_TIMEOUTS = dict(nominal_timeout=1, recommended_timeout=30)
_SLOW_TIMEOUTS = dict(nominal_timeout=5, recommended_timeout=120)
_NO_UA = (F.IGNORES_UNIT_ATTENTION | F.ALLOWED_WHEN_RESERVED | F.WORKS_WITHOUT_LU | F.WORKS_WITHOUT_MEDIUM
          | F.PR_ALLOWED)
#: Commands that run while a removable medium is ejected (besides the _NO_UA ones).
_NO_MEDIUM = F.WORKS_WITHOUT_MEDIUM


def standard_commands() -> list[CommandSpec]:
    return [
        CommandSpec("TEST UNIT READY", misc.test_unit_ready, _u(Opcode.TEST_UNIT_READY, 0, 0, 0, 0, CONTROL),
                    flags=F.PR_ALLOWED),
        CommandSpec("REQUEST SENSE", misc.request_sense, _u(Opcode.REQUEST_SENSE, misc.DESC, 0, 0, 0xFF, CONTROL),
                    direction=IN, flags=_NO_UA),
        CommandSpec("READ(6)", rw.read_6, _u(Opcode.READ_6, 0x1F, 0xFF, 0xFF, 0xFF, CONTROL),
                    direction=IN, flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("WRITE(6)", rw.write_6, _u(Opcode.WRITE_6, 0x1F, 0xFF, 0xFF, 0xFF, CONTROL),
                    direction=OUT, flags=F.WRITES_MEDIUM,
                    data_out_length=_blocks_out(lba_and_length_6), **_IO_TIMEOUTS),
        CommandSpec("INQUIRY", inquiry.inquiry, _u(Opcode.INQUIRY, inquiry.EVPD, 0xFF, 0xFF, 0xFF, CONTROL),
                    direction=IN, flags=_NO_UA),
        CommandSpec("MODE SELECT(6)", mode.mode_select_6,
                    _u(Opcode.MODE_SELECT_6, mode.PAGE_FORMAT | mode.SAVE_PAGES, 0, 0, 0xFF, CONTROL),
                    direction=OUT, flags=_NO_MEDIUM, data_out_length=_mode_select_6_out),
        CommandSpec("RESERVE(6)", reservations.reserve, _u(Opcode.RESERVE_6, 0, 0, 0, 0, CONTROL),
                    flags=_NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("RELEASE(6)", reservations.release, _u(Opcode.RELEASE_6, 0, 0, 0, 0, CONTROL),
                    flags=F.ALLOWED_WHEN_RESERVED | _NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("MODE SENSE(6)", mode.mode_sense_6, _u(Opcode.MODE_SENSE_6, mode.DBD, 0xFF, 0xFF, 0xFF, CONTROL),
                    direction=IN, flags=_NO_MEDIUM | F.PR_READ),
        CommandSpec("START STOP UNIT", misc.start_stop_unit,
                    _u(Opcode.START_STOP_UNIT, misc.START_STOP_IMMED, 0, 0x0F, 0xF7, CONTROL), flags=_NO_MEDIUM,
                    **_SLOW_TIMEOUTS),
        CommandSpec("PREVENT ALLOW MEDIUM REMOVAL", misc.prevent_allow_medium_removal,
                    _u(Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, misc.PREVENT_FIELD, CONTROL), flags=_NO_MEDIUM),
        CommandSpec("READ CAPACITY(10)", provisioning.read_capacity_10,
                    _u(Opcode.READ_CAPACITY_10, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, CONTROL), direction=IN,
                    flags=F.PR_ALLOWED),
        CommandSpec("READ(10)", rw.read_10, _lba10(Opcode.READ_10, READ_FLAGS), direction=IN,
                    flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("WRITE(10)", rw.write_10, _lba10(Opcode.WRITE_10, WRITE_FLAGS), direction=OUT,
                    flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_10), **_IO_TIMEOUTS),
        CommandSpec("WRITE AND VERIFY(10)", rw.write_and_verify_10, _lba10(Opcode.WRITE_AND_VERIFY_10, VERIFY_FLAGS),
                    direction=OUT, flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_10), **_IO_TIMEOUTS),
        CommandSpec("VERIFY(10)", rw.verify_10, _lba10(Opcode.VERIFY_10, VERIFY_FLAGS), direction=OUT,
                    data_out_length=_verify_out(_decode_10), flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("PRE-FETCH(10)", rw.pre_fetch_10, _lba10(Opcode.PRE_FETCH_10, IMMED),
                    flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("SYNCHRONIZE CACHE(10)", rw.synchronize_cache_10, _lba10(Opcode.SYNCHRONIZE_CACHE_10, SYNC_FLAGS),
                    **_SLOW_TIMEOUTS),
        CommandSpec("READ DEFECT DATA(10)", misc.read_defect_data_10,
                    _u(Opcode.READ_DEFECT_DATA_10, 0, misc.DEFECT_REQUEST_BITS, 0, 0, 0, 0, 0xFF, 0xFF, CONTROL),
                    direction=IN, flags=F.PR_READ),
        CommandSpec("WRITE SAME(10)", provisioning.write_same_10,
                    _lba10(Opcode.WRITE_SAME_10, provisioning.UNMAP_BIT), direction=OUT, flags=F.WRITES_MEDIUM,
                    data_out_length=_write_same_out, **_SLOW_TIMEOUTS),
        CommandSpec("UNMAP", provisioning.unmap, _u(Opcode.UNMAP, 0, 0, 0, 0, 0, GROUP, 0xFF, 0xFF, CONTROL),
                    direction=OUT, flags=F.WRITES_MEDIUM, data_out_length=_unmap_out, **_SLOW_TIMEOUTS),
        CommandSpec("MODE SELECT(10)", mode.mode_select_10,
                    _u(Opcode.MODE_SELECT_10, mode.PAGE_FORMAT | mode.SAVE_PAGES, 0, 0, 0, 0, 0, 0xFF, 0xFF, CONTROL),
                    direction=OUT, flags=_NO_MEDIUM, data_out_length=_mode_select_10_out),
        CommandSpec("RESERVE(10)", reservations.reserve, _u(Opcode.RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, CONTROL),
                    flags=_NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("RELEASE(10)", reservations.release, _u(Opcode.RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, CONTROL),
                    flags=F.ALLOWED_WHEN_RESERVED | _NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("MODE SENSE(10)", mode.mode_sense_10,
                    _u(Opcode.MODE_SENSE_10, mode.LLBAA | mode.DBD, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, CONTROL),
                    direction=IN, flags=_NO_MEDIUM | F.PR_READ),
        CommandSpec("READ(16)", rw.read_16, _lba16(Opcode.READ_16, READ_FLAGS), direction=IN,
                    flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("COMPARE AND WRITE", rw.compare_and_write,
                    _u(Opcode.COMPARE_AND_WRITE, WRITE_FLAGS, *([0xFF] * 8), 0, 0, 0, 0xFF, GROUP, CONTROL),
                    direction=OUT, flags=F.WRITES_MEDIUM, data_out_length=_compare_and_write_out, **_IO_TIMEOUTS),
        CommandSpec("WRITE(16)", rw.write_16, _lba16(Opcode.WRITE_16, WRITE_FLAGS), direction=OUT,
                    flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_16), **_IO_TIMEOUTS),
        CommandSpec("ORWRITE(16)", rw.orwrite_16, _lba16(Opcode.ORWRITE_16, WRITE_FLAGS), direction=OUT,
                    flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_16), **_IO_TIMEOUTS),
        CommandSpec("WRITE AND VERIFY(16)", rw.write_and_verify_16, _lba16(Opcode.WRITE_AND_VERIFY_16, VERIFY_FLAGS),
                    direction=OUT, flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_16), **_IO_TIMEOUTS),
        CommandSpec("VERIFY(16)", rw.verify_16, _lba16(Opcode.VERIFY_16, VERIFY_FLAGS), direction=OUT,
                    data_out_length=_verify_out(_decode_16), flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("PRE-FETCH(16)", rw.pre_fetch_16, _lba16(Opcode.PRE_FETCH_16, IMMED),
                    flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("SYNCHRONIZE CACHE(16)", rw.synchronize_cache_16, _lba16(Opcode.SYNCHRONIZE_CACHE_16, SYNC_FLAGS),
                    **_SLOW_TIMEOUTS),
        CommandSpec("WRITE SAME(16)", provisioning.write_same_16,
                    _lba16(Opcode.WRITE_SAME_16, provisioning.UNMAP_BIT | provisioning.NDOB), direction=OUT,
                    flags=F.WRITES_MEDIUM, data_out_length=_write_same_out, **_SLOW_TIMEOUTS),
        CommandSpec("READ CAPACITY(16)", provisioning.read_capacity_16,
                    _u(Opcode.SERVICE_ACTION_IN_16, ServiceActionIn16.READ_CAPACITY_16, *([0xFF] * 12), 0x01, CONTROL),
                    service_action=ServiceActionIn16.READ_CAPACITY_16, direction=IN, flags=F.PR_ALLOWED),
        CommandSpec("GET LBA STATUS", provisioning.get_lba_status,
                    _u(Opcode.SERVICE_ACTION_IN_16, ServiceActionIn16.GET_LBA_STATUS, *([0xFF] * 12), 0x03, CONTROL),
                    service_action=ServiceActionIn16.GET_LBA_STATUS, direction=IN, flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("REPORT LUNS", misc.report_luns,
                    _u(Opcode.REPORT_LUNS, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CONTROL),
                    direction=IN, flags=_NO_UA),
        CommandSpec("REPORT SUPPORTED OPERATION CODES", opcodes.report_supported_operation_codes,
                    _u(Opcode.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES,
                       opcodes.RCTD | opcodes.REPORTING_OPTIONS_MASK, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                       0, CONTROL),
                    service_action=MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES, direction=IN,
                    flags=_NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("REPORT TARGET PORT GROUPS", alua.report_target_port_groups,
                    _u(Opcode.MAINTENANCE_IN, alua.PARAMETER_DATA_FORMAT_MASK | MaintenanceIn.REPORT_TARGET_PORT_GROUPS,
                       0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CONTROL),
                    service_action=MaintenanceIn.REPORT_TARGET_PORT_GROUPS, direction=IN,
                    flags=_NO_MEDIUM | F.PR_ALLOWED),
        CommandSpec("READ(12)", rw.read_12, _lba12(Opcode.READ_12, READ_FLAGS), direction=IN,
                    flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("WRITE(12)", rw.write_12, _lba12(Opcode.WRITE_12, WRITE_FLAGS), direction=OUT,
                    flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_12), **_IO_TIMEOUTS),
        CommandSpec("WRITE AND VERIFY(12)", rw.write_and_verify_12, _lba12(Opcode.WRITE_AND_VERIFY_12, VERIFY_FLAGS),
                    direction=OUT, flags=F.WRITES_MEDIUM, data_out_length=_blocks_out(_decode_12), **_IO_TIMEOUTS),
        CommandSpec("VERIFY(12)", rw.verify_12, _lba12(Opcode.VERIFY_12, VERIFY_FLAGS), direction=OUT,
                    data_out_length=_verify_out(_decode_12), flags=F.PR_READ, **_IO_TIMEOUTS),
        CommandSpec("READ DEFECT DATA(12)", misc.read_defect_data_12,
                    _u(Opcode.READ_DEFECT_DATA_12, misc.DEFECT_REQUEST_BITS, 0xFF, 0xFF, 0xFF, 0xFF,
                       0xFF, 0xFF, 0xFF, 0xFF, 0, CONTROL),
                    direction=IN, flags=F.PR_READ),
        *persistent_reservation_commands(),
    ]


def persistent_reservation_commands() -> list[CommandSpec]:
    """PERSISTENT RESERVE IN/OUT, one row per service action (SPC-4 6.15, 6.16). Both are
    PR_ALLOWED: their handlers apply SPC-4 5.13's rules themselves. Under an SPC-2 reservation
    of another I_T nexus they conflict (SPC-4 5.13.3)."""
    rows = [
        CommandSpec(f"PERSISTENT RESERVE IN ({action.name.replace('_', ' ')})", handler,
                    _u(Opcode.PERSISTENT_RESERVE_IN, action, 0, 0, 0, 0, 0, 0xFF, 0xFF, CONTROL),
                    service_action=action, direction=IN, flags=F.PR_ALLOWED | _NO_MEDIUM)
        for action, handler in persistent_reservations.IN_HANDLERS.items()
    ]
    rows += [
        CommandSpec(f"PERSISTENT RESERVE OUT ({action.name.replace('_', ' ')})",
                    persistent_reservations.persistent_reserve_out,
                    _u(Opcode.PERSISTENT_RESERVE_OUT, action, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CONTROL),
                    service_action=action, direction=OUT, flags=F.PR_ALLOWED | _NO_MEDIUM,
                    data_out_length=_persistent_reserve_out_out)
        for action in PersistentReserveOut
    ]
    return rows


def standard_command_table() -> CommandTable:
    """A fresh table of the standard commands; each LU owns one so registrations stay local."""
    return CommandTable(standard_commands())


__all__ = ["standard_command_table", "standard_commands"]
