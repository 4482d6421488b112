"""PDU codec and framer: one case table for pack and unpack, parsed whole, byte by byte and
with trailing data (h11 style), plus Hypothesis round trips and digest checks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odxtarget.transport.iscsi import pdu as P

u32 = st.integers(0, 0xFFFFFFFF)
lun8 = st.binary(min_size=8, max_size=8)
payload = st.binary(max_size=300)

CASES = [
    P.NopOut(immediate=True, lun=P.encode_lun(3), initiator_task_tag=7, target_transfer_tag=P.RESERVED_TAG,
             cmd_sn=9, exp_stat_sn=10, data=b"ping!"),
    P.ScsiCommandPdu(immediate=False, final=True, read=True, write=False, task_attribute=1, lun=P.encode_lun(300),
                     initiator_task_tag=0x1234, expected_data_transfer_length=4096, cmd_sn=5, exp_stat_sn=6,
                     cdb=bytes(range(16))),
    P.ScsiCommandPdu(write=True, final=False, initiator_task_tag=1, expected_data_transfer_length=512,
                     cdb=bytes(range(32)), data=b"x" * 13),
    P.ScsiCommandPdu(read=True, write=True, cdb=bytes(16), bidirectional_read_length=4096),
    P.TaskManagementRequest(immediate=True, function=5, lun=P.encode_lun(1), initiator_task_tag=2,
                            referenced_task_tag=3, cmd_sn=4, exp_stat_sn=5, ref_cmd_sn=6, exp_data_sn=7),
    P.LoginRequest(transit=True, cont=False, csg=1, nsg=3, version_max=0, version_min=0,
                   isid=bytes.fromhex("80123456789a"), tsih=0, initiator_task_tag=1, cid=2, cmd_sn=3, exp_stat_sn=4,
                   data=b"InitiatorName=iqn.x\0"),
    P.TextRequest(final=True, cont=False, initiator_task_tag=8, target_transfer_tag=P.RESERVED_TAG, cmd_sn=1,
                  data=b"SendTargets=All\0"),
    P.DataOut(final=True, lun=P.encode_lun(0), initiator_task_tag=5, target_transfer_tag=6, exp_stat_sn=7,
              data_sn=8, buffer_offset=512, data=b"d" * 511),
    P.LogoutRequest(immediate=True, reason=P.LogoutReason.CLOSE_CONNECTION, initiator_task_tag=9, cid=1, cmd_sn=2,
                    exp_stat_sn=3),
    P.SnackRequest(snack_type=1, initiator_task_tag=4, target_transfer_tag=5, exp_stat_sn=6, beg_run=7,
                   run_length=8),
    P.NopIn(initiator_task_tag=P.RESERVED_TAG, target_transfer_tag=77, stat_sn=1, exp_cmd_sn=2, max_cmd_sn=3),
    P.ScsiResponse(residual_underflow=True, status=2, initiator_task_tag=5, stat_sn=6, exp_cmd_sn=7, max_cmd_sn=8,
                   exp_data_sn=1, residual_count=100, data=P.sense_segment(bytes(18))),
    P.TaskManagementResponse(response=P.TmfResponse.TASK_DOES_NOT_EXIST, initiator_task_tag=3, stat_sn=4,
                             exp_cmd_sn=5, max_cmd_sn=6),
    P.LoginResponse(transit=True, csg=1, nsg=3, isid=bytes(6), tsih=12, initiator_task_tag=1, stat_sn=2,
                    exp_cmd_sn=3, max_cmd_sn=4, status_class=2, status_detail=1, data=b"a=b\0"),
    P.TextResponse(final=False, cont=True, initiator_task_tag=1, target_transfer_tag=2, stat_sn=3, data=b"k=v\0"),
    P.DataIn(final=True, has_status=True, residual_overflow=True, status=0, initiator_task_tag=2, stat_sn=3,
             data_sn=4, buffer_offset=8192, residual_count=9, data=b"z" * 4097),
    P.LogoutResponse(response=0, initiator_task_tag=1, stat_sn=2, exp_cmd_sn=3, max_cmd_sn=4, time2wait=2,
                     time2retain=20),
    P.ReadyToTransfer(initiator_task_tag=1, target_transfer_tag=2, stat_sn=3, exp_cmd_sn=4, max_cmd_sn=5, r2t_sn=6,
                      buffer_offset=7, desired_data_transfer_length=8),
    P.AsyncMessage(async_event=P.AsyncEvent.LOGOUT_REQUESTED, parameter3=5, stat_sn=1),
    P.Reject(reason=P.RejectReason.INVALID_PDU_FIELD, stat_sn=1, exp_cmd_sn=2, max_cmd_sn=3, data=bytes(48)),
]


def wire(pdu, hd=False, dd=False) -> bytes:
    return b"".join(bytes(b) for b in P.encode_pdu(pdu, hd, dd))


def normalise(pdu):
    """Data fields come back as memoryviews; compare as bytes."""
    if hasattr(pdu, "data"):
        pdu.data = bytes(pdu.data)
    return pdu


def test_every_opcode_has_a_class_and_a_48_byte_layout():
    assert set(P.PDU_CLASSES) == set(P.Opcode)
    for cls in P.PDU_CLASSES.values():
        assert cls._S.size == P.BHS_SIZE


@pytest.mark.parametrize("digests", [(False, False), (True, True), (True, False), (False, True)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: type(c).__name__)
def test_round_trip_whole_bytewise_and_with_trailing_data(case, digests):
    data = wire(case, *digests)
    assert len(data) % 4 == 0
    # whole
    framer = P.PduFramer(1 << 24, *digests)
    (raw,) = framer.feed(data)
    assert not raw.data_digest_error
    assert normalise(raw.decode()) == case
    # byte by byte
    framer = P.PduFramer(1 << 24, *digests)
    got = []
    for i in range(len(data)):
        got += framer.feed(data[i:i + 1])
    assert [normalise(r.decode()) for r in got] == [case]
    assert framer.buffered == 0
    # followed by the start of another PDU
    framer = P.PduFramer(1 << 24, *digests)
    got = framer.feed(data + data[:20])
    assert [normalise(r.decode()) for r in got] == [case]
    assert framer.buffered == 20
    assert [normalise(r.decode()) for r in framer.feed(data[20:])] == [case]


def test_many_pdus_in_one_chunk_split_at_every_offset():
    stream = b"".join(wire(c) for c in CASES[:6])
    for cut in range(0, len(stream), 7):
        framer = P.PduFramer(1 << 24)
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert [normalise(r.decode()) for r in got] == CASES[:6]


@settings(max_examples=150, deadline=None)
@given(immediate=st.booleans(), final=st.booleans(), read=st.booleans(), write=st.booleans(),
       attr=st.integers(0, 7), lun=lun8, itt=u32, edtl=u32, cmd_sn=u32, exp=u32,
       cdb=st.binary(min_size=16, max_size=260), data=payload, hd=st.booleans(), dd=st.booleans())
def test_scsi_command_round_trip(immediate, final, read, write, attr, lun, itt, edtl, cmd_sn, exp, cdb, data, hd, dd):
    pdu = P.ScsiCommandPdu(immediate, final, read, write, attr, lun, itt, edtl, cmd_sn, exp, cdb, data)
    (raw,) = P.PduFramer(1 << 24, hd, dd).feed(wire(pdu, hd, dd))
    assert normalise(raw.decode()) == pdu


@settings(max_examples=150, deadline=None)
@given(flags=st.tuples(*[st.booleans()] * 5), status=st.integers(0, 255), lun=lun8, itt=u32, ttt=u32, sns=st.tuples(u32, u32, u32),
       data_sn=u32, offset=u32, resid=u32, data=payload)
def test_data_in_round_trip(flags, status, lun, itt, ttt, sns, data_sn, offset, resid, data):
    final, ack, over, under, has_status = flags
    pdu = P.DataIn(final, ack, over, under, has_status, status if has_status else 0, lun, itt, ttt, *sns, data_sn,
                   offset, resid, data)
    (raw,) = P.PduFramer(1 << 24).feed(wire(pdu))
    assert normalise(raw.decode()) == pdu


@settings(max_examples=100, deadline=None)
@given(final=st.booleans(), lun=lun8, itt=u32, ttt=u32, exp=u32, data_sn=u32, offset=u32, data=payload)
def test_data_out_round_trip(final, lun, itt, ttt, exp, data_sn, offset, data):
    pdu = P.DataOut(final, lun, itt, ttt, exp, data_sn, offset, data)
    (raw,) = P.PduFramer(1 << 24, True, True).feed(wire(pdu, True, True))
    assert normalise(raw.decode()) == pdu


@settings(max_examples=100, deadline=None)
@given(t=st.booleans(), c=st.booleans(), csg=st.integers(0, 3), nsg=st.integers(0, 3), isid=st.binary(min_size=6, max_size=6),
       tsih=st.integers(0, 0xFFFF), itt=u32, sns=st.tuples(u32, u32, u32), sc=st.integers(0, 255), sd=st.integers(0, 255),
       data=payload)
def test_login_response_round_trip(t, c, csg, nsg, isid, tsih, itt, sns, sc, sd, data):
    pdu = P.LoginResponse(t, c, csg, nsg, 0, 0, isid, tsih, itt, *sns, sc, sd, data)
    (raw,) = P.PduFramer(1 << 24).feed(wire(pdu))
    assert normalise(raw.decode()) == pdu


def test_crc32c_digest_is_little_endian_rfc_vector():
    # RFC 3720 B.4 / the classic check value of CRC32C("123456789") is E3069283h, sent LSB first.
    assert P.crc32c_digest(b"123456789") == bytes.fromhex("839206e3")
    # RFC 3720 B.4 test vector: 32 bytes of zeros -> 8A9136AAh.
    assert P.crc32c_digest(bytes(32)) == struct.pack("<I", 0x8A9136AA)


def test_header_digest_error_raises_and_keeps_earlier_pdus():
    good = wire(CASES[0], True, False)
    bad = bytearray(wire(CASES[1], True, False))
    bad[P.BHS_SIZE] ^= 0xFF            # flip a digest byte
    framer = P.PduFramer(1 << 24, header_digest=True)
    with pytest.raises(P.PduFramingError) as info:
        framer.feed(good + bytes(bad))
    assert "header digest" in str(info.value)
    assert [normalise(r.decode()) for r in info.value.pdus_before] == [CASES[0]]


def test_data_digest_error_marks_the_pdu_and_the_stream_goes_on():
    bad = bytearray(wire(CASES[7], False, True))
    bad[P.BHS_SIZE + 3] ^= 0x01       # corrupt the data, not the digest
    good = wire(CASES[0], False, True)
    raws = P.PduFramer(1 << 24, data_digest=True).feed(bytes(bad) + good)
    assert [r.data_digest_error for r in raws] == [True, False]
    assert normalise(raws[1].decode()) == CASES[0]


def test_oversized_data_segment_is_a_protocol_error():
    framer = P.PduFramer(max_recv_data_segment_length=512)
    with pytest.raises(P.PduFramingError) as info:
        framer.feed(wire(P.DataOut(data=b"x" * 513))[:P.BHS_SIZE])
    assert info.value.reject_reason == P.RejectReason.PROTOCOL_ERROR
    assert len(info.value.bhs) == P.BHS_SIZE
    # exactly the limit is fine
    (raw,) = P.PduFramer(max_recv_data_segment_length=512).feed(wire(P.DataOut(data=b"x" * 512)))
    assert len(raw.data) == 512


def test_padding_and_lengths_on_the_wire():
    data = wire(P.NopOut(data=b"abc"))
    assert len(data) == P.BHS_SIZE + 4
    assert data[5:8] == b"\0\0\3"          # DataSegmentLength counts the data without padding
    assert data[-1:] == b"\0"


def test_extended_cdb_ahs_layout():
    pdu = P.ScsiCommandPdu(cdb=bytes(range(20)))
    ahs = pdu.ahs()
    # AHSLength = 5 (reserved byte + 4 CDB bytes), type 1, padded to 8
    assert ahs[:3] == b"\x00\x05\x01" and len(ahs) == 8
    assert wire(pdu)[4] == 2               # TotalAHSLength in 4-byte words


@pytest.mark.parametrize("lun", [0, 1, 255, 256, 1000, 16383])
def test_lun_encoding_round_trip(lun):
    assert P.decode_lun(P.encode_lun(lun)) == lun
