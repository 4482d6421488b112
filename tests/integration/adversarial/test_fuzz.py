"""Hypothesis-driven fuzzing of the daemon's iSCSI front end and SCSI core over real sockets.

Each example is a short script sent on one connection: either PDUs built from templates of every
initiator opcode (RFC 7143 11) with random flags, tags, CmdSN, lengths and data segments within
and beyond our MaxRecvDataSegmentLength, plus random byte mutations and random opcodes; or SCSI
commands with CDBs of real SPC-4/SBC-4 opcodes with random fields, and random CDBs. Most scripts
run in a logged-in normal session; some fuzz the login phase of a fresh connection. The target
may close a connection it cannot resynchronise (RFC 7143 7: ErrorRecoveryLevel 0); the fuzzer
then logs in again, from another loopback address so that per-address bounds and failed-login
throttling do not starve it.

Asserted throughout: the daemon process lives, the witness session never sees an error or a
timeout, resident memory grows by at most 256 MiB, and the log has no traceback and no
"internal error" line.

The run lasts ``ODXTARGET_FUZZ_SECONDS`` (default 60) seconds: hypothesis runs batches of
examples until the budget is spent. The fuzzer stays on LUN 0 and never sends a target-wide
reset: those legitimately disturb other initiators (SAM-5 6.3, RFC 7143 11.5.1), which is not
what the witness measures.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.adversarial.support import (
    MIB, OTHER_HOSTS, Arena, DaemonLog, RssSampler, send_with_deadline)
from tests.integration.raw_initiator import (
    DATA_OUT, IMMEDIATE, LOGIN_RSP, LOGOUT_REQ, NOP_IN, NOP_OUT, R2T, SCSI_CMD, SNACK_REQ, TEXT_REQ,
    TMF_REQ, RawInitiator)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FUZZ_SECONDS = float(os.environ.get("ODXTARGET_FUZZ_SECONDS", "60"))
EXAMPLES_PER_BATCH = 25
FUZZ_INITIATOR = "iqn.2026-11.org.odxtarget.test:fuzz"
RSS_GROWTH_LIMIT = 256 * MIB
ANSWER_WAIT = 0.5                      # seconds of silence before a connection counts as stuck
DRAIN_LIMIT = 3.0                      # seconds of answers (Data-In...) read before the ping's answer
MAX_SOLICITED = 1 * MIB                # R2Ts asking for more are left unanswered
LUN_BLOCKS = 64 * MIB // 512

# SPC-4 / SBC-4 operation codes with their CDB length, and service actions where they matter.
CDB_SHAPES: list[tuple[int, int, tuple[int, ...]]] = [
    (0x00, 6, ()), (0x03, 6, ()), (0x04, 6, ()), (0x12, 6, ()), (0x15, 6, ()), (0x16, 6, ()), (0x17, 6, ()),
    (0x1A, 6, ()), (0x1B, 6, ()), (0x1D, 6, ()), (0x1E, 6, ()), (0x25, 10, ()), (0x28, 10, ()), (0x2A, 10, ()),
    (0x2E, 10, ()), (0x2F, 10, ()), (0x34, 10, ()), (0x35, 10, ()), (0x3B, 10, ()), (0x3C, 10, ()),
    (0x41, 10, ()), (0x42, 10, ()), (0x4C, 10, ()), (0x4D, 10, ()), (0x55, 10, ()), (0x56, 10, ()),
    (0x57, 10, ()), (0x5A, 10, ()), (0x5E, 10, (0, 1, 2, 3)), (0x5F, 10, (0, 1, 2, 3, 4, 5, 6, 7)),
    (0x83, 16, (0x00, 0x01, 0x10, 0x11)), (0x84, 16, (0x00, 0x03, 0x07)), (0x88, 16, ()), (0x89, 16, ()),
    (0x8A, 16, ()), (0x8E, 16, ()), (0x8F, 16, ()), (0x91, 16, ()), (0x93, 16, ()), (0x9E, 16, (0x10, 0x12)),
    (0xA0, 12, ()), (0xA3, 12, (0x05, 0x0C, 0x0D, 0x0F)), (0xA8, 12, ()), (0xAA, 12, ()), (0xAF, 12, ()),
]
#: Opcodes with an LBA and a transfer length at the SBC-4 READ/WRITE positions.
RW10 = {0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x41}
RW16 = {0x88, 0x89, 0x8A, 0x8E, 0x8F, 0x91, 0x93}

EDTLS = [0, 1, 8, 18, 36, 96, 255, 512, 4096, 65536, 262144, 1 << 20, 16 * MIB, 0x7FFFFFFF, 0xFFFFFFFF]
LOGIN_KEYS = ["InitiatorName", "TargetName", "SessionType", "AuthMethod", "CHAP_A", "CHAP_N", "CHAP_R",
              "CHAP_I", "CHAP_C", "HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData",
              "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
              "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
              "ErrorRecoveryLevel", "InitiatorAlias", "TargetAlias", "SendTargets", "TaskReporting",
              "iSCSIProtocolLevel", "IFMarker", "OFMarkInt", "X-org.odxtarget.fuzz", "X#org.example.fuzz"]
LOGIN_VALUES = ["None", "CHAP", "CHAP,None", "None,CRC32C", "CRC32C", "Yes", "No", "0", "1", "2", "512",
                "8192", "262144", "16777215", "16777216", "Normal", "Discovery", "All", "5", "0x00",
                "0b", "", "Reject", "NotUnderstood", "Irrelevant", FUZZ_INITIATOR,
                "iqn.2026-11.org.odxtarget:adversary", "1~65535"]
PDU_TEMPLATES = ["nop-out", "scsi-command", "task-management", "text", "data-out", "logout", "snack",
                 "login", "random-opcode", "random-bytes"]


# ------------------------------------------------------------------------------ what a script holds

def filled(size: int, fill: bytes) -> bytes:
    """``fill`` repeated to exactly ``size`` bytes."""
    return (fill * (size // len(fill) + 1))[:size]


@dataclass(frozen=True)
class Segment:
    """A data segment: ``pattern`` repeated to ``size`` bytes (a failing example's report stays
    readable even when the segment is 256 KiB)."""

    pattern: bytes
    size: int

    def __bytes__(self) -> bytes:
        return filled(self.size, self.pattern) if self.size else b""


@dataclass(frozen=True)
class FuzzPdu:
    """One PDU from a template, then byte mutations; the executor fills in live tags and CmdSN."""

    template: str
    immediate: bool
    flags: int
    word: int                                   # the template's free 32-bit field (TTT, RTT, reason...)
    cdb: bytes
    cmd_sn_offset: int
    mutations: tuple[tuple[int, int], ...]
    data: Segment
    declared_length: int | None                 # a DataSegmentLength that lies about the data


@dataclass(frozen=True)
class FuzzCommand:
    """A well-framed SCSI Command with a fuzzed CDB, direction, EDTL and immediate data."""

    cdb: bytes
    read: bool
    write: bool
    edtl: int
    immediate_data: int
    lun: int
    immediate: bool
    attribute: int


@dataclass(frozen=True)
class FuzzLogin:
    """One Login Request of a fresh connection."""

    transit: bool
    cont: bool
    csg: int
    nsg: int
    version: int
    text: bytes
    mutations: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Script:
    phase: str                                  # "full-feature" or "login"
    actions: tuple[object, ...]


# ------------------------------------------------------------------------------ strategies

@st.composite
def data_segments(draw) -> Segment:
    """Empty, small, or large; now and then beyond the 262144-byte MaxRecvDataSegmentLength we
    are offered, which ends the connection (so not too often, or the fuzzer only reconnects)."""
    size = draw(st.sampled_from([0, 0, 0, 0, 1, 3, 48, 512, 4096, 8192, 65536, 262144, 262148]))
    if size <= 64:
        return Segment(draw(st.binary(min_size=size, max_size=size)), size)
    return Segment(draw(st.binary(min_size=1, max_size=8)), size)


@st.composite
def text_segments(draw) -> bytes:
    """key=value text: known keys with odd values, unknown keys, broken framing."""
    pairs = draw(st.lists(st.tuples(st.sampled_from(LOGIN_KEYS) | st.text(min_size=1, max_size=12),
                                    st.sampled_from(LOGIN_VALUES) | st.text(max_size=40)), max_size=6))
    text = b"".join(key.encode(errors="replace") + b"=" + value.encode(errors="replace") + b"\0"
                    for key, value in pairs)
    return draw(st.sampled_from([text, text, text[:-1], text.replace(b"=", b"", 1), text + b"\0\0"]))


@st.composite
def cdbs(draw) -> bytes:
    """A CDB of a real opcode with random fields (LBA and length often in range), or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=6, max_size=16))
    opcode, length, service_actions = draw(st.sampled_from(CDB_SHAPES))
    cdb = bytearray(bytes([opcode]) + draw(st.binary(min_size=length - 1, max_size=length - 1)))
    if service_actions:
        cdb[1] = draw(st.sampled_from(service_actions))
    if draw(st.booleans()):
        lba = draw(st.integers(0, LUN_BLOCKS + 16))
        blocks = draw(st.integers(0, 300))
        if opcode in RW10:
            struct.pack_into(">IBH", cdb, 2, lba & 0xFFFFFFFF, cdb[6] & 0x1F, blocks & 0xFFFF)
        elif opcode in RW16:
            struct.pack_into(">QI", cdb, 2, lba, blocks)
    if draw(st.integers(0, 3)) == 0:
        cdb[-1] = 0                            # a valid CONTROL byte, now and then
    return bytes(cdb)


@st.composite
def fuzz_pdus(draw) -> FuzzPdu:
    lie = draw(st.integers(0, 19)) == 0
    template = draw(st.sampled_from(PDU_TEMPLATES))
    if template in ("text", "login"):
        text = draw(text_segments())
        data = Segment(text, len(text))
    else:
        data = draw(data_segments())
    return FuzzPdu(
        template=template,
        immediate=draw(st.booleans()),
        flags=draw(st.integers(0, 255)),
        word=draw(st.sampled_from([0, 1, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)),
        cdb=draw(cdbs()),
        cmd_sn_offset=draw(st.sampled_from([0, 0, 0, 1, -1, 2, 127, 128, 1 << 31]) | st.integers(-3, 300)),
        mutations=tuple(draw(st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), max_size=4))),
        data=data,
        declared_length=draw(st.integers(0, 0xFFFFFF)) if lie else None,
    )


@st.composite
def fuzz_commands(draw) -> FuzzCommand:
    cdb = draw(cdbs())
    direction = draw(st.sampled_from(["read", "read", "read", "write", "write", "none", "none", "both"]))
    edtl = draw(st.sampled_from(EDTLS) | st.integers(0, 1 << 20))
    write = direction in ("write", "both")
    return FuzzCommand(
        cdb=cdb, read=direction in ("read", "both"), write=write, edtl=edtl,
        immediate_data=draw(st.sampled_from([0, 1, 512, 4096, 65536]) if write else st.just(0)),
        lun=draw(st.sampled_from([0, 0, 0, 0, 0, 2, 255, 16383])),
        immediate=draw(st.integers(0, 5)) == 0,
        attribute=draw(st.sampled_from([1, 1, 1, 0, 2, 4, 7])),
    )


@st.composite
def fuzz_logins(draw) -> FuzzLogin:
    return FuzzLogin(
        transit=draw(st.booleans()), cont=draw(st.integers(0, 4)) == 0,
        csg=draw(st.sampled_from([0, 1, 1, 2, 3])), nsg=draw(st.sampled_from([0, 1, 3, 3, 2])),
        version=draw(st.sampled_from([0, 0, 0, 1, 0xFF])),
        text=draw(text_segments()),
        mutations=tuple(draw(st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), max_size=2))),
    )


@st.composite
def scripts(draw) -> Script:
    if draw(st.integers(0, 5)) == 0:
        return Script("login", tuple(draw(st.lists(fuzz_logins(), min_size=1, max_size=4))))
    return Script("full-feature", tuple(draw(st.lists(fuzz_pdus() | fuzz_commands(), min_size=1, max_size=8))))


# ------------------------------------------------------------------------------ sending them

def defang(bhs: bytearray) -> bytearray:
    """Keep the fuzzer away from the witness: no PDU may address LUN 1, and no task management
    function may reset the whole target (RFC 7143 11.5.1 functions 6 and 7)."""
    opcode = bhs[0] & 0x3F
    if opcode in (NOP_OUT, SCSI_CMD, TMF_REQ, TEXT_REQ, DATA_OUT, SNACK_REQ):
        method = bhs[8] >> 6
        lun = bhs[9] if method == 0 else ((bhs[8] & 0x3F) << 8 | bhs[9]) if method == 1 else None
        if lun == 1 or method not in (0, 1):
            bhs[8:16] = bytes(8)
    if opcode == TMF_REQ and bhs[1] & 0x7F in (6, 7):
        bhs[1] = (bhs[1] & 0x80) | 0x01
    return bhs


@dataclass
class FuzzRunner:
    """Runs scripts against one daemon, keeping (and replacing) one logged-in connection."""

    arena: Arena
    connection: RawInitiator | None = None
    next_host: int = 0
    examples: int = 0
    reconnects: int = 0
    writes: dict[int, int] = field(default_factory=dict)      # ITT -> EDTL of our recent writes

    def _source(self) -> str:
        self.next_host = (self.next_host + 1) % len(OTHER_HOSTS)
        return OTHER_HOSTS[self.next_host]

    def _connect(self) -> RawInitiator:
        raw = RawInitiator(self.arena.daemon.host, self.arena.daemon.port, initiator=FUZZ_INITIATOR,
                           isid=b"\x80" + os.urandom(5), timeout=ANSWER_WAIT, source_address=self._source())
        raw.sock.settimeout(5.0)
        raw.login(self.arena.daemon.iqn)
        raw.sock.settimeout(ANSWER_WAIT)
        self.reconnects += 1
        return raw

    def drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None
        self.writes.clear()

    def run(self, script: Script) -> None:
        self.examples += 1
        if script.phase == "login":
            self._run_login(script)
        else:
            self._run_full_feature(script)

    # -- login phase ----------------------------------------------------------------------------
    def _run_login(self, script: Script) -> None:
        raw = RawInitiator(self.arena.daemon.host, self.arena.daemon.port, initiator=FUZZ_INITIATOR,
                           timeout=ANSWER_WAIT, source_address=self._source())
        try:
            for login in script.actions:
                bhs = bytearray(raw.login_bhs(transit=login.transit, csg=login.csg, nsg=login.nsg,
                                              data_len=len(login.text), version_max=login.version,
                                              version_min=login.version))
                if login.cont:
                    bhs[1] |= 0x40
                for offset, value in login.mutations:
                    bhs[offset] = value
                if send_with_deadline(raw.sock, raw.frame(bytes(bhs), login.text), 1.0) == 0:
                    return
                try:
                    answer = raw.recv_pdu()
                except (TimeoutError, ConnectionError, OSError):
                    return
                if answer.opcode != LOGIN_RSP or answer.bhs[36] != 0:
                    return
        finally:
            raw.close()

    # -- full feature phase ---------------------------------------------------------------------
    def _run_full_feature(self, script: Script) -> None:
        if self.connection is None:
            self.connection = self._connect()
        raw = self.connection
        try:
            for action in script.actions:
                frame = self._frame_command(raw, action) if isinstance(action, FuzzCommand) else self._frame_pdu(raw, action)
                if send_with_deadline(raw.sock, frame, 1.0) < len(frame):
                    self.drop()
                    return
            if not self._ping_and_drain(raw):
                self.drop()
        except (ConnectionError, OSError):
            self.drop()

    def _frame_command(self, raw: RawInitiator, command: FuzzCommand) -> bytes:
        itt = raw.next_itt()
        data = filled(min(command.immediate_data, command.edtl), b"\xa5\x5a") if command.write else b""
        bhs = bytearray(raw.scsi_cmd_bhs(command.cdb, lun=command.lun, read=command.read, write=command.write,
                                         edtl=command.edtl, data_len=len(data), itt=itt,
                                         immediate=command.immediate))
        bhs[1] = (bhs[1] & 0xF8) | command.attribute
        if command.write:
            self.writes[itt] = command.edtl
        if not command.immediate:
            raw.cmd_sn = (raw.cmd_sn + 1) & 0xFFFFFFFF
        return raw.frame(bytes(defang(bhs)), data)

    def _frame_pdu(self, raw: RawInitiator, pdu: FuzzPdu) -> bytes:
        itt = raw.next_itt()
        cmd_sn = (raw.cmd_sn + pdu.cmd_sn_offset) & 0xFFFFFFFF
        data = bytes(pdu.data)
        length = len(data)
        template = pdu.template
        if template == "scsi-command":
            bhs = bytearray(raw.scsi_cmd_bhs(pdu.cdb, edtl=pdu.word, data_len=length, itt=itt, cmd_sn=cmd_sn))
            bhs[1] = pdu.flags
        elif template == "task-management":
            bhs = bytearray(struct.pack(">BBH B3s 8s I I I I I I 8s", TMF_REQ, 0x80 | (pdu.flags & 0x7F), 0, 0,
                                        length.to_bytes(3, "big"), bytes(8), itt, pdu.word, cmd_sn,
                                        raw.exp_stat_sn, (cmd_sn - 1) & 0xFFFFFFFF, 0, bytes(8)))
        elif template == "text":
            bhs = bytearray(raw.text_bhs(itt=itt, data_len=length, ttt=pdu.word, cmd_sn=cmd_sn,
                                         final=bool(pdu.flags & 0x80), cont=bool(pdu.flags & 0x40)))
        elif template == "data-out":
            target_itt = next(iter(self.writes), itt) if pdu.flags & 1 else itt
            bhs = bytearray(raw.data_out_bhs(itt=target_itt, ttt=pdu.word, data_sn=pdu.flags >> 4,
                                             offset=pdu.cmd_sn_offset & 0xFFFFFFFF, data_len=length,
                                             final=bool(pdu.flags & 0x80)))
        elif template == "logout":
            bhs = bytearray(struct.pack(">BBH B3s 8s I HH I I 16s", LOGOUT_REQ, 0x80 | (pdu.flags & 0x7F), 0, 0,
                                        length.to_bytes(3, "big"), bytes(8), itt, pdu.word & 0xFFFF, 0, cmd_sn,
                                        raw.exp_stat_sn, bytes(16)))
        elif template == "snack":
            bhs = bytearray(struct.pack(">BBH B3s 8s I I I I 8s I I", SNACK_REQ, pdu.flags, 0, 0,
                                        length.to_bytes(3, "big"), bytes(8), itt, pdu.word, 0, raw.exp_stat_sn,
                                        bytes(8), pdu.cmd_sn_offset & 0xFFFFFFFF, pdu.flags >> 2))
        elif template == "login":
            bhs = bytearray(raw.login_bhs(transit=bool(pdu.flags & 0x80), csg=(pdu.flags >> 2) & 3,
                                          nsg=pdu.flags & 3, data_len=length, itt=itt))
        elif template == "random-bytes":
            bhs = bytearray(filled(48, pdu.cdb + pdu.word.to_bytes(4, "big")))
            struct.pack_into(">I", bhs, 4, (bhs[4] & 0x03) << 24 | length)
        else:                                   # nop-out, and random-opcode on a NOP-Out body
            bhs = bytearray(raw.nop_out_bhs(itt=itt, data_len=length, immediate=False, cmd_sn=cmd_sn))
            if template == "random-opcode":
                bhs[0] = pdu.flags & 0x3F
        if pdu.immediate:
            bhs[0] |= IMMEDIATE
        for offset, value in pdu.mutations:
            bhs[offset] = value
        if pdu.declared_length is not None:
            bhs[5:8] = pdu.declared_length.to_bytes(3, "big")
        if not bhs[0] & IMMEDIATE and cmd_sn == raw.cmd_sn and bhs[0] & 0x3F in (SCSI_CMD, TMF_REQ, TEXT_REQ,
                                                                                 LOGOUT_REQ, NOP_OUT):
            raw.cmd_sn = (raw.cmd_sn + 1) & 0xFFFFFFFF
        frame = raw.frame(bytes(defang(bhs)), data)
        # A TotalAHSLength the mutations set gets that many (zero) AHS bytes after the BHS
        # (RFC 7143 11.2.1.2); no digests are negotiated, so the data segment simply follows.
        return frame[:48] + bytes(4 * bhs[4]) + frame[48:]

    def _ping_and_drain(self, raw: RawInitiator) -> bool:
        """Send an immediate NOP-Out and read until its answer, answering small R2Ts; False when
        the connection is closed or silent (then a new one is made)."""
        itt = raw.next_itt()
        raw.send_pdu(raw.nop_out_bhs(itt=itt, data_len=4), b"ping")
        give_up = time.monotonic() + DRAIN_LIMIT
        mrdsl = int(raw.params.get("MaxRecvDataSegmentLength", "8192"))
        while time.monotonic() < give_up:
            try:
                pdu = raw.recv_pdu()          # waits at most ANSWER_WAIT (the socket timeout)
            except (TimeoutError, socket.timeout):
                return False
            if pdu.opcode == NOP_IN and pdu.itt == itt:
                return True
            if pdu.opcode == R2T and pdu.itt in self.writes and pdu.u32(44) <= MAX_SOLICITED:
                offset, length, ttt = pdu.u32(40), pdu.u32(44), pdu.u32(20)
                sent, data_sn = 0, 0
                while sent < length:
                    size = min(mrdsl, length - sent)
                    raw.send_pdu(raw.data_out_bhs(itt=pdu.itt, ttt=ttt, data_sn=data_sn, offset=offset + sent,
                                                  data_len=size, final=sent + size >= length),
                                 filled(size, b"\x0f"))
                    sent += size
                    data_sn += 1
        return False

    def final_check(self) -> None:
        """After the run a well-behaved initiator still logs in and gets answers."""
        self.drop()
        raw = self._connect()
        raw.sock.settimeout(5.0)
        assert raw.ping(b"still-serving").opcode == NOP_IN
        raw.close()


def test_fuzzed_pdus_and_cdbs_leave_the_daemon_serving(arena_factory) -> None:
    arena = arena_factory()
    runner = FuzzRunner(arena)
    log = DaemonLog(arena.daemon, from_start=True)
    deadline = time.monotonic() + FUZZ_SECONDS

    rss = RssSampler(arena.daemon, kill_growth=RSS_GROWTH_LIMIT + 512 * MIB)

    def assert_still_serving() -> None:
        assert arena.daemon.running, f"the daemon died ({rss.verdict()})\n{arena.daemon.log_text()[-3000:]}"

    @settings(max_examples=EXAMPLES_PER_BATCH, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(script=scripts())
    def one_batch(script: Script) -> None:
        if time.monotonic() >= deadline:
            return
        failure: OSError | None = None
        try:
            runner.run(script)
        except OSError as error:
            failure = error
        assert_still_serving()             # a dead daemon explains a refused connection best
        if failure is not None:
            raise failure
        if runner.examples % 20 == 0:
            log.assert_clean(settle=0)

    with rss:
        while time.monotonic() < deadline:
            one_batch()
    runner.drop()
    rss.assert_growth_at_most(RSS_GROWTH_LIMIT)
    assert_still_serving()
    assert runner.examples >= 50, f"only {runner.examples} examples ran in {FUZZ_SECONDS:g} s"
    runner.final_check()
    arena.assert_everyone_else_served()
