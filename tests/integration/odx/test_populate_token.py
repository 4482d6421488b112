"""POPULATE TOKEN (SBC-4 5.12) through libiscsi: every refusal of its parameter list that a PT
can provoke, with the sense SBC-4 and SPC-4 5.16.6 assign (docs/odx.md), and RECEIVE ROD TOKEN
INFORMATION after it byte for byte."""

from __future__ import annotations

import struct

import pytest

from odxtarget.copy.params import build_populate_token_list
from tests.integration.odx.odx_support import (
    ACTION_PT, DELAY_COMPLETE, GOOD, INSUFFICIENT_RESOURCES_TO_CREATE_ROD, INVALID_FIELD_IN_CDB, INVALID_FIELD_IN_PARAMETER_LIST, LBA_OUT_OF_RANGE, MIB, PARAMETER_LIST_LENGTH_ERROR, ROD_PIT_ANY, ROD_PIT_CHANGE_VULNERABLE, ROD_PIT_DEFAULT, RRTI_HEADER, STATUS_COMPLETED, TOO_MANY_SEGMENT_DESCRIPTORS, UNITS_BLOCKS, OdxSession, check,
)
from tests.support.copy_cdbs import pt_cdb

pytestmark = [pytest.mark.integration]

LUN_BLOCKS = 64 * MIB // 512
AUR = 0x0001_0000


def send(session: OdxSession, data: bytes, length: int | None = None, lun: int = 0):
    list_id = session.next_list_id()
    length = len(data) if length is None else length
    return session.command(lun, pt_cdb(list_id, length), data[:length] if length else None)


def with_data_length(data: bytes, value: int) -> bytes:
    return struct.pack(">H", value) + data[2:]


REFUSALS = [
    # (what, parameter list, expectation)
    ("POPULATE TOKEN DATA LENGTH < 1Eh",
     with_data_length(build_populate_token_list([(0, 8)]), 0x1D), INVALID_FIELD_IN_PARAMETER_LIST),
    ("INACTIVITY TIMEOUT above the maximum (600 s)",
     build_populate_token_list([(0, 8)], inactivity_timeout=601), INVALID_FIELD_IN_PARAMETER_LIST),
    ("RTV=1 with a ROD type that is not point in time",
     build_populate_token_list([(0, 8)], rod_type=AUR), INVALID_FIELD_IN_PARAMETER_LIST),
    ("RTV=1 with the zero ROD type (token in only)",
     build_populate_token_list([(0, 8)], rod_type=0xFFFF_0001), INVALID_FIELD_IN_PARAMETER_LIST),
    ("BLOCK DEVICE RANGE DESCRIPTOR LENGTH < 16",
     build_populate_token_list([(0, 8)])[:14] + struct.pack(">H", 8) + bytes(16), INVALID_FIELD_IN_PARAMETER_LIST),
    ("overlapping range descriptors",
     build_populate_token_list([(0, 16), (8, 16)]), INVALID_FIELD_IN_PARAMETER_LIST),
    ("more than 64 range descriptors",
     build_populate_token_list([(index * 2, 1) for index in range(65)]), TOO_MANY_SEGMENT_DESCRIPTORS),
    ("range beyond the capacity",
     build_populate_token_list([(LUN_BLOCKS - 4, 8)]), LBA_OUT_OF_RANGE),
]


@pytest.mark.parametrize("what,data,expected", REFUSALS, ids=[case[0] for case in REFUSALS])
def test_refusals(session: OdxSession, what: str, data: bytes, expected):
    check(send(session, data), expected, what)


def test_more_blocks_than_maximum_token_transfer_size(start_daemon):
    daemon = start_daemon(odx={"max_token_transfer_bytes": "1M", "optimal_transfer_bytes": "1M"})
    with OdxSession(daemon) as session:
        session.token(0, [(0, 1024), (4096, 1024)])                 # exactly 1 MiB: fine
        check(send(session, build_populate_token_list([(0, 1024), (4096, 1025)])),
              INVALID_FIELD_IN_PARAMETER_LIST, "1 MiB + 1 block")


def test_parameter_list_length_1_to_15_is_a_length_error(session: OdxSession):
    data = build_populate_token_list([(0, 8)])
    for length in (1, 8, 15):
        check(send(session, data, length), PARAMETER_LIST_LENGTH_ERROR, f"length {length}")


def test_parameter_list_length_0_transfers_nothing_and_is_good(session: OdxSession):
    list_id = session.next_list_id()
    check(session.command(0, pt_cdb(list_id, 0)), GOOD, "PT length 0")
    check(session.rrti(0, list_id), INVALID_FIELD_IN_CDB, "no operation was started")


def test_rrti_after_populate_token_byte_for_byte(session: OdxSession, filesystem: str):
    ranges = [(100, 8), (2000, 24), (50, 0)]          # a zero-length descriptor is skipped
    list_id, result = session.populate(0, ranges)
    check(result, GOOD, "POPULATE TOKEN")
    raw = check(session.rrti(0, list_id), GOOD, "RRTI").data
    assert len(raw) == 550
    header = RRTI_HEADER.pack(546, ACTION_PT, STATUS_COMPLETED, 0, DELAY_COMPLETE, 0, 0, 0, UNITS_BLOCKS, 32, 0)
    token = raw[38:550]
    assert raw == header + struct.pack(">IH", 514, 0) + token
    # The token (SPC-4 5.16.6.2): type, length, creator = this LU's NAA designator, size.
    expected_type = ROD_PIT_DEFAULT if filesystem == "xfs" else ROD_PIT_CHANGE_VULNERABLE
    assert struct.unpack_from(">I2xH", token, 0) == (expected_type, 0x01F8)
    designator = naa_designator(session, 0)
    assert token[16] == 0xE4 and token[23] == len(designator) and token[24:24 + len(designator)] == designator
    assert struct.unpack_from(">I", token, 45 - 1)[0] & 0xFFFFFF == 512     # DISK BLOCK LENGTH
    assert int.from_bytes(token[48:64], "big") == 32 * 512
    assert struct.unpack_from(">I", token, 96)[0] == 512
    assert len(set(token[256:])) > 100                                      # random, not padding


def test_rrti_results_go_once_delivered_and_honour_the_allocation_length(session: OdxSession):
    list_id, result = session.populate(0, [(0, 8)])
    check(result, GOOD, "POPULATE TOKEN")
    short = check(session.rrti(0, list_id, allocation=20), GOOD, "RRTI, 20 bytes").data
    assert len(short) == 20 and struct.unpack_from(">IBB", short) == (546, ACTION_PT, STATUS_COMPLETED)
    check(session.rrti(0, list_id), INVALID_FIELD_IN_CDB, "delivered results are gone")


def test_rrti_on_another_lun_or_nexus_knows_nothing(session: OdxSession):
    list_id, result = session.populate(0, [(0, 8)])
    check(result, GOOD, "POPULATE TOKEN")
    check(session.rrti(1, list_id), INVALID_FIELD_IN_CDB, "other LUN")
    with OdxSession(session.daemon, initiator_name="iqn.2026-11.org.odxtarget:other") as other:
        check(other.rrti(0, list_id), INVALID_FIELD_IN_CDB, "other I_T nexus")
    check(session.rrti(0, list_id), GOOD, "the owner still gets its result")


def test_rtv_any_and_change_vulnerable_requests(session: OdxSession, filesystem: str):
    best = ROD_PIT_DEFAULT if filesystem == "xfs" else ROD_PIT_CHANGE_VULNERABLE
    for requested, issued in ((ROD_PIT_ANY, best), (ROD_PIT_DEFAULT, best),
                              (ROD_PIT_CHANGE_VULNERABLE, ROD_PIT_CHANGE_VULNERABLE)):
        token = session.token(0, [(0, 8)], rod_type=requested)
        assert struct.unpack_from(">I", token)[0] == issued, hex(requested)


@pytest.mark.parametrize("filesystem", ["xfs"])
def test_rod_space_cap_answers_insufficient_resources(start_daemon, filesystem: str):
    """Snapshot tokens pin space; past ``max_rod_bytes`` PT says 55h/0Ch (XFS only: on ext4
    tokens are cancel-on-write and pin nothing)."""
    daemon = start_daemon(odx={"max_rod_bytes": "1M", "max_rod_bytes_per_initiator": "1M"})
    with OdxSession(daemon) as session:
        session.token(0, [(0, 1024)])                            # 512 KiB: fits
        _, result = session.populate(0, [(4096, 2048)])          # 1 MiB more: does not
        check(result, INSUFFICIENT_RESOURCES_TO_CREATE_ROD, "beyond the ROD space cap")
        change_vulnerable = session.token(0, [(4096, 2048)], rod_type=ROD_PIT_CHANGE_VULNERABLE)
        assert struct.unpack_from(">I", change_vulnerable)[0] == ROD_PIT_CHANGE_VULNERABLE


def naa_designator(session: OdxSession, lun: int) -> bytes:
    page = check(session.session.inquiry(lun, 0x83, 255), GOOD, "INQUIRY 83h").data
    offset = 4
    while offset + 4 <= len(page):
        kind, length = page[offset + 1] & 0x3F, page[offset + 3]
        if kind == 0x03:              # association LU, designator type NAA
            return page[offset + 4:offset + 4 + length]
        offset += 4 + length
    raise AssertionError("no NAA designator in VPD 83h")
