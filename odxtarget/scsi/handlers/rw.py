"""Block I/O: READ, WRITE, WRITE AND VERIFY, VERIFY, ORWRITE, COMPARE AND WRITE, PRE-FETCH,
SYNCHRONIZE CACHE (SBC-4 5.x).

READ and WRITE are the hot path (tens of thousands per second): one struct unpack, one range
check, one bytearray filled in place; no logging, no copies of the data-out buffer. A READ
whose data is cached completes at once (``LogicalUnit.read_blocks_now``); any other storage
access is a generator of storage work that the front end runs off its thread
(``execution.py``, docs/execution.md). Storage goes through the LU's ``read_blocks`` /
``write_blocks`` / ``compare_and_write_blocks`` / ``synchronize_cache``, which own the error
mapping and the write-back failed state (docs/errors.md).
"""

from __future__ import annotations

from odxtarget.scsi import dataout
from odxtarget.scsi.cdb import (BYTCHK_MASK, BYTCHK_SHIFT, FUA, LBA32_LEN16, LBA32_LEN32, LBA64,
                                LBA64_LEN32, lba_and_length_6)
from odxtarget.scsi.errors import InvalidFieldInCdb, LbaOutOfRange, Miscompare
from odxtarget.scsi.execution import Steps
from odxtarget.scsi.types import ScsiResult, Status
from odxtarget.storage.range_lock import first_difference

GOOD = Status.GOOD


# -- READ -------------------------------------------------------------------------------------

def _read(lu, lba: int, blocks: int, length_byte: int) -> ScsiResult | Steps:
    if lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)
    if blocks > lu.max_transfer_blocks:
        raise InvalidFieldInCdb(length_byte, None, f"transfer length {blocks} exceeds the maximum")
    if not blocks:
        return ScsiResult()
    buf = bytearray(blocks * lu.block_size)
    if lu.read_blocks_now(lba, memoryview(buf)):
        return ScsiResult(GOOD, buf, b"", len(buf))
    return _read_from_disk(lu, lba, buf)


def _read_from_disk(lu, lba: int, buf: bytearray) -> Steps:
    yield from lu.read_blocks(lba, buf, cached=False)
    return ScsiResult(GOOD, buf, b"", len(buf))


def read_6(lu, command, target) -> ScsiResult:
    lba, blocks = lba_and_length_6(command.cdb)
    return _read(lu, lba, blocks, 4)


def read_10(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    return _read(lu, lba, blocks, 7)


def read_12(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN32.unpack_from(command.cdb)
    return _read(lu, lba, blocks, 6)


def read_16(lu, command, target) -> ScsiResult:
    lba, blocks = LBA64_LEN32.unpack_from(command.cdb)
    return _read(lu, lba, blocks, 10)


# -- WRITE ------------------------------------------------------------------------------------

def _write(lu, command, lba: int, blocks: int, fua: int, length_byte: int) -> ScsiResult | Steps:
    if lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)
    if blocks > lu.max_transfer_blocks:
        raise InvalidFieldInCdb(length_byte, None, f"transfer length {blocks} exceeds the maximum")
    block_size = lu.block_size
    required = blocks * block_size
    data = command.data_out
    if len(data) != required:
        if not required:
            return ScsiResult()
        data, blocks = dataout.whole_blocks(command, required, block_size)
    if not blocks:
        return ScsiResult(GOOD, b"", b"", required)
    return _written(lu, lba, data, bool(fua), required)


def _written(lu, lba: int, data, fua: bool, required: int) -> Steps:
    yield from lu.write_blocks(lba, data, fua=fua)
    return ScsiResult(GOOD, b"", b"", required)


def write_6(lu, command, target) -> ScsiResult:
    lba, blocks = lba_and_length_6(command.cdb)
    return _write(lu, command, lba, blocks, 0, 4)


def write_10(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    lba, blocks = LBA32_LEN16.unpack_from(cdb)
    return _write(lu, command, lba, blocks, cdb[1] & FUA, 7)


def write_12(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    lba, blocks = LBA32_LEN32.unpack_from(cdb)
    return _write(lu, command, lba, blocks, cdb[1] & FUA, 6)


def write_16(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    lba, blocks = LBA64_LEN32.unpack_from(cdb)
    return _write(lu, command, lba, blocks, cdb[1] & FUA, 10)


# -- comparing --------------------------------------------------------------------------------

def _read_blocks(lu, lba: int, blocks: int) -> Steps:
    buf = bytearray(blocks * lu.block_size)
    yield from lu.read_blocks(lba, buf)
    return buf


def _check_range(lu, lba: int, blocks: int, length_byte: int) -> None:
    if lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)
    if blocks > lu.max_transfer_blocks:
        raise InvalidFieldInCdb(length_byte, None, f"transfer length {blocks} exceeds the maximum")


# -- VERIFY -----------------------------------------------------------------------------------

BYTCHK_NONE = 0
BYTCHK_COMPARE = 1
BYTCHK_RESERVED = 2
BYTCHK_SINGLE_BLOCK = 3


def _verify(lu, command, lba: int, blocks: int, length_byte: int) -> ScsiResult | Steps:
    """SBC-4 5.x VERIFY: BYTCHK 00b medium check only, 01b compare all, 11b compare every block
    with one data-out block; a miscompare reports the data-out offset in INFORMATION."""
    bytchk = (command.cdb[1] >> BYTCHK_SHIFT) & BYTCHK_MASK
    _check_range(lu, lba, blocks, length_byte)
    if bytchk == BYTCHK_RESERVED:
        raise InvalidFieldInCdb(1, 2, "BYTCHK 10b is reserved")
    if bytchk == BYTCHK_NONE or not blocks:
        return ScsiResult()
    block_size = lu.block_size
    required = blocks * block_size if bytchk == BYTCHK_COMPARE else block_size
    expected = dataout.take(command, required)
    return _compared(lu, lba, blocks, bytchk, expected, required)


def _compared(lu, lba: int, blocks: int, bytchk: int, expected, required: int) -> Steps:
    block_size = lu.block_size
    medium = yield from _read_blocks(lu, lba, blocks)
    if bytchk == BYTCHK_COMPARE:
        offset = first_difference(medium, expected)
    else:
        offset = -1
        view = memoryview(medium)
        for block in range(blocks):
            start = block * block_size
            offset = first_difference(view[start:start + block_size], expected)
            if offset >= 0:
                offset += start
                break
    if offset >= 0:
        raise Miscompare(offset)
    return ScsiResult(GOOD, b"", b"", required)


def verify_10(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    return _verify(lu, command, lba, blocks, 7)


def verify_12(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN32.unpack_from(command.cdb)
    return _verify(lu, command, lba, blocks, 6)


def verify_16(lu, command, target) -> ScsiResult:
    lba, blocks = LBA64_LEN32.unpack_from(command.cdb)
    return _verify(lu, command, lba, blocks, 10)


# -- WRITE AND VERIFY -------------------------------------------------------------------------

def _write_and_verify(lu, command, lba: int, blocks: int, length_byte: int) -> ScsiResult | Steps:
    """SBC-4 5.x: write, then (BYTCHK 01b) read back and compare; BYTCHK 1xb is not defined."""
    bytchk = (command.cdb[1] >> BYTCHK_SHIFT) & BYTCHK_MASK
    if bytchk > BYTCHK_COMPARE:
        raise InvalidFieldInCdb(1, 2, f"BYTCHK {bytchk:02b}b not supported for WRITE AND VERIFY")
    write = _write(lu, command, lba, blocks, FUA, length_byte)
    if isinstance(write, ScsiResult):
        return write
    return _written_and_verified(lu, command, lba, blocks, bytchk, write)


def _written_and_verified(lu, command, lba: int, blocks: int, bytchk: int, write: Steps) -> Steps:
    result = yield from write
    if bytchk == BYTCHK_COMPARE and len(command.data_out) >= blocks * lu.block_size:
        written = memoryview(command.data_out)[:blocks * lu.block_size]
        medium = yield from _read_blocks(lu, lba, blocks)
        offset = first_difference(medium, written)
        if offset >= 0:
            raise Miscompare(offset)
    return result


def write_and_verify_10(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    return _write_and_verify(lu, command, lba, blocks, 7)


def write_and_verify_12(lu, command, target) -> ScsiResult:
    lba, blocks = LBA32_LEN32.unpack_from(command.cdb)
    return _write_and_verify(lu, command, lba, blocks, 6)


def write_and_verify_16(lu, command, target) -> ScsiResult:
    lba, blocks = LBA64_LEN32.unpack_from(command.cdb)
    return _write_and_verify(lu, command, lba, blocks, 10)


# -- ORWRITE ----------------------------------------------------------------------------------

def orwrite_16(lu, command, target) -> ScsiResult | Steps:
    """SBC-4 5.x ORWRITE(16) with BMOP 000b: the medium becomes medium OR data-out."""
    cdb = command.cdb
    lba, blocks = LBA64_LEN32.unpack_from(cdb)
    _check_range(lu, lba, blocks, 10)
    if not blocks:
        return ScsiResult()
    required = blocks * lu.block_size
    data = dataout.take(command, required)
    return _or_written(lu, lba, blocks, data, bool(cdb[1] & FUA), required)


def _or_written(lu, lba: int, blocks: int, data, fua: bool, required: int) -> Steps:
    medium = yield from _read_blocks(lu, lba, blocks)
    merged = (int.from_bytes(medium, "big") | int.from_bytes(data, "big")).to_bytes(required, "big")
    yield from lu.write_blocks(lba, merged, fua=fua)
    return ScsiResult(GOOD, b"", b"", required)


# -- COMPARE AND WRITE ------------------------------------------------------------------------

CAW_LENGTH_BYTE = 13


def compare_and_write(lu, command, target) -> ScsiResult | Steps:
    """SBC-4 5.3: compare NUMBER OF LOGICAL BLOCKS with the first half of the data-out, write the
    second half if equal. Atomic against every other write: the backend compares and writes
    under its range lock (``Backend.compare_and_write``)."""
    cdb = command.cdb
    (lba,) = LBA64.unpack_from(cdb)
    blocks = cdb[CAW_LENGTH_BYTE]
    if blocks > lu.max_compare_and_write_blocks:
        raise InvalidFieldInCdb(CAW_LENGTH_BYTE, None, f"{blocks} blocks exceed MAXIMUM COMPARE AND WRITE LENGTH")
    if lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)
    half = blocks * lu.block_size
    data = dataout.exact(command, 2 * half, CAW_LENGTH_BYTE)
    if not blocks:
        return ScsiResult()
    return _compared_and_written(lu, lba, memoryview(data), half, bool(cdb[1] & FUA))


def _compared_and_written(lu, lba: int, view: memoryview, half: int, fua: bool) -> Steps:
    offset = yield from lu.compare_and_write_blocks(lba, view[:half], view[half:], fua=fua)
    if offset >= 0:
        raise Miscompare(offset)
    return ScsiResult(GOOD, b"", b"", 2 * half)


# -- PRE-FETCH, SYNCHRONIZE CACHE -------------------------------------------------------------

def _range_to_end(lu, lba: int, blocks: int) -> None:
    """Range check where NUMBER OF LOGICAL BLOCKS 0 means "to the end of the medium"."""
    if lba > lu.block_count or lba + blocks > lu.block_count:
        raise LbaOutOfRange(lba)


def pre_fetch_10(lu, command, target) -> ScsiResult:
    """SBC-4 5.x: nothing to stage (the backend is the page cache); GOOD, never CONDITION MET,
    which libiscsi's Prefetch tests would count as a failure."""
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    _range_to_end(lu, lba, blocks)
    return ScsiResult()


def pre_fetch_16(lu, command, target) -> ScsiResult:
    lba, blocks = LBA64_LEN32.unpack_from(command.cdb)
    _range_to_end(lu, lba, blocks)
    return ScsiResult()


def _synchronize(lu, lba: int, blocks: int) -> Steps:
    """SBC-4 5.24: the backing files that hold the range are flushed; a failure names no LBA,
    since which blocks were lost is not known."""
    _range_to_end(lu, lba, blocks)
    yield from lu.synchronize_cache(lba, blocks)
    return ScsiResult()


def synchronize_cache_10(lu, command, target) -> Steps:
    lba, blocks = LBA32_LEN16.unpack_from(command.cdb)
    return _synchronize(lu, lba, blocks)


def synchronize_cache_16(lu, command, target) -> Steps:
    lba, blocks = LBA64_LEN32.unpack_from(command.cdb)
    return _synchronize(lu, lba, blocks)
