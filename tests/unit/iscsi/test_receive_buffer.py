"""The connection's reusable read buffer: reused while nothing refers to it, replaced while a
PDU does, and what the connection keeps never aliases it."""

from __future__ import annotations

from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.receive_buffer import LARGE_RECEIVE_BYTES, SMALL_RECEIVE_BYTES, ReceiveBuffer, is_referenced
from tests.unit.iscsi.harness import WRITE10, Initiator, cdb10
from tests.unit.iscsi.scsi_double import BLOCK


def _read(buffer: ReceiveBuffer, data: bytes, size: int = SMALL_RECEIVE_BYTES) -> memoryview:
    """What the event loop does: read into ``writable``, then hand over ``received``."""
    target = buffer.writable(size)
    target[:len(data)] = data
    del target
    return buffer.received(len(data))


def test_is_referenced_sees_views_and_their_slices():
    buffer = bytearray(64)
    assert not is_referenced(buffer)
    view = memoryview(buffer)[8:16]
    assert is_referenced(buffer)
    del view
    assert not is_referenced(buffer)
    assert len(buffer) == 64


def test_the_buffer_is_reused_when_nothing_refers_to_it():
    buffer = ReceiveBuffer()
    first = buffer.writable(SMALL_RECEIVE_BYTES).obj
    second = buffer.writable(SMALL_RECEIVE_BYTES).obj
    assert first is second


def test_a_held_view_keeps_its_bytes_and_the_next_read_goes_elsewhere():
    buffer = ReceiveBuffer()
    held = _read(buffer, b"A" * 100)[10:20]
    again = _read(buffer, b"B" * 100)
    assert bytes(held) == b"A" * 10
    assert bytes(again) == b"B" * 100
    assert held.obj is not again.obj


def test_the_size_follows_the_phase_and_release_frees_it():
    buffer = ReceiveBuffer()
    assert buffer.size == SMALL_RECEIVE_BYTES
    assert len(buffer.writable(LARGE_RECEIVE_BYTES)) == LARGE_RECEIVE_BYTES
    assert buffer.size == LARGE_RECEIVE_BYTES
    buffer.release()
    assert buffer.size == 0


def test_pdus_inside_one_chunk_are_borrowed_and_assembled_ones_are_not():
    wire = b"".join(bytes(part) for part in P.encode_pdu(P.NopOut(immediate=True, lun=bytes(8),
                                                                   initiator_task_tag=1, target_transfer_tag=0xFFFFFFFF,
                                                                   cmd_sn=0, exp_stat_sn=0, data=b"x" * 100)))
    (whole,) = P.PduFramer(8192).feed(wire)
    assert whole.borrowed and bytes(whole.data) == b"x" * 100
    framer = P.PduFramer(8192)
    assert framer.feed(wire[:60]) == []
    (assembled,) = framer.feed(wire[60:])
    assert not assembled.borrowed and bytes(assembled.data) == b"x" * 100


def test_a_write_of_immediate_data_leaves_the_receive_buffer_free():
    """The write's data outlives the read it came in: it is copied out, so the next read can
    reuse the buffer instead of allocating another."""
    initiator = Initiator()
    assert initiator.login().status_class == 0
    payload = bytes(range(256)) * (BLOCK // 256)
    receive = ReceiveBuffer()
    buffer = receive.writable(LARGE_RECEIVE_BYTES).obj
    wire = initiator.wire(initiator.command(cdb10(WRITE10, 3, 1), write=True, edtl=BLOCK, data=payload))
    initiator.connection.receive_data(_read(receive, wire, LARGE_RECEIVE_BYTES))
    written = initiator.target.commands[-1].data_out
    assert bytes(written) == payload
    assert receive.writable(LARGE_RECEIVE_BYTES).obj is buffer
