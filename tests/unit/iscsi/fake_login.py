"""A minimal login state machine honouring the H2a contract, for tests of the full feature
phase that must not depend on the real negotiation code (and for running libiscsi before
login.py existed). It accepts any initiator, runs the operational stage with fixed answers
and records the initiator's MaxRecvDataSegmentLength."""

from __future__ import annotations

from dataclasses import dataclass

from odxtarget.transport.iscsi.negotiation import SessionParameters
from odxtarget.transport.iscsi.text import encode_text, parse_text


@dataclass(slots=True)
class Reply:
    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_active: int
    status_class: int
    status_detail: int
    data: bytes
    finished: bool
    failed: bool


class FakeLogin:
    def __init__(self, directory, *, portal_group_tag_for=None, target_mrdsl: int = 262144,
                 header_digest: bool = False, data_digest: bool = False, initial_r2t: bool | None = None,
                 immediate_data: bool | None = None):
        self.directory = directory
        self.target_mrdsl = target_mrdsl
        self.parameters = SessionParameters(max_recv_data_segment_length=target_mrdsl)
        self.session_type = "Normal"
        self.initiator_name = None
        self.initiator_alias = None
        self.target_name = None
        self.isid = b""
        self.tsih = 0
        self.failure_reason = None
        self._digests = (header_digest, data_digest)
        self._initial_r2t = initial_r2t
        self._immediate_data = immediate_data
        self._declared = False

    def receive(self, request) -> Reply:
        self.isid = request.isid
        self.tsih = request.tsih
        answers = []
        for key, value in parse_text(bytes(request.data)):
            if key == "InitiatorName":
                self.initiator_name = value
            elif key == "InitiatorAlias":
                self.initiator_alias = value
            elif key == "SessionType":
                self.session_type = value
            elif key == "TargetName":
                self.target_name = value
                if self.directory.lookup(value) is None:
                    self.failure_reason = f"unknown target {value}"
                    return Reply(False, False, request.csg, request.nsg, 0, 2, 3, b"", False, True)
            elif key == "AuthMethod":
                answers.append((key, "None"))
            elif key == "HeaderDigest":
                self.parameters.header_digest = self._digests[0] and "CRC32C" in value
                answers.append((key, "CRC32C" if self.parameters.header_digest else "None"))
            elif key == "DataDigest":
                self.parameters.data_digest = self._digests[1] and "CRC32C" in value
                answers.append((key, "CRC32C" if self.parameters.data_digest else "None"))
            elif key == "MaxRecvDataSegmentLength":
                self.parameters.max_xmit_data_segment_length = int(value)
            elif key == "InitialR2T":
                want = value == "Yes" if self._initial_r2t is None else self._initial_r2t
                self.parameters.initial_r2t = want or value == "Yes"
                answers.append((key, "Yes" if self.parameters.initial_r2t else "No"))
            elif key == "ImmediateData":
                want = value == "Yes" if self._immediate_data is None else self._immediate_data
                self.parameters.immediate_data = want and value == "Yes"
                answers.append((key, "Yes" if self.parameters.immediate_data else "No"))
            elif key == "MaxBurstLength":
                self.parameters.max_burst_length = min(int(value), 16 << 20)
                answers.append((key, str(self.parameters.max_burst_length)))
            elif key == "FirstBurstLength":
                self.parameters.first_burst_length = min(int(value), 256 << 10)
                answers.append((key, str(self.parameters.first_burst_length)))
            elif key == "MaxOutstandingR2T":
                self.parameters.max_outstanding_r2t = min(int(value), 8)
                answers.append((key, str(self.parameters.max_outstanding_r2t)))
            elif key in ("MaxConnections",):
                answers.append((key, "1"))
            elif key == "ErrorRecoveryLevel":
                answers.append((key, "0"))
            elif key in ("DataPDUInOrder", "DataSequenceInOrder"):
                answers.append((key, value))
            elif key in ("DefaultTime2Wait", "DefaultTime2Retain"):
                answers.append((key, "0" if key.endswith("Retain") else value))
            elif key in ("IFMarker", "OFMarker"):
                answers.append((key, "No"))
            else:
                answers.append((key, "NotUnderstood"))
        if request.csg == 1 and not self._declared:
            answers.append(("MaxRecvDataSegmentLength", str(self.target_mrdsl)))
            self._declared = True
        if self.parameters.first_burst_length > self.parameters.max_burst_length:
            self.parameters.first_burst_length = self.parameters.max_burst_length
        finished = request.transit and request.nsg == 3
        return Reply(request.transit, False, request.csg, request.nsg if request.transit else request.csg, 0, 0, 0,
                     encode_text(answers), finished, False)


def fake_login_factory(**options):
    def factory(context):
        return FakeLogin(context.directory, target_mrdsl=context.target_mrdsl, **options)
    return factory
