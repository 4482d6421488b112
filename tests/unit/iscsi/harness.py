"""An initiator stub wired to an ``IscsiConnection`` through bytes only (no sockets)."""

from __future__ import annotations

import itertools

from odxtarget.config import TargetConfig
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.connection import IscsiConnection
from odxtarget.transport.iscsi.session import SessionRegistry
from odxtarget.transport.iscsi.text import encode_text, parse_text
from tests.unit.iscsi.fake_login import fake_login_factory
from tests.unit.iscsi.scsi_double import ScsiTargetDouble

IQN = "iqn.2026-11.org.odxtarget:unit"
INITIATOR = "iqn.2026-11.org.example:initiator"
READ10 = 0x28
WRITE10 = 0x2A


def cdb10(opcode: int, lba: int, blocks: int) -> bytes:
    return bytes([opcode, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes(1)


class Initiator:
    """Speaks to one connection; ``send`` returns the decoded PDUs the target answered."""

    _isids = itertools.count(1)

    def __init__(self, registry: SessionRegistry | None = None, target=None, *, login_factory=None,
                 nop_interval: float = 0.0, isid: bytes | None = None, runner=None, **login_options):
        self.target = target if target is not None else ScsiTargetDouble()
        if registry is None:
            registry = SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), self.target)])
        self.registry = registry
        self.connection = IscsiConnection(registry, peer="127.0.0.1:40000",
                                          login_factory=login_factory or fake_login_factory(**login_options),
                                          nop_interval=nop_interval, runner=runner)
        self.decoder = P.PduFramer(max_recv_data_segment_length=1 << 24)
        self.isid = isid if isid is not None else bytes([0x80, 0, 0, 0, 0, next(self._isids) & 0xFF])
        self.cmd_sn = 100
        self.itt = itertools.count(1)
        self.header_digest = False
        self.data_digest = False
        self.now = 0.0

    # raw I/O ------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list:
        self.connection.receive_data(data, self.now)
        return self.receive()

    def receive(self) -> list:
        out = b"".join(bytes(chunk) for chunk in self.connection.data_to_send())
        return [raw.decode() for raw in self.decoder.feed(out)]

    def wire(self, pdu) -> bytes:
        return b"".join(bytes(b) for b in P.encode_pdu(pdu, self.header_digest, self.data_digest))

    def send(self, pdu) -> list:
        return self.feed(self.wire(pdu))

    # login ---------------------------------------------------------------------------------
    def login(self, *, tsih: int = 0, keys: dict | None = None, target: str = IQN, session_type: str = "Normal"):
        pairs = {"InitiatorName": INITIATOR, "SessionType": session_type, "HeaderDigest": "CRC32C,None",
                 "DataDigest": "CRC32C,None", "InitialR2T": "No", "ImmediateData": "Yes",
                 "MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "262144", "FirstBurstLength": "65536",
                 "MaxOutstandingR2T": "1"}
        if session_type == "Normal":
            pairs["TargetName"] = target
        pairs.update(keys or {})
        request = P.LoginRequest(transit=True, csg=1, nsg=3, isid=self.isid, tsih=tsih, initiator_task_tag=0,
                                 cid=0, cmd_sn=self.cmd_sn, exp_stat_sn=0, data=encode_text(pairs.items()))
        replies = self.send(request)
        assert len(replies) == 1 and isinstance(replies[0], P.LoginResponse)
        reply = replies[0]
        if reply.status_class == 0 and reply.transit and reply.nsg == 3:
            answers = dict(parse_text(bytes(reply.data)))
            self.header_digest = answers.get("HeaderDigest") == "CRC32C"
            self.data_digest = answers.get("DataDigest") == "CRC32C"
            self.decoder.configure(max_recv_data_segment_length=1 << 24, header_digest=self.header_digest,
                                   data_digest=self.data_digest)
        return reply

    # full feature helpers ------------------------------------------------------------------
    def next_cmd_sn(self) -> int:
        sn = self.cmd_sn
        self.cmd_sn = (sn + 1) % (1 << 32)
        return sn

    def command(self, cdb: bytes, *, read=False, write=False, edtl=0, data=b"", final=True, immediate=False,
                cmd_sn=None, itt=None, lun=0) -> P.ScsiCommandPdu:
        return P.ScsiCommandPdu(immediate=immediate, final=final, read=read, write=write, lun=P.encode_lun(lun),
                                initiator_task_tag=next(self.itt) if itt is None else itt,
                                expected_data_transfer_length=edtl,
                                cmd_sn=self.next_cmd_sn() if cmd_sn is None else cmd_sn, exp_stat_sn=0, cdb=cdb,
                                data=data)
