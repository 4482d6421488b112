"""Resource exhaustion from one logged-in connection: the daemon's memory and task table stay
bounded (odxtarget/transport/iscsi/limits.py) while a witness session on another connection
keeps writing and reading back patterns without a single error or timeout.

Each case runs against a fresh daemon, samples its VmRSS in a thread and compares the peak
with the baseline taken just before the attack.
"""

from __future__ import annotations

import struct
import time

import pytest

from tests.integration.adversarial.support import (
    BLOCK, MIB, REJECT_IMMEDIATE_COMMAND, REJECT_PROTOCOL_ERROR, STATUS_GOOD, STATUS_TASK_SET_FULL,
    WINDOW_OPCODES, PduCollector, RssSampler, adversary_spec, command_window, describe_pdu,
    send_with_deadline)
from tests.integration.raw_initiator import NOP_IN, R2T, REJECT, SCSI_RSP, TEXT_RSP, Pdu, RawInitiator, encode_text

pytestmark = pytest.mark.integration

#: Headroom above a case's bound before the sampler kills the daemon (see RssSampler).
KILL_HEADROOM = 512 * MIB
DEFAULT_MAX_TEXT_BYTES = 64 * 1024          # IscsiLimits.max_text_bytes
UNKNOWN_EDTL = 0xFFFFFFFF


def write10(lba: int, blocks: int) -> bytes:
    """WRITE(10), SBC-4."""
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def read16(lba: int, blocks: int) -> bytes:
    """READ(16), SBC-4."""
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


# ------------------------------------------------------------------ case 1: absurd immediate writes

@pytest.mark.parametrize("cdb_blocks", [0, 1, 65535], ids=["cdb-0-blocks", "cdb-1-block", "cdb-65535-blocks"])
def test_immediate_writes_announcing_4_gib_each_hold_no_memory(arena_factory, cdb_blocks: int) -> None:
    """16 immediate WRITE(10)s with Expected Data Transfer Length 0xFFFFFFFF and no data, after a
    plain login to a demo-mode target: the EDTL is a claim, not a reason to allocate 64 GiB."""
    arena = arena_factory()
    raw = arena.logged_in()
    collector = PduCollector(raw)
    collector.start()
    with RssSampler(arena.daemon, kill_growth=64 * MIB + KILL_HEADROOM) as rss:
        for _ in range(16):
            raw.send_pdu(raw.scsi_cmd_bhs(write10(0, cdb_blocks), write=True, edtl=UNKNOWN_EDTL,
                                          itt=raw.next_itt(), immediate=True))
        time.sleep(2.0)
    collector.stop()
    raw.close()
    rss.assert_growth_at_most(64 * MIB)
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ cases 2 and 14: unread Data-In

PIPELINED_READS = 6000
READ_BLOCKS = 32768                          # 16 MiB of 512-byte blocks per READ(16)


def pipelined_reads(raw: RawInitiator, count: int) -> bytes:
    """``count`` numbered READ(16)s of 16 MiB each, framed back to back (RFC 7143 4.2.2.1: those
    beyond the advertised CmdSN window are ignored by the target, the rest may all be queued)."""
    frames = []
    for index in range(count):
        frames.append(raw.frame(raw.scsi_cmd_bhs(read16(0, READ_BLOCKS), read=True, edtl=READ_BLOCKS * BLOCK,
                                                 itt=raw.next_itt(), cmd_sn=(raw.cmd_sn + index) & 0xFFFFFFFF)))
    raw.cmd_sn += count
    return b"".join(frames)


@pytest.mark.slow
def test_pipelined_reads_whose_data_is_never_read_hold_bounded_memory(arena_factory) -> None:
    """6000 READ(16)s of 16 MiB on one connection that never reads its socket: the target must
    stop reading (max_pending_send_bytes) instead of producing 94 GiB of Data-In."""
    arena = arena_factory()
    raw = arena.logged_in()
    flood = pipelined_reads(raw, PIPELINED_READS)
    with RssSampler(arena.daemon, kill_growth=256 * MIB + KILL_HEADROOM) as rss:
        send_with_deadline(raw.sock, flood, 5.0)
        time.sleep(3.0)
    rss.assert_growth_at_most(256 * MIB)
    arena.assert_everyone_else_served()
    raw.close()


@pytest.mark.slow
def test_closing_the_flooding_connection_frees_its_memory(arena_factory) -> None:
    """After the flood of the previous case the witness still reads and writes, and once the
    flooding socket is closed the daemon's memory returns to within 64 MiB of the baseline."""
    arena = arena_factory()
    raw = arena.logged_in()
    flood = pipelined_reads(raw, PIPELINED_READS)
    with RssSampler(arena.daemon, kill_growth=256 * MIB + KILL_HEADROOM) as rss:
        send_with_deadline(raw.sock, flood, 5.0)
        time.sleep(2.0)
        during_flood = arena.witness.mark()
        time.sleep(2.0)
        rounds_during_flood = arena.witness.rounds - during_flood.rounds
        raw.close()
        freed = rss.wait_until_within(64 * MIB, timeout=5.0)
    rss.assert_growth_at_most(256 * MIB)
    arena.witness.assert_unaffected(during_flood)
    assert rounds_during_flood >= 3, f"the witness completed {rounds_during_flood} rounds in 2 s of flood"
    assert freed, f"memory not given back within 5 s of the close: {rss.verdict()}"
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 3: endless text requests

TEXT_PIECE = 8 * 1024
TEXT_PIECES = 4000


def text_piece(index: int) -> bytes:
    """Piece ``index`` of one giant key=value pair (the text is concatenated across C-bit PDUs)."""
    if index == 0:
        head = b"X-org.odxtarget.test.padding="
        return head + b"a" * (TEXT_PIECE - len(head))
    return b"a" * TEXT_PIECE


def rejected_cmd_sn(reject: Pdu) -> int:
    """CmdSN of the PDU a Reject carries back (its data is the rejected BHS, RFC 7143 11.17.3)."""
    return struct.unpack_from(">I", reject.data, 24)[0]


def test_endless_continued_text_request_is_refused_past_max_text_bytes(arena_factory) -> None:
    """4000 Text Requests of 8 KiB with the C bit, one ITT and TTT ffffffffh, sent without waiting:
    the target refuses the exchange with Reject 04h once it passes max_text_bytes (64 KiB by
    default) and never answers the 32 MiB of text with a final Text Response."""
    arena = arena_factory()
    raw = arena.logged_in()
    raw.sock.settimeout(1.0)
    collector = PduCollector(raw)
    collector.start()
    itt = raw.next_itt()
    first = raw.cmd_sn
    frames = [raw.frame(raw.text_bhs(itt=itt, data_len=TEXT_PIECE, final=False, cont=True, cmd_sn=first + index),
                        text_piece(index))
              for index in range(TEXT_PIECES)]
    ending = b"a\0"
    frames.append(raw.frame(raw.text_bhs(itt=itt, data_len=len(ending), cmd_sn=first + TEXT_PIECES), ending))
    raw.cmd_sn = first + TEXT_PIECES + 1
    with RssSampler(arena.daemon, kill_growth=64 * MIB + KILL_HEADROOM) as rss:
        send_with_deadline(raw.sock, b"".join(frames), 10.0)
        # Every answer carries ExpCmdSN: once one says raw.cmd_sn, the last request was handled.
        collector.wait_for(lambda pdus: any(pdu.exp_cmd_sn == raw.cmd_sn for pdu in pdus), timeout=10.0)
    collector.stop()
    rss.assert_growth_at_most(64 * MIB)
    rejects = [pdu for pdu in collector.pdus if pdu.opcode == REJECT]
    assert rejects, "the over-long text exchange was never refused with a Reject"
    assert rejects[0].reject_reason == REJECT_PROTOCOL_ERROR, describe_pdu(rejects[0])
    exceeding = DEFAULT_MAX_TEXT_BYTES // TEXT_PIECE          # the 9th request passes 64 KiB
    assert rejected_cmd_sn(rejects[0]) == first + exceeding, (
        f"the first Reject refuses request #{rejected_cmd_sn(rejects[0]) - first + 1}, expected "
        f"#{exceeding + 1}, the first to take the exchange past {DEFAULT_MAX_TEXT_BYTES} bytes")
    finals = [pdu for pdu in collector.pdus if pdu.opcode == TEXT_RSP and pdu.flags & 0x80]
    assert not finals, f"the refused exchange was answered with a final Text Response: {describe_pdu(finals[0])}"
    raw.sock.settimeout(10.0)
    answer, pairs = raw.text(encode_text({"SendTargets": "All"}))
    assert answer.opcode == TEXT_RSP and answer.flags & 0x80 and ("TargetName", arena.daemon.iqn) in pairs, (
        "after the refused exchange a new one must be answered on the same connection")
    raw.close()
    arena.assert_everyone_else_served()


def test_continued_text_request_following_target_tags_is_refused_past_max_text_bytes(arena_factory) -> None:
    """The same bound for an initiator that continues by the book, echoing each Text Response's
    Target Transfer Tag (RFC 7143 11.10.4): the 9th 8 KiB piece is refused with Reject 04h."""
    arena = arena_factory()
    raw = arena.logged_in()
    itt = raw.next_itt()
    ttt = 0xFFFFFFFF
    refused_at = None
    for index in range(16):
        raw.send_pdu(raw.text_bhs(itt=itt, ttt=ttt, data_len=TEXT_PIECE, final=False, cont=True), text_piece(index))
        raw.cmd_sn += 1
        answer = raw.recv_pdu()
        while answer.opcode == NOP_IN and answer.itt == 0xFFFFFFFF:
            answer = raw.recv_pdu()
        if answer.opcode == REJECT:
            assert answer.reject_reason == REJECT_PROTOCOL_ERROR, describe_pdu(answer)
            refused_at = index
            break
        assert answer.opcode == TEXT_RSP and answer.itt == itt and not answer.flags & 0x80, describe_pdu(answer)
        ttt = answer.u32(20)
    assert refused_at == DEFAULT_MAX_TEXT_BYTES // TEXT_PIECE, (
        f"refused at piece #{None if refused_at is None else refused_at + 1}, expected "
        f"#{DEFAULT_MAX_TEXT_BYTES // TEXT_PIECE + 1}")
    answer, pairs = raw.text(encode_text({"SendTargets": "All"}))
    assert answer.opcode == TEXT_RSP and ("TargetName", arena.daemon.iqn) in pairs, describe_pdu(answer)
    raw.close()
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 5: the task table

MAX_TASKS = 8


def write_through_r2t(raw: RawInitiator, lba: int) -> int:
    """A numbered one-block WRITE(10) without immediate data: it holds a task until its R2T is
    answered. Returns the SCSI status."""
    itt = raw.next_itt()
    raw.send_pdu(raw.scsi_cmd_bhs(write10(lba, 1), write=True, edtl=BLOCK, itt=itt))
    raw.cmd_sn += 1
    r2t = raw.recv_pdu()
    assert r2t.opcode == R2T and r2t.itt == itt, describe_pdu(r2t)
    raw.send_pdu(raw.data_out_bhs(itt=itt, ttt=r2t.u32(20), data_sn=0, offset=0, data_len=BLOCK), b"\xa5" * BLOCK)
    response = raw.recv_pdu()
    assert response.opcode == SCSI_RSP and response.itt == itt, describe_pdu(response)
    return response.status


def test_full_task_table_rejects_immediate_commands_and_answers_task_set_full(arena_factory) -> None:
    """max_tasks_per_connection 8: immediate WRITEs waiting for Data-Out beyond the bound get
    Reject 06h (IMMEDIATE COMMAND REJECT, RFC 7143 11.17.1), a numbered WRITE arriving meanwhile
    ends with TASK SET FULL (SAM-5 5.3.1), the table takes commands again once the held WRITEs
    finish, and no response advertises a CmdSN window wider than 8."""
    arena = arena_factory(adversary_spec(iscsi={"max_tasks_per_connection": MAX_TASKS}))
    raw = arena.raw()
    raw.trace = []
    raw.login(arena.daemon.iqn)
    immediate_itts = []
    for index in range(MAX_TASKS + 4):
        itt = raw.next_itt()
        immediate_itts.append(itt)
        # InitialR2T=Yes and no immediate data: each task waits for the Data-Out of its R2T.
        raw.send_pdu(raw.scsi_cmd_bhs(write10(1000 + index, 1), write=True, edtl=BLOCK, itt=itt, immediate=True))
    r2ts: dict[int, Pdu] = {}
    rejects: list[Pdu] = []
    while len(r2ts) + len(rejects) < len(immediate_itts):
        pdu = raw.recv_pdu()
        if pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
            continue
        if pdu.opcode == R2T:
            r2ts[pdu.itt] = pdu
        elif pdu.opcode == REJECT:
            rejects.append(pdu)
        else:
            raise AssertionError(f"unexpected answer to an immediate WRITE: {describe_pdu(pdu)}")
    assert sorted(r2ts) == immediate_itts[:MAX_TASKS], "the first 8 immediate WRITEs must be accepted"
    assert [reject.reject_reason for reject in rejects] == [REJECT_IMMEDIATE_COMMAND] * 4, [
        describe_pdu(reject) for reject in rejects]
    assert sorted(struct.unpack_from(">I", reject.data, 16)[0] for reject in rejects) == immediate_itts[MAX_TASKS:], (
        "each Reject must carry the header of one of the WRITEs beyond the bound")

    # A numbered WRITE that would have to wait for its Data-Out needs a task slot it cannot get.
    numbered = raw.next_itt()
    raw.send_pdu(raw.scsi_cmd_bhs(write10(2000, 1), write=True, edtl=BLOCK, itt=numbered))
    raw.cmd_sn += 1
    full = raw.recv_pdu()
    while full.opcode == NOP_IN and full.itt == 0xFFFFFFFF:
        full = raw.recv_pdu()
    assert full.opcode == SCSI_RSP and full.itt == numbered, describe_pdu(full)
    assert full.response == 0 and full.status == STATUS_TASK_SET_FULL, describe_pdu(full)

    for itt, r2t in r2ts.items():
        raw.send_pdu(raw.data_out_bhs(itt=itt, ttt=r2t.u32(20), data_sn=0, offset=0, data_len=BLOCK),
                     b"\x5a" * BLOCK)
    finished = {}
    while len(finished) < len(r2ts):
        pdu = raw.recv_pdu()
        if pdu.opcode == SCSI_RSP:
            finished[pdu.itt] = pdu.status
    assert set(finished) == set(r2ts) and set(finished.values()) == {STATUS_GOOD}, finished
    assert write_through_r2t(raw, 2000) == STATUS_GOOD, "a freed task table must take waiting commands again"

    windows = [(describe_pdu(pdu), command_window(pdu)) for pdu in raw.trace if pdu.opcode in WINDOW_OPCODES]
    too_wide = [entry for entry in windows if entry[1] > MAX_TASKS]
    assert not too_wide, f"responses advertise a CmdSN window wider than {MAX_TASKS}: {too_wide[:5]}"
    raw.close()
    arena.assert_everyone_else_served()
