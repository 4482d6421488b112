"""A deliberately small, independent iSCSI initiator for tests that need to send bad bytes.

It shares no code with ``odxtarget.transport.iscsi``: the PDU layouts are written out here again
from RFC 7143 section 11, so a bug in the target's codec cannot hide behind the same bug in the
test's codec. Blocking sockets with timeouts; one connection per object.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import crc32c

# Initiator opcodes (RFC 7143 11.1.1)
NOP_OUT, SCSI_CMD, TMF_REQ, LOGIN_REQ, TEXT_REQ, DATA_OUT, LOGOUT_REQ, SNACK_REQ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10
# Target opcodes
NOP_IN, SCSI_RSP, TMF_RSP, LOGIN_RSP, TEXT_RSP, DATA_IN, LOGOUT_RSP, R2T, ASYNC, REJECT = (
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F)
IMMEDIATE = 0x40
BHS_LEN = 48


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def encode_text(pairs: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in items)


def decode_text(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in data.split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out[k] = v
    return out


def decode_text_pairs(data: bytes) -> list[tuple[str, str]]:
    """Every key=value pair in order, repeats kept (a SendTargets answer repeats TargetName and
    TargetAddress, RFC 7143 Appendix D)."""
    pairs = []
    for item in data.split(b"\0"):
        if item:
            k, _, v = item.decode(errors="replace").partition("=")
            pairs.append((k, v))
    return pairs


@dataclass
class Pdu:
    bhs: bytes
    data: bytes = b""

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def itt(self) -> int:
        return struct.unpack_from(">I", self.bhs, 16)[0]

    def u32(self, offset: int) -> int:
        return struct.unpack_from(">I", self.bhs, offset)[0]

    # SCSI Response / Data-In helpers
    @property
    def status(self) -> int:
        return self.bhs[3]

    @property
    def response(self) -> int:
        return self.bhs[2]

    @property
    def stat_sn(self) -> int:
        return self.u32(24)

    @property
    def exp_cmd_sn(self) -> int:
        return self.u32(28)

    @property
    def max_cmd_sn(self) -> int:
        return self.u32(32)

    @property
    def reject_reason(self) -> int:
        return self.bhs[2]

    @property
    def sense(self) -> bytes:
        if len(self.data) < 2:
            return b""
        n = struct.unpack_from(">H", self.data, 0)[0]
        return self.data[2:2 + n]


def sense_triplet(sense: bytes) -> tuple[int, int, int]:
    """(key, asc, ascq) from fixed or descriptor sense."""
    if not sense:
        return (0, 0, 0)
    if sense[0] & 0x7F in (0x72, 0x73):
        return (sense[1] & 0xF, sense[2], sense[3])
    return (sense[2] & 0xF, sense[12], sense[13])


class LoginFailed(Exception):
    def __init__(self, status_class: int, status_detail: int):
        super().__init__(f"login failed {status_class:02x}/{status_detail:02x}")
        self.status_class = status_class
        self.status_detail = status_detail


class RawInitiator:
    """One iSCSI connection whose every byte the test controls."""

    def __init__(self, host: str, port: int, initiator: str = "iqn.2026-11.org.odxtarget.test:raw",
                 isid: bytes = b"\x80\x12\x34\x56\x78\x9a", timeout: float = 5.0,
                 source_address: str | None = None):
        # source_address: connect from another loopback address (127.0.0.2, ...) to look like
        # another host to per-address accounting.
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source_address, 0) if source_address else None)
        self.sock.settimeout(timeout)
        self.initiator = initiator
        self.isid = isid
        self.tsih = 0
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.itt = 1
        self.header_digest = False
        self.data_digest = False
        self.params: dict[str, str] = {}
        self.trace: list[Pdu] | None = None     # set to [] to keep every PDU received

    # --- framing -----------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, bhs: bytes, data: bytes = b"", *, bad_header_digest: bool = False,
              bad_data_digest: bool = False) -> bytes:
        assert len(bhs) == BHS_LEN
        out = bytearray(bhs)
        if self.header_digest:
            digest = crc32c.crc32c(bhs)
            if bad_header_digest:
                digest ^= 0xFFFFFFFF
            out += struct.pack("<I", digest)
        if data:
            padded = data + b"\0" * _pad4(len(data))
            out += padded
            if self.data_digest:
                digest = crc32c.crc32c(padded)
                if bad_data_digest:
                    digest ^= 0xFFFFFFFF
                out += struct.pack("<I", digest)
        return bytes(out)

    def send_pdu(self, bhs: bytes, data: bytes = b"", **kw) -> None:
        self.send_raw(self.frame(bhs, data, **kw))

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by target")
            buf += chunk
        return bytes(buf)

    def recv_pdu(self) -> Pdu:
        bhs = self._recv_exact(BHS_LEN)
        ahs_len = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        if ahs_len:
            self._recv_exact(ahs_len)
        if self.header_digest:
            self._recv_exact(4)
        data = b""
        if dlen:
            data = self._recv_exact(dlen + _pad4(dlen))[:dlen]
            if self.data_digest:
                self._recv_exact(4)
        pdu = Pdu(bhs, data)
        if self.trace is not None:
            self.trace.append(pdu)
        if pdu.opcode in (SCSI_RSP, NOP_IN, TMF_RSP, TEXT_RSP, LOGOUT_RSP, REJECT, LOGIN_RSP, ASYNC) or (
                pdu.opcode == DATA_IN and pdu.flags & 0x01):
            if pdu.opcode != NOP_IN or pdu.itt != 0xFFFFFFFF:
                self.exp_stat_sn = pdu.stat_sn + 1
        return pdu

    def is_closed(self, wait: float = 2.0) -> bool:
        """True when the target has closed the connection (EOF or reset) within ``wait`` seconds."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

    # --- login ---------------------------------------------------------------------------------
    def login_bhs(self, *, transit: bool, csg: int, nsg: int, data_len: int, itt: int = 0,
                  version_max: int = 0, version_min: int = 0, tsih: int | None = None, cid: int = 0) -> bytes:
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        return struct.pack(">BBBBB3s6sHIHHII16s", IMMEDIATE | LOGIN_REQ, flags, version_max, version_min, 0,
                           data_len.to_bytes(3, "big"), self.isid, self.tsih if tsih is None else tsih,
                           itt, cid, 0, self.cmd_sn, self.exp_stat_sn, b"\0" * 16)

    def login_exchange(self, keys, *, transit: bool, csg: int, nsg: int, **kw) -> tuple[Pdu, dict[str, str]]:
        data = encode_text(keys)
        self.send_pdu(self.login_bhs(transit=transit, csg=csg, nsg=nsg, data_len=len(data), **kw), data)
        rsp = self.recv_pdu()
        assert rsp.opcode == LOGIN_RSP, f"expected login response, got opcode {rsp.opcode:#x}"
        return rsp, decode_text(rsp.data)

    def login(self, target: str, *, header_digest: str = "None", data_digest: str = "None",
              chap: tuple[str, str] | None = None, extra: dict[str, str] | None = None,
              session_type: str = "Normal") -> dict[str, str]:
        """Log in (optionally with one-way CHAP) and return the target's operational keys."""
        base = {"InitiatorName": self.initiator, "SessionType": session_type}
        if session_type == "Normal":
            base["TargetName"] = target
        if chap is not None:
            import hashlib
            rsp, keys = self.login_exchange({**base, "AuthMethod": "CHAP"}, transit=False, csg=0, nsg=0)
            self._check_login(rsp)
            rsp, keys = self.login_exchange({"CHAP_A": "5"}, transit=False, csg=0, nsg=0)
            self._check_login(rsp)
            ident = int(keys["CHAP_I"])
            challenge = bytes.fromhex(keys["CHAP_C"][2:])
            response = hashlib.md5(bytes([ident]) + chap[1].encode() + challenge).hexdigest()
            rsp, keys = self.login_exchange({"CHAP_N": chap[0], "CHAP_R": "0x" + response},
                                            transit=True, csg=0, nsg=1)
            self._check_login(rsp)
            op_keys: dict[str, str] = {}
        else:
            op_keys = dict(base)
            op_keys["AuthMethod"] = "None"
            rsp, keys = self.login_exchange(op_keys, transit=True, csg=0, nsg=1)
            self._check_login(rsp)
            op_keys = {}
        op_keys.update({"HeaderDigest": header_digest, "DataDigest": data_digest,
                        "ErrorRecoveryLevel": "0", "InitialR2T": "Yes", "ImmediateData": "Yes",
                        "MaxBurstLength": "262144", "FirstBurstLength": "65536",
                        "MaxRecvDataSegmentLength": "262144", "DefaultTime2Wait": "0",
                        "DefaultTime2Retain": "0", "MaxOutstandingR2T": "1", "MaxConnections": "1",
                        "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes"})
        if extra:
            op_keys.update(extra)
        rsp, keys = self.login_exchange(op_keys, transit=True, csg=1, nsg=3)
        self._check_login(rsp)
        self.tsih = struct.unpack_from(">H", rsp.bhs, 14)[0]
        self.params = keys
        self.header_digest = keys.get("HeaderDigest") == "CRC32C"
        self.data_digest = keys.get("DataDigest") == "CRC32C"
        if session_type == "Normal":
            self.clear_unit_attentions()
        return keys

    def clear_unit_attentions(self, lun: int = 0, limit: int = 8) -> None:
        """TEST UNIT READY until no unit attention is pending (as libiscsi's test tool does)."""
        for _ in range(limit):
            rsp, _ = self.command(bytes(6), lun=lun)
            if rsp.status == 0:
                return
            if sense_triplet(rsp.sense)[0] != 0x6:
                raise AssertionError(f"TEST UNIT READY failed: {sense_triplet(rsp.sense)}")
        raise AssertionError("unit attentions never cleared")

    @staticmethod
    def _check_login(rsp: Pdu) -> None:
        if rsp.bhs[36] != 0:
            raise LoginFailed(rsp.bhs[36], rsp.bhs[37])

    # --- full feature ------------------------------------------------------------------------------
    def scsi_cmd_bhs(self, cdb: bytes, *, lun: int = 0, read: bool = False, write: bool = False,
                     edtl: int = 0, data_len: int = 0, itt: int | None = None, cmd_sn: int | None = None,
                     final: bool = True, immediate: bool = False) -> bytes:
        flags = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | 0x01  # simple
        lun_field = struct.pack(">HHI", lun & 0x3FFF, 0, 0)
        cdb16 = cdb.ljust(16, b"\0")[:16]
        return struct.pack(">BBH B3s 8s I I I I 16s", (IMMEDIATE if immediate else 0) | SCSI_CMD, flags, 0, 0,
                           data_len.to_bytes(3, "big"), lun_field,
                           self.itt if itt is None else itt, edtl, self.cmd_sn if cmd_sn is None else cmd_sn,
                           self.exp_stat_sn, cdb16)

    def data_out_bhs(self, *, itt: int, ttt: int, data_sn: int, offset: int, data_len: int, lun: int = 0,
                     final: bool = True) -> bytes:
        return struct.pack(">BBH B3s 8s I I I I I I I I", DATA_OUT, 0x80 if final else 0, 0, 0,
                           data_len.to_bytes(3, "big"), struct.pack(">HHI", lun, 0, 0), itt, ttt, 0,
                           self.exp_stat_sn, 0, data_sn, offset, 0)

    def nop_out_bhs(self, *, itt: int, data_len: int = 0, immediate: bool = True, cmd_sn: int | None = None) -> bytes:
        return struct.pack(">BBH B3s 8s I I I I 16s", (IMMEDIATE if immediate else 0) | NOP_OUT, 0x80, 0, 0,
                           data_len.to_bytes(3, "big"), b"\0" * 8, itt, 0xFFFFFFFF,
                           self.cmd_sn if cmd_sn is None else cmd_sn, self.exp_stat_sn, b"\0" * 16)

    def text_bhs(self, *, itt: int, data_len: int, ttt: int = 0xFFFFFFFF, final: bool = True, cont: bool = False,
                 immediate: bool = False, cmd_sn: int | None = None) -> bytes:
        """Text Request header (RFC 7143 11.10): F and C bits, ITT, TTT, CmdSN, ExpStatSN."""
        flags = (0x80 if final else 0) | (0x40 if cont else 0)
        return struct.pack(">BBH B3s 8s I I I I 16s", (IMMEDIATE if immediate else 0) | TEXT_REQ, flags, 0, 0,
                           data_len.to_bytes(3, "big"), b"\0" * 8, itt, ttt,
                           self.cmd_sn if cmd_sn is None else cmd_sn, self.exp_stat_sn, b"\0" * 16)

    def text(self, payload: bytes) -> tuple[Pdu, list[tuple[str, str]]]:
        """One whole Text Request exchange: send ``payload`` (already key=value\\0 encoded) in one
        final PDU, fetch a continued answer piece by piece (RFC 7143 11.11.2), and return the last
        PDU (a final Text Response, or whatever else ended the exchange) with every answered pair."""
        itt = self.next_itt()
        self.send_pdu(self.text_bhs(itt=itt, data_len=len(payload)), payload)
        self.cmd_sn += 1
        answer = bytearray()
        while True:
            pdu = self.recv_pdu()
            if pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
                continue
            if pdu.opcode != TEXT_RSP or pdu.itt != itt:
                return pdu, decode_text_pairs(bytes(answer))
            answer += pdu.data
            if pdu.flags & 0x80:
                return pdu, decode_text_pairs(bytes(answer))
            self.send_pdu(self.text_bhs(itt=itt, data_len=0, ttt=pdu.u32(20)))
            self.cmd_sn += 1

    def ping(self, payload: bytes = b"") -> Pdu:
        """NOP-Out ping; returns the NOP-In answer (skipping target-initiated NOP-Ins)."""
        itt = self.next_itt()
        self.send_pdu(self.nop_out_bhs(itt=itt, data_len=len(payload)), payload)
        while True:
            pdu = self.recv_pdu()
            if pdu.opcode == NOP_IN and pdu.itt == itt:
                return pdu
            if pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
                continue
            return pdu

    def command(self, cdb: bytes, *, lun: int = 0, data_out: bytes = b"", data_in_len: int = 0,
                edtl: int | None = None) -> tuple[Pdu, bytes]:
        """Run one SCSI command, answering R2Ts; returns (final response PDU, data-in bytes)."""
        itt = self.next_itt()
        write = bool(data_out)
        if edtl is None:
            edtl = len(data_out) if write else data_in_len
        first_burst = int(self.params.get("FirstBurstLength", "65536"))
        immediate_ok = self.params.get("ImmediateData", "Yes") == "Yes"
        mrdsl = int(self.params.get("MaxRecvDataSegmentLength", "8192"))
        imm = data_out[:min(first_burst, mrdsl)] if (write and immediate_ok) else b""
        self.send_pdu(self.scsi_cmd_bhs(cdb, lun=lun, read=data_in_len > 0, write=write, edtl=edtl,
                                        data_len=len(imm), itt=itt), imm)
        self.cmd_sn += 1
        data_in = bytearray()
        while True:
            pdu = self.recv_pdu()
            if pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
                continue
            if pdu.opcode == R2T and pdu.itt == itt:
                ttt, offset, length = pdu.u32(20), pdu.u32(40), pdu.u32(44)
                sent, data_sn = 0, 0
                while sent < length:
                    chunk = data_out[offset + sent: offset + sent + min(mrdsl, length - sent)]
                    final = sent + len(chunk) >= length
                    self.send_pdu(self.data_out_bhs(itt=itt, ttt=ttt, data_sn=data_sn, offset=offset + sent,
                                                    data_len=len(chunk), lun=lun, final=final), chunk)
                    sent += len(chunk)
                    data_sn += 1
                continue
            if pdu.opcode == DATA_IN and pdu.itt == itt:
                offset = pdu.u32(40)
                if len(data_in) < offset + len(pdu.data):
                    data_in.extend(b"\0" * (offset + len(pdu.data) - len(data_in)))
                data_in[offset:offset + len(pdu.data)] = pdu.data
                if pdu.flags & 0x01:
                    return pdu, bytes(data_in)
                continue
            return pdu, bytes(data_in)

    def read10(self, lba: int, blocks: int, block_size: int = 512, lun: int = 0) -> tuple[Pdu, bytes]:
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)
        return self.command(cdb, lun=lun, data_in_len=blocks * block_size)

    def write10(self, lba: int, data: bytes, block_size: int = 512, lun: int = 0, fua: bool = False) -> Pdu:
        cdb = struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, len(data) // block_size, 0)
        rsp, _ = self.command(cdb, lun=lun, data_out=data)
        return rsp

    def logout(self) -> Pdu:
        itt = self.next_itt()
        bhs = struct.pack(">BBH B3s 8s I HH I I 16s", IMMEDIATE | LOGOUT_REQ, 0x80, 0, 0, b"\0\0\0", b"\0" * 8,
                          itt, 0, 0, self.cmd_sn, self.exp_stat_sn, b"\0" * 16)
        self.send_pdu(bhs)
        return self.recv_pdu()
