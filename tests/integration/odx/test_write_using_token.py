"""WRITE USING TOKEN (SBC-4 5.59) through libiscsi: copies verified by reading back, within
and across LUNs, OFFSET INTO ROD, several ranges on both sides, the ROD running out, the
refusals of its parameter list (SBC-4, WRITE USING TOKEN; SPC-4 5.16.6), and RRTI / RECEIVE COPY STATUS(LID4) after it
byte for byte."""

from __future__ import annotations

import struct

import pytest

from odxtarget.copy.params import build_write_using_token_list
from tests.integration.odx.odx_support import (
    ACTION_WUT, COPY_TARGET_UNDERRUN, DELAY_COMPLETE, GOOD, INVALID_FIELD_IN_PARAMETER_LIST, LBA_OUT_OF_RANGE, MIB, OPERATION_IN_PROGRESS, RRTI_HEADER, STATUS_COMPLETED, STATUS_PARTIAL, TOO_MANY_SEGMENT_DESCRIPTORS, UNITS_BLOCKS, OdxSession, check, information,
)
from tests.support.copy_cdbs import wut_cdb
from tests.support.daemon import DaemonSpec, LunSpec

pytestmark = [pytest.mark.integration]

LUN_BLOCKS = 64 * MIB // 512


def test_copy_within_a_lun(session: OdxSession):
    source = session.fill(0, 1000, 3 * MIB, seed=1)
    before_after = session.read(0, 60000 + 3 * MIB // 512, 512)
    token = session.token(0, [(1000, 3 * MIB // 512)])
    _, result = session.write_using(0, token, [(60000, 3 * MIB // 512)])
    check(result, GOOD, "WUT")
    assert session.read(0, 60000, 3 * MIB) == source
    assert session.read(0, 1000, 3 * MIB) == source
    assert session.read(0, 60000 + 3 * MIB // 512, 512) == before_after


def test_copy_across_luns_with_several_ranges_and_an_offset(session: OdxSession):
    """The ROD is the source ranges in order; OFFSET INTO ROD skips into it; the destination
    ranges take it in their own order (SBC-4, WRITE USING TOKEN)."""
    first = session.fill(0, 8, 64 * 512, seed=2)
    second = session.fill(0, 5000, 100 * 512, seed=3)
    rod = first + second
    token = session.token(0, [(8, 64), (5000, 100)])
    _, result = session.write_using(1, token, [(300, 50), (20, 70)], offset_into_rod=10)
    check(result, GOOD, "WUT across LUNs")
    assert session.read(1, 300, 50 * 512) == rod[10 * 512:60 * 512]
    assert session.read(1, 20, 70 * 512) == rod[60 * 512:130 * 512]
    assert session.read(1, 90, 512) == bytes(512)            # untouched neighbours
    assert session.read(1, 19, 512) == bytes(512)


def test_one_token_serves_several_writes(session: OdxSession):
    data = session.fill(0, 0, 2 * MIB, seed=4)
    token = session.token(0, [(0, 4096)])
    for lun, lba in ((1, 0), (1, 10000), (0, 20000)):
        check(session.write_using(lun, token, [(lba, 4096)])[1], GOOD, f"WUT to {lun}/{lba}")
        assert session.read(lun, lba, 2 * MIB) == data


def test_rod_running_out_writes_what_there_is_and_reports_the_residual(session: OdxSession):
    """The destination asks for more than the token holds after the offset: whole blocks are
    copied, then CHECK CONDITION COPY ABORTED 0Dh/04h with INFORMATION = blocks written, and
    RRTI says 03h with that transfer count (SBC-4 4.28.2)."""
    data = session.fill(0, 0, 64 * 512, seed=5)
    old = session.fill(1, 0, 100 * 512, seed=6)
    token = session.token(0, [(0, 64)])
    list_id, result = session.write_using(1, token, [(0, 100)], offset_into_rod=4)
    check(result, COPY_TARGET_UNDERRUN, "ROD runs out")
    assert information(result) == 60
    assert session.read(1, 0, 60 * 512) == data[4 * 512:]
    assert session.read(1, 60, 40 * 512) == old[60 * 512:]
    raw = check(session.rrti(1, list_id), GOOD, "RRTI").data
    sense_field = raw[13]
    header = RRTI_HEADER.pack(len(raw) - 4, ACTION_WUT, STATUS_PARTIAL, 0, DELAY_COMPLETE, 0x02, sense_field,
                              raw[14], UNITS_BLOCKS, 60, 0)
    assert raw[:32] == header and raw[14] >= 18 and sense_field % 4 == 0
    sense = raw[32:32 + raw[14]]
    assert (sense[0], sense[2] & 0x0F, sense[12], sense[13]) == (0xF0, 0x0A, 0x0D, 0x04)
    assert struct.unpack_from(">I", sense, 3)[0] == 60
    assert raw[32 + sense_field:] == bytes(4)                  # ROD TOKEN DESCRIPTORS LENGTH 0


def test_rrti_and_receive_copy_status_after_a_good_write_byte_for_byte(session: OdxSession):
    session.fill(0, 0, 64 * 512, seed=7)
    token = session.token(0, [(0, 64)])
    list_id, result = session.write_using(1, token, [(0, 64)])
    check(result, GOOD, "WUT")
    status = check(session.rrti(1, list_id, action=0x05), GOOD, "RECEIVE COPY STATUS(LID4)").data
    assert status == RRTI_HEADER.pack(28, ACTION_WUT, STATUS_COMPLETED, 0, DELAY_COMPLETE, 0, 0, 0, UNITS_BLOCKS,
                                      64, 0)
    list_id, result = session.write_using(1, token, [(100, 64)])
    check(result, GOOD, "WUT")
    raw = check(session.rrti(1, list_id), GOOD, "RRTI").data
    assert raw == RRTI_HEADER.pack(32, ACTION_WUT, STATUS_COMPLETED, 0, DELAY_COMPLETE, 0, 0, 0, UNITS_BLOCKS,
                                   64, 0) + bytes(4)


def test_refusals(session: OdxSession):
    session.fill(0, 0, 64 * 512, seed=8)
    token = session.token(0, [(0, 64)])

    def send(data: bytes):
        return session.command(1, wut_cdb(session.next_list_id(), len(data)), data)

    good = build_write_using_token_list(token, [(0, 8)])
    check(send(struct.pack(">H", 0x225) + good[2:]), INVALID_FIELD_IN_PARAMETER_LIST, "DATA LENGTH < 226h")
    check(send(good[:540]), INVALID_FIELD_IN_PARAMETER_LIST, "list shorter than one descriptor")
    check(send(good[:534] + struct.pack(">H", 8) + bytes(16)), INVALID_FIELD_IN_PARAMETER_LIST,
          "RANGE DESCRIPTOR LENGTH < 16")
    check(send(build_write_using_token_list(token, [(0, 8)], offset_into_rod=64)),
          INVALID_FIELD_IN_PARAMETER_LIST, "OFFSET INTO ROD at the ROD's end")
    check(send(build_write_using_token_list(token, [(0, 16), (10, 16)])), INVALID_FIELD_IN_PARAMETER_LIST,
          "overlapping ranges")
    check(send(build_write_using_token_list(token, [(index * 2, 1) for index in range(65)])),
          TOO_MANY_SEGMENT_DESCRIPTORS, "65 ranges")
    check(send(build_write_using_token_list(token, [(LUN_BLOCKS - 4, 8)])), LBA_OUT_OF_RANGE, "beyond capacity")
    check(session.command(1, wut_cdb(session.next_list_id(), 0)), GOOD, "PARAMETER LIST LENGTH 0")
    assert session.read(1, 0, 64 * 512) == bytes(64 * 512)      # nothing was written by any of them


def test_a_list_identifier_in_use_answers_operation_in_progress(start_daemon):
    """A background copy holds its list identifier; reusing it on the same I_T nexus (and LU:
    results are kept per nexus, LU and list id) is OPERATION IN PROGRESS (SPC-4 5.16.4.2),
    while another nexus may use the same number."""
    daemon = start_daemon(odx={"background_step_bytes": "4K"})
    with OdxSession(daemon) as session:
        token = session.token(0, [(0, 65536)])
        list_id, result = session.write_using(1, token, [(0, 65536)], immed=True)
        check(result, GOOD, "WUT IMMED=1")
        _, again = session.populate(1, [(0, 8)], list_id=list_id)
        check(again, OPERATION_IN_PROGRESS, "same list id, same nexus and LU")
        with OdxSession(daemon, initiator_name="iqn.2026-11.org.odxtarget:other") as other:
            _, elsewhere = other.populate(1, [(0, 8)], list_id=list_id)
            check(elsewhere, GOOD, "same list id, other nexus")
        check(session.abort(1, list_id), GOOD, "COPY OPERATION ABORT")


def test_offset_into_rod_counts_destination_blocks(start_daemon):
    """A token made on a 512-byte LU, written to a 4096-byte LU: OFFSET INTO ROD 1 starts at
    ROD byte 4096, source LBA 8 (SBC-4, WRITE USING TOKEN: OFFSET INTO ROD counts destination blocks)."""
    daemon = start_daemon(DaemonSpec(luns=[LunSpec(0, 16 * MIB, 512), LunSpec(1, 16 * MIB, 4096)]))
    with OdxSession(daemon) as session:
        data = session.fill(0, 0, 64 * 512, seed=9)
        token = session.token(0, [(0, 64)])
        check(session.write_using(1, token, [(2, 3)], offset_into_rod=1)[1], GOOD, "WUT 512 -> 4096")
        assert session.read(1, 2, 3 * 4096, block_size=4096) == data[4096:4 * 4096]
