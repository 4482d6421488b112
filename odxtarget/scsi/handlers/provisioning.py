"""Capacity and thin provisioning: READ CAPACITY(10/16), WRITE SAME(10/16), UNMAP, GET LBA
STATUS (SBC-4 4.7, 5.x).

The LU is thin provisioned with LBPRZ=1: deallocated blocks read as zeros (the backend
contract). WRITE SAME with UNMAP deallocates the range whatever the data-out block holds
(SBC-4 4.7.3.5 lets the device server unmap; libiscsi's UnmapUntilEnd sends FFh blocks with
UNMAP and expects zeros back).
Logical blocks per physical block exponent stays 0: libiscsi's GetLBAStatus.UnmapSingle
expects the first descriptor at LBA i+LBPPB when asking for i+1, which only agrees with
SBC-4 when LBPPB is 1.
"""

from __future__ import annotations

import struct

from odxtarget.scsi import dataout
from odxtarget.scsi.cdb import LBA32_LEN16, LBA64, LBA64_LEN32, U16, U32
from odxtarget.scsi.constants import ProvisioningStatus
from odxtarget.scsi.errors import (InvalidFieldInCdb, InvalidFieldInParameterList, InvalidOpcode, LbaOutOfRange,
                                   ParameterListLengthError)
from odxtarget.scsi.execution import StorageCall, Steps
from odxtarget.scsi.types import ScsiResult, Status

GOOD = Status.GOOD

# READ CAPACITY(16) byte 14 (SBC-4 5.16.2).
LBPME = 0x80
LBPRZ = 0x40
READ_CAPACITY_16_LENGTH = 32
READ_CAPACITY_10_MAX_LBA = 0xFFFFFFFF

# WRITE SAME byte 1 (SBC-4 5.x).
UNMAP_BIT = 0x08
NDOB = 0x01
_WRITE_SAME_CHUNK_BYTES = 1024 * 1024

_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")
UNMAP_HEADER_LENGTH = 8
UNMAP_DESCRIPTOR_LENGTH = 16

_LBA_STATUS_DESCRIPTOR = struct.Struct(">QIB3x")
GET_LBA_STATUS_HEADER_LENGTH = 8
#: How far one GET LBA STATUS looks ahead; it may report less than the rest of the LU (SBC-4 5.6).
GET_LBA_STATUS_WINDOW_BYTES = 16 * 1024 * 1024
GET_LBA_STATUS_MAX_DESCRIPTORS = 256


def _cut(data: bytes | bytearray, allocation_length: int) -> ScsiResult:
    data = data[:allocation_length]
    return ScsiResult(GOOD, data, b"", len(data))


# -- READ CAPACITY ----------------------------------------------------------------------------

def read_capacity_10(lu, command, target) -> ScsiResult:
    last_lba = min(lu.block_count - 1, READ_CAPACITY_10_MAX_LBA)
    data = struct.pack(">II", last_lba, lu.block_size)
    return ScsiResult(GOOD, data, b"", len(data))


def read_capacity_16(lu, command, target) -> ScsiResult:
    allocation_length = U32.unpack_from(command.cdb, 10)[0]
    data = bytearray(READ_CAPACITY_16_LENGTH)
    struct.pack_into(">QI", data, 0, lu.block_count - 1, lu.block_size)
    data[13] = lu.blocks_per_physical_block_exponent  # P_I_EXPONENT 0 in the high nibble
    if lu.thin_provisioned:
        data[14] = LBPME | LBPRZ
    return _cut(data, allocation_length)


# -- WRITE SAME -------------------------------------------------------------------------------

def _write_same(lu, command, lba: int, blocks: int, length_byte: int, ndob: bool) -> ScsiResult | Steps:
    """SBC-4 5.x. WSNZ=0 (Block Limits): 0 blocks means "to the end of the medium", which must
    still fit MAXIMUM WRITE SAME LENGTH; ANCHOR is refused by the usage mask (ANC_SUP=0)."""
    cdb = command.cdb
    if cdb[1] & UNMAP_BIT and not lu.thin_provisioned:
        # LBPWS=0 (VPD B2h): this LU does not unmap, so the UNMAP bit is an invalid field.
        raise InvalidFieldInCdb(1, 3, "UNMAP: the logical unit is not thin provisioned (LBPWS=0)")
    if lba > lu.block_count or lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)
    if not blocks:
        blocks = lu.block_count - lba
    if blocks > lu.max_write_same_blocks:
        raise InvalidFieldInCdb(length_byte, None, f"{blocks} blocks exceed MAXIMUM WRITE SAME LENGTH")
    block_size = lu.block_size
    if ndob:
        dataout.exact(command, 0, length_byte)
        pattern = bytes(block_size)
    else:
        pattern = bytes(dataout.exact(command, block_size, length_byte))
    transfer_length = 0 if ndob else block_size
    if not blocks:
        return ScsiResult(GOOD, b"", b"", transfer_length)
    if cdb[1] & UNMAP_BIT:  # unmap whatever the pattern (as LIO; libiscsi WriteSame*.UnmapUntilEnd sends FFh)
        return _deallocated(lu, [(lba, blocks)], transfer_length)
    return _pattern_written(lu, lba, blocks, pattern, transfer_length)


def _pattern_written(lu, lba: int, blocks: int, pattern: bytes, transfer_length: int) -> Steps:
    """One piece of storage work per chunk of 1 MiB, so a long WRITE SAME holds no worker long."""
    block_size = lu.block_size
    chunk_blocks = max(1, min(blocks, _WRITE_SAME_CHUNK_BYTES // block_size))
    chunk = pattern * chunk_blocks
    done = 0
    while done < blocks:  # a failure reports the first LBA of the chunk that failed
        count = min(chunk_blocks, blocks - done)
        yield from lu.write_blocks(lba + done, chunk if count == chunk_blocks else chunk[:count * block_size],
                                   fua=False)
        done += count
    return ScsiResult(GOOD, b"", b"", transfer_length)


def _deallocated(lu, extents: list[tuple[int, int]], transfer_length: int) -> Steps:
    for lba, blocks in extents:
        yield from lu.deallocate_blocks(lba, blocks)
    return ScsiResult(GOOD, b"", b"", transfer_length)


def write_same_10(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    return _write_same(lu, command, lba, blocks, 7, False)


def write_same_16(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    lba, blocks = LBA64_LEN32.unpack_from(cdb)
    return _write_same(lu, command, lba, blocks, 10, bool(cdb[1] & NDOB))


# -- UNMAP ------------------------------------------------------------------------------------

def unmap(lu, command, target) -> ScsiResult | Steps:
    """SBC-4 5.30: validate every descriptor first, then deallocate (all or nothing)."""
    if not lu.thin_provisioned:
        # LBPU=0 (VPD B2h): the storage cannot free blocks; UNMAP is not a command of this LU.
        raise InvalidOpcode(command.cdb[0])
    parameter_list_length = U16.unpack_from(command.cdb, 7)[0]
    if not parameter_list_length:
        return ScsiResult()
    if parameter_list_length < UNMAP_HEADER_LENGTH:
        raise ParameterListLengthError(f"UNMAP parameter list length {parameter_list_length} < 8")
    data = dataout.take(command, parameter_list_length)
    data_length = U16.unpack_from(data, 0)[0]
    descriptors_length = U16.unpack_from(data, 2)[0]
    if data_length > parameter_list_length - 2 or descriptors_length > parameter_list_length - UNMAP_HEADER_LENGTH:
        raise ParameterListLengthError("UNMAP data lengths exceed the parameter list")
    count = descriptors_length // UNMAP_DESCRIPTOR_LENGTH  # a partial last descriptor is ignored
    if count > lu.max_unmap_descriptors:
        raise InvalidFieldInParameterList(2, None, f"{count} UNMAP descriptors exceed the maximum")
    extents = []
    for index in range(count):
        offset = UNMAP_HEADER_LENGTH + index * UNMAP_DESCRIPTOR_LENGTH
        lba, blocks = _UNMAP_DESCRIPTOR.unpack_from(data, offset)
        if lba + blocks > lu.block_count:
            raise LbaOutOfRange(lba)
        if blocks > lu.max_unmap_blocks:
            raise InvalidFieldInParameterList(offset + 8, None, f"{blocks} blocks exceed MAXIMUM UNMAP LBA COUNT")
        if blocks:
            extents.append((lba, blocks))
    return _deallocated(lu, extents, parameter_list_length)


def unmap_data_out_length(cdb: bytes, block_size: int) -> int:
    return U16.unpack_from(cdb, 7)[0]


# -- GET LBA STATUS ---------------------------------------------------------------------------

def block_runs(runs, block_size: int) -> list[list]:
    """Turn byte runs into block runs ``[first, end, mapped]``; a block that is partly mapped
    counts as mapped."""
    out: list[list] = []
    for run in runs:
        first = run.offset // block_size
        end = -(-(run.offset + run.length) // block_size)
        if out and out[-1][1] > first:  # the runs share a block
            if run.mapped and not out[-1][2]:
                out[-1][1] = first
                if out[-1][1] <= out[-1][0]:
                    out.pop()
            else:
                first = out[-1][1]
        if first >= end:
            continue
        if out and out[-1][2] == run.mapped and out[-1][1] == first:
            out[-1][1] = end
        else:
            out.append([first, end, run.mapped])
    return out


def get_lba_status(lu, command, target) -> Steps:
    cdb = command.cdb
    (lba,) = LBA64.unpack_from(cdb)
    allocation_length = U32.unpack_from(cdb, 10)[0]
    if lba >= lu.block_count:
        raise LbaOutOfRange(lba)
    block_size = lu.block_size
    window = min((lu.block_count - lba) * block_size, GET_LBA_STATUS_WINDOW_BYTES)
    backend = lu.backend
    try:   # SEEK_DATA / SEEK_HOLE may read the file's extent tree from disk
        runs = yield StorageCall(backend.lane, backend.allocation_status, (lba * block_size, window))
    except OSError as exc:
        raise lu.read_error(lba, exc) from exc
    descriptors = block_runs(runs, block_size)[:GET_LBA_STATUS_MAX_DESCRIPTORS]
    if not descriptors:  # a backend that reports nothing: call it mapped
        descriptors = [[lba, lba + window // block_size, True]]
    data = bytearray(GET_LBA_STATUS_HEADER_LENGTH + 16 * len(descriptors))
    struct.pack_into(">I", data, 0, len(data) - 4)
    for index, (first, end, mapped) in enumerate(descriptors):
        status = ProvisioningStatus.MAPPED if mapped else ProvisioningStatus.DEALLOCATED
        _LBA_STATUS_DESCRIPTOR.pack_into(data, GET_LBA_STATUS_HEADER_LENGTH + 16 * index,
                                         first, end - first, status)
    return _cut(data, allocation_length)
