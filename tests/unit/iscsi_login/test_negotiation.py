"""Each RFC 7143 section 13 key: what the target answers and what the session ends up with."""

from __future__ import annotations

import pytest

from odxtarget.transport.iscsi.negotiation import (
    KEY_TABLE,
    NegotiationPolicy,
    ResultFunction,
    Scope,
    SessionParameters,
    Stage,
    TextSessionInfo,
    answer_offer,
    negotiate_text_request,
    reconcile,
    value_limit,
)
from odxtarget.transport.iscsi.text import LARGE_VALUE_MAX, TextFormatError, encode_text, parse_text
from tests.unit.iscsi_login.helpers import ACL_TARGET, INITIATOR, OPEN_TARGET, standard_directory


def negotiate(key: str, offered: str, *, discovery: bool = False, policy: NegotiationPolicy | None = None):
    params = SessionParameters()
    answer = answer_offer(KEY_TABLE[key], offered, policy or NegotiationPolicy(), params, discovery=discovery)
    return answer, params


# (key, offered, expected answer, SessionParameters attribute, expected value); policy defaults.
NEGOTIATION_CASES = [
    ("HeaderDigest", "CRC32C,None", "CRC32C", "header_digest", True),
    ("HeaderDigest", "None,CRC32C", "None", "header_digest", False),       # initiator's first choice wins
    ("HeaderDigest", "MD5,CRC32C", "CRC32C", "header_digest", True),       # skip what we do not know
    ("HeaderDigest", "MD5", "Reject", "header_digest", False),
    ("DataDigest", "CRC32C", "CRC32C", "data_digest", True),
    ("DataDigest", "None", "None", "data_digest", False),
    ("MaxConnections", "4", "1", "max_connections", 1),                    # Minimum, ours 1
    ("MaxConnections", "0", "Reject", "max_connections", 1),               # range 1..65535
    ("InitialR2T", "Yes", "Yes", "initial_r2t", True),                     # OR, ours No
    ("InitialR2T", "No", "No", "initial_r2t", False),
    ("ImmediateData", "Yes", "Yes", "immediate_data", True),               # AND, ours Yes
    ("ImmediateData", "No", "No", "immediate_data", False),
    ("ImmediateData", "yes", "Reject", "immediate_data", True),            # case sensitive
    ("MaxBurstLength", "1048576", "1048576", "max_burst_length", 1048576),
    ("MaxBurstLength", "16777215", "16777215", "max_burst_length", 16777215),
    ("MaxBurstLength", "16777216", "Reject", "max_burst_length", 262144),  # above 2**24-1
    ("MaxBurstLength", "511", "Reject", "max_burst_length", 262144),
    ("FirstBurstLength", "1048576", "262144", "first_burst_length", 262144),  # capped at 256 KiB
    ("FirstBurstLength", "0x2000", "8192", "first_burst_length", 8192),
    ("DefaultTime2Wait", "0", "2", "default_time2wait", 2),               # Maximum, ours 2
    ("DefaultTime2Wait", "10", "10", "default_time2wait", 10),
    ("DefaultTime2Wait", "3601", "Reject", "default_time2wait", 2),
    ("DefaultTime2Retain", "0", "0", "default_time2retain", 0),           # Minimum, ours 20
    ("DefaultTime2Retain", "60", "20", "default_time2retain", 20),
    ("MaxOutstandingR2T", "16", "8", "max_outstanding_r2t", 8),
    ("MaxOutstandingR2T", "2", "2", "max_outstanding_r2t", 2),
    ("DataPDUInOrder", "No", "No", "data_pdu_in_order", False),           # OR, ours No: initiator decides
    ("DataPDUInOrder", "Yes", "Yes", "data_pdu_in_order", True),
    ("DataSequenceInOrder", "No", "No", "data_sequence_in_order", False),
    ("DataSequenceInOrder", "Yes", "Yes", "data_sequence_in_order", True),
    ("ErrorRecoveryLevel", "2", "0", "error_recovery_level", 0),
    ("ErrorRecoveryLevel", "3", "Reject", "error_recovery_level", 0),
]


@pytest.mark.parametrize(("key", "offered", "expected", "attribute", "value"), NEGOTIATION_CASES)
def test_key_negotiation(key, offered, expected, attribute, value):
    answer, params = negotiate(key, offered)
    assert answer == expected
    assert getattr(params, attribute) == value


@pytest.mark.parametrize(("key", "offered", "expected"), [
    ("TaskReporting", "ResponseFence,RFC3720", "RFC3720"),
    ("TaskReporting", "FastAbort", "Reject"),
    ("iSCSIProtocolLevel", "2", "1"),        # RFC 7144: we implement level 1 (RFC 7143)
    ("iSCSIProtocolLevel", "0", "0"),
    ("iSCSIProtocolLevel", "32", "Reject"),
    ("IFMarker", "Yes", "No"),               # RFC 7143 13.25: markers are obsolete
    ("OFMarker", "Yes", "No"),
    ("IFMarkInt", "2048~8192", "Reject"),
    ("OFMarkInt", "2048~8192", "Reject"),
])
def test_keys_without_session_attribute(key, offered, expected):
    assert negotiate(key, offered)[0] == expected


def test_max_recv_data_segment_length_is_a_declaration():
    answer, params = negotiate("MaxRecvDataSegmentLength", "65536")
    assert answer is None                                    # declarations are not answered
    assert params.max_xmit_data_segment_length == 65536      # it limits what WE send
    assert params.max_recv_data_segment_length == 8192       # our own declaration is separate
    assert negotiate("MaxRecvDataSegmentLength", "100")[0] == "Reject"


def test_policy_drives_the_answers():
    policy = NegotiationPolicy(initial_r2t=True, immediate_data=False, digests=("None",), max_outstanding_r2t=1)
    assert negotiate("InitialR2T", "No", policy=policy)[0] == "Yes"
    assert negotiate("ImmediateData", "Yes", policy=policy)[0] == "No"
    assert negotiate("HeaderDigest", "CRC32C,None", policy=policy)[0] == "None"
    assert negotiate("MaxOutstandingR2T", "4", policy=policy)[0] == "1"


@pytest.mark.parametrize("key", ["MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength",
                                 "FirstBurstLength", "MaxOutstandingR2T", "DataPDUInOrder",
                                 "DataSequenceInOrder", "TaskReporting", "iSCSIProtocolLevel"])
def test_irrelevant_in_discovery_sessions(key):
    offered = {"ImmediateData": "Yes", "InitialR2T": "Yes", "DataPDUInOrder": "Yes",
               "DataSequenceInOrder": "Yes", "TaskReporting": "RFC3720"}.get(key, "1024")
    answer, params = negotiate(key, offered, discovery=True)
    assert answer == "Irrelevant"
    assert params == SessionParameters()


def test_digests_and_timers_still_negotiated_in_discovery():
    assert negotiate("HeaderDigest", "CRC32C", discovery=True) == ("CRC32C", SessionParameters(header_digest=True))
    assert negotiate("DefaultTime2Wait", "5", discovery=True)[0] == "5"


def test_first_burst_never_exceeds_max_burst():
    params = SessionParameters(max_burst_length=4096, first_burst_length=65536)
    reconcile(params)
    assert params.first_burst_length == 4096


def test_table_shape():
    """Spot checks of the table against RFC 7143 section 13."""
    assert KEY_TABLE["HeaderDigest"].scope is Scope.CONNECTION
    assert KEY_TABLE["MaxRecvDataSegmentLength"].scope is Scope.CONNECTION
    assert KEY_TABLE["MaxBurstLength"].scope is Scope.SESSION and KEY_TABLE["MaxBurstLength"].leading_only
    assert KEY_TABLE["SendTargets"].stages == frozenset({Stage.FULL_FEATURE})
    assert KEY_TABLE["AuthMethod"].stages == frozenset({Stage.SECURITY})
    assert KEY_TABLE["DefaultTime2Wait"].result is ResultFunction.MAXIMUM
    assert KEY_TABLE["ImmediateData"].result is ResultFunction.AND
    assert KEY_TABLE["InitialR2T"].result is ResultFunction.OR
    assert value_limit("CHAP_C") == LARGE_VALUE_MAX
    assert value_limit("InitiatorName") == 223
    assert value_limit("HeaderDigest") == 255
    assert value_limit("X-vendor.Unknown") == LARGE_VALUE_MAX
    # Every negotiated key names both our preference and where its result goes (or has none).
    for spec in KEY_TABLE.values():
        if spec.result in (ResultFunction.MINIMUM, ResultFunction.MAXIMUM, ResultFunction.AND,
                           ResultFunction.OR, ResultFunction.FIRST_ACCEPTABLE):
            assert hasattr(NegotiationPolicy(), spec.preference), spec.name
            assert spec.attribute is None or hasattr(SessionParameters(), spec.attribute), spec.name


# --- full feature phase Text Request ---------------------------------------------------------


def text_request(pairs, params=None, *, session_type="Normal", target=OPEN_TARGET, initiator=INITIATOR):
    params = params if params is not None else SessionParameters()
    info = TextSessionInfo(session_type=session_type, initiator_name=initiator,
                           target_name=None if session_type == "Discovery" else target)
    answer = negotiate_text_request(params, encode_text(pairs), standard_directory(), info)
    return parse_text(answer, repeatable={"TargetName", "TargetAddress"}), params


def test_text_request_redeclares_max_recv_data_segment_length():
    answer, params = text_request([("MaxRecvDataSegmentLength", "131072")])
    assert answer == []
    assert params.max_xmit_data_segment_length == 131072


def test_text_request_rejects_login_only_keys_and_ignores_unknown():
    answer, params = text_request([("MaxBurstLength", "1024"), ("HeaderDigest", "CRC32C"),
                                   ("X-com.example.Foo", "1"), ("X#NodeArchitecture", "x"),
                                   ("InitiatorAlias", "renamed"), ("TargetAlias", "x"),
                                   ("MaxRecvDataSegmentLength", "1")])
    assert answer == [("MaxBurstLength", "Reject"), ("HeaderDigest", "Reject"),
                      ("X-com.example.Foo", "NotUnderstood"), ("X#NodeArchitecture", "NotUnderstood"),
                      ("TargetAlias", "Reject"), ("MaxRecvDataSegmentLength", "Reject")]
    assert params == SessionParameters()


def test_text_request_send_targets_in_normal_session():
    answer, _ = text_request([("SendTargets", "")])
    assert answer == [("TargetName", OPEN_TARGET), ("TargetAddress", "127.0.0.1:3260,1"),
                      ("TargetAddress", "[::1]:3261,1")]


def test_text_request_send_targets_all_in_discovery():
    answer, _ = text_request([("SendTargets", "All")], session_type="Discovery")
    names = [value for key, value in answer if key == "TargetName"]
    assert names == [OPEN_TARGET, ACL_TARGET, "iqn.2024-01.org.example:chap",
                     "iqn.2024-01.org.example:mutual", "iqn.2024-01.org.example:oneway"]


def test_text_request_malformed_raises():
    with pytest.raises(TextFormatError):
        negotiate_text_request(SessionParameters(), b"SendTargets=All", standard_directory(),
                               TextSessionInfo("Discovery", INITIATOR, None))
