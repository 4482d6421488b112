"""CDBs of the third-party copy commands and READ/WRITE(16), for tests that send them raw.

THIRD-PARTY COPY OUT (83h) and IN (84h) layouts are SBC-4 5.11/5.32 and SPC-4 6.3/6.18
(the reference's section 2): LID4 commands put the LIST IDENTIFIER at byte 2 (IN) or 6 (OUT),
LID1 ones a one-byte identifier at byte 2.
"""

from __future__ import annotations

import struct

THIRD_PARTY_COPY_OUT, THIRD_PARTY_COPY_IN = 0x83, 0x84
EXTENDED_COPY_LID1, POPULATE_TOKEN, WRITE_USING_TOKEN, COPY_OPERATION_ABORT = 0x00, 0x10, 0x11, 0x1C
RECEIVE_ROD_TOKEN_INFORMATION, REPORT_ALL_ROD_TOKENS = 0x07, 0x08


def pt_cdb(list_id: int, length: int) -> bytes:
    return struct.pack(">BB4xII2x", THIRD_PARTY_COPY_OUT, POPULATE_TOKEN, list_id, length)


def wut_cdb(list_id: int, length: int) -> bytes:
    return struct.pack(">BB4xII2x", THIRD_PARTY_COPY_OUT, WRITE_USING_TOKEN, list_id, length)


def coa_cdb(list_id: int) -> bytes:
    return struct.pack(">BBI10x", THIRD_PARTY_COPY_OUT, COPY_OPERATION_ABORT, list_id)


def xcopy_cdb(length: int) -> bytes:
    return struct.pack(">BB8xI2x", THIRD_PARTY_COPY_OUT, EXTENDED_COPY_LID1, length)


def lid4_in_cdb(action: int, list_id: int, allocation: int) -> bytes:
    """RECEIVE ROD TOKEN INFORMATION (07h) and the other LID4 copy-in service actions."""
    return struct.pack(">BBI4xI2x", THIRD_PARTY_COPY_IN, action, list_id, allocation)


def rrti_cdb(list_id: int, allocation: int = 1024, action: int = RECEIVE_ROD_TOKEN_INFORMATION) -> bytes:
    return lid4_in_cdb(action, list_id, allocation)


def lid1_cdb(action: int, list_id: int = 0, allocation: int = 1024) -> bytes:
    """RECEIVE COPY STATUS / DATA / OPERATING PARAMETERS / FAILURE DETAILS (LID1)."""
    return struct.pack(">BBB7xI2x", THIRD_PARTY_COPY_IN, action, list_id, allocation)


def rart_cdb(allocation: int) -> bytes:
    return struct.pack(">BB8xI2x", THIRD_PARTY_COPY_IN, REPORT_ALL_ROD_TOKENS, allocation)


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)
