"""The login state machine: successful flows as libiscsi and open-iscsi drive them, and every refusal."""

from __future__ import annotations

import pytest

from odxtarget.transport.iscsi.limits import DEFAULT_LIMITS
from odxtarget.transport.iscsi.login import (
    MAX_REPLY_SEGMENT,
    REQUEST_STAGES,
    STAGE_TRANSITIONS,
    LoginState,
    LoginStateMachine,
    LoginStatus,
    LoginUsageError,
    refusal_reply,
)
from odxtarget.transport.iscsi.negotiation import SessionParameters
from odxtarget.transport.iscsi.text import encode_text, parse_text
from tests.unit.iscsi_login.helpers import (
    ACL_TARGET,
    CHAP_TARGET,
    INITIATOR,
    MUTUAL,
    MUTUAL_TARGET,
    ONE_WAY,
    ONE_WAY_ACL_TARGET,
    OPEN_TARGET,
    OTHER_INITIATOR,
    ChapInitiator,
    CountingBytes,
    answers,
    leading_keys,
    md5_response,
    request,
    standard_directory,
)

# What libiscsi 1.19.0 sends in its operational stage (lib/login.c), with its default values.
LIBISCSI_OPERATIONAL = [
    ("HeaderDigest", "None,CRC32C"), ("DataDigest", "None"), ("InitialR2T", "No"), ("ImmediateData", "Yes"),
    ("MaxBurstLength", "262144"), ("FirstBurstLength", "262144"), ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"), ("MaxOutstandingR2T", "1"), ("ErrorRecoveryLevel", "0"), ("IFMarker", "No"),
    ("OFMarker", "No"), ("MaxConnections", "1"), ("MaxRecvDataSegmentLength", "262144"),
    ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"),
]

# Enough unknown keys that the NotUnderstood answers exceed one login reply (MAX_REPLY_SEGMENT).
MANY_UNKNOWN = [(f"X-org.example.{i:03d}".ljust(60, "k"), "v") for i in range(150)]


@pytest.fixture
def directory():
    return standard_directory()


@pytest.fixture
def machine(directory):
    return LoginStateMachine(directory, token_bytes=CountingBytes())


def assert_success(reply, *, transit=True, finished=False):
    assert (reply.status_class, reply.status_detail) == (0, 0)
    assert reply.version_active == 0
    assert not reply.failed
    assert reply.transit is transit
    assert reply.finished is finished


def assert_refused(machine, reply, status: LoginStatus):
    assert (reply.status_class, reply.status_detail) == status.value
    assert reply.failed and not reply.finished and not reply.transit
    assert reply.data == b""
    assert machine.state is LoginState.FAILED
    assert machine.failure_reason is not None and status.name in machine.failure_reason


# --- successful logins -----------------------------------------------------------------------


def test_libiscsi_without_auth_logs_in_with_one_request(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + LIBISCSI_OPERATIONAL, csg=1, nsg=3))
    assert_success(reply, finished=True)
    assert (reply.csg, reply.nsg) == (1, 3)
    got = answers(reply)
    assert got["TargetPortalGroupTag"] == "1"              # RFC 7143 13.9: first response
    assert got["MaxRecvDataSegmentLength"] == "262144"     # our declaration; libiscsi reads it
    assert got["TargetAlias"] == "open disk"
    assert got["HeaderDigest"] == "None" and got["DataDigest"] == "None"
    assert got["IFMarker"] == "No" and got["OFMarker"] == "No"
    assert "InitiatorName" not in got and "SessionType" not in got   # declarations are not answered
    assert machine.parameters == SessionParameters(
        max_recv_data_segment_length=262144, max_xmit_data_segment_length=262144, first_burst_length=262144,
        initial_r2t=False, default_time2retain=0)
    assert (machine.session_type, machine.initiator_name, machine.target_name) == ("Normal", INITIATOR, OPEN_TARGET)
    assert machine.target.iqn == OPEN_TARGET
    assert machine.isid == bytes.fromhex("800000000001") and machine.tsih == 0
    assert machine.failure_reason is None


def test_open_iscsi_style_security_stage_with_auth_none(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("InitiatorAlias", "host1"),
                                                                  ("AuthMethod", "None")], csg=0, nsg=1))
    assert_success(reply)
    assert (reply.csg, reply.nsg) == (0, 1)
    assert answers(reply) == {"TargetPortalGroupTag": "1", "AuthMethod": "None"}
    reply = machine.receive(request([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C,None"),
                                     ("MaxRecvDataSegmentLength", "32768")], csg=1, nsg=3))
    assert_success(reply, finished=True)
    assert machine.parameters.header_digest and machine.parameters.data_digest
    assert machine.parameters.max_xmit_data_segment_length == 32768
    assert machine.initiator_alias == "host1"


def test_security_stage_may_continue_before_transit(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("AuthMethod", "None")], transit=False, csg=0))
    assert_success(reply, transit=False)
    assert reply.nsg == 0
    assert machine.state is LoginState.SECURITY
    assert_success(machine.receive(request(csg=0, nsg=1)))
    assert machine.state is LoginState.OPERATIONAL


def test_security_straight_to_full_feature_keeps_defaults(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("AuthMethod", "None")], csg=0, nsg=3))
    assert_success(reply, finished=True)
    assert machine.parameters == SessionParameters()   # nothing negotiated, nothing declared: 8192 both ways


def test_operational_stage_over_several_requests(machine):
    assert_success(machine.receive(request(leading_keys(OPEN_TARGET) + [("MaxBurstLength", "65536")],
                                           transit=False)), transit=False)
    reply = machine.receive(request([("FirstBurstLength", "131072")]))
    assert_success(reply, finished=True)
    assert answers(reply) == {"FirstBurstLength": "131072"}     # declarations only in the first answer
    assert machine.parameters.first_burst_length == 65536        # never above MaxBurstLength


def test_acl_target_admits_listed_initiator(machine):
    reply = machine.receive(request(leading_keys(ACL_TARGET)))
    assert_success(reply, finished=True)
    assert answers(reply)["TargetPortalGroupTag"] == "7"


def test_portal_group_tag_callback(directory):
    machine = LoginStateMachine(directory, portal_group_tag_for=lambda name: 99)
    assert answers(machine.receive(request(leading_keys(OPEN_TARGET))))["TargetPortalGroupTag"] == "99"


def test_target_mrdsl_is_declared(directory):
    machine = LoginStateMachine(directory, target_mrdsl=65536)
    assert answers(machine.receive(request(leading_keys(OPEN_TARGET))))["MaxRecvDataSegmentLength"] == "65536"
    assert machine.parameters.max_recv_data_segment_length == 65536


def test_discovery_session(machine):
    reply = machine.receive(request(leading_keys(None, session_type="Discovery")
                                    + [("MaxBurstLength", "262144"), ("HeaderDigest", "None")]))
    assert_success(reply, finished=True)
    got = answers(reply)
    assert "TargetPortalGroupTag" not in got
    assert got["MaxBurstLength"] == "Irrelevant" and got["HeaderDigest"] == "None"
    assert machine.session_type == "Discovery" and machine.target_name is None


def test_discovery_ignores_target_chap_and_acls(machine):
    reply = machine.receive(request(leading_keys(None, initiator=OTHER_INITIATOR, session_type="Discovery")
                                    + [("AuthMethod", "None")], csg=0, nsg=1))
    assert_success(reply)


def test_unknown_and_extension_keys_are_not_understood(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("X-com.example.Thing", "1"),
                                                                  ("X#NodeArchitecture", "Linux"),
                                                                  ("FutureKey", "9")]))
    assert_success(reply, finished=True)
    got = answers(reply)
    assert got["X-com.example.Thing"] == got["X#NodeArchitecture"] == got["FutureKey"] == "NotUnderstood"


def test_answer_tokens_from_the_initiator_are_ignored(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("HeaderDigest", "Reject")]))
    assert_success(reply, finished=True)
    assert "HeaderDigest" not in answers(reply)


def test_libiscsi_repeats_declarations_after_auth_none(machine):
    # libiscsi 1.19.0 with CHAP credentials, against a target without CHAP: the target picks None and
    # libiscsi repeats InitiatorName/TargetName/SessionType in its operational request.
    assert_success(machine.receive(request(leading_keys(OPEN_TARGET) + [("AuthMethod", "CHAP,None")],
                                           csg=0, nsg=1)))
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + LIBISCSI_OPERATIONAL))
    assert_success(reply, finished=True)


def test_non_leading_connection_may_declare_but_not_negotiate_session_keys(machine):
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("HeaderDigest", "CRC32C")], tsih=5))
    assert_success(reply, finished=True)
    assert machine.tsih == 5 and machine.parameters.header_digest


# --- CHAP ---------------------------------------------------------------------------------------


def test_chap_one_way_like_libiscsi(machine):
    initiator = ChapInitiator(machine, CHAP_TARGET, ONE_WAY)
    reply = initiator.offer()
    assert_success(reply, transit=False)                      # CHAP not done: no transit yet
    assert answers(reply) == {"TargetPortalGroupTag": "1", "AuthMethod": "CHAP"}
    reply = initiator.select_algorithm()
    assert_success(reply, transit=False)
    got = answers(reply)
    assert got["CHAP_A"] == "5" and got["CHAP_C"].startswith("0x") and len(got["CHAP_C"]) == 2 + 64
    reply = initiator.respond()
    assert_success(reply)
    assert (reply.csg, reply.nsg) == (0, 1)
    assert reply.data == b""
    assert_success(machine.receive(request(LIBISCSI_OPERATIONAL)), finished=True)


def test_chap_mutual_like_libiscsi(machine):
    initiator = ChapInitiator(machine, MUTUAL_TARGET, MUTUAL, mutual_challenge=bytes(range(32)), mutual_identifier=9)
    initiator.offer()
    initiator.select_algorithm("5")
    reply = initiator.respond(base64=True)
    assert_success(reply)
    assert answers(reply) == {"CHAP_N": "target-bob",
                              "CHAP_R": "0x" + md5_response(9, "target-secret", bytes(range(32))).hex()}
    assert_success(machine.receive(request([])), finished=True)


def test_chap_algorithm_may_come_with_auth_method(machine):
    reply = machine.receive(request(leading_keys(CHAP_TARGET) + [("AuthMethod", "CHAP"), ("CHAP_A", "5")],
                                    csg=0, nsg=1))
    assert_success(reply, transit=False)
    assert {"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C"} <= set(answers(reply))


def test_chap_response_with_transit_zero_then_empty_transit(machine):
    initiator = ChapInitiator(machine, CHAP_TARGET, ONE_WAY)
    initiator.offer()
    initiator.select_algorithm()
    challenge = answers(initiator.replies[-1])
    response = md5_response(int(challenge["CHAP_I"]), ONE_WAY.password, bytes.fromhex(challenge["CHAP_C"][2:]))
    reply = machine.receive(request([("CHAP_N", "alice"), ("CHAP_R", "0x" + response.hex())], transit=False, csg=0))
    assert_success(reply, transit=False)
    assert_success(machine.receive(request(csg=0, nsg=3)), finished=True)


# --- C bit --------------------------------------------------------------------------------------


def test_request_text_split_over_continued_pdus(machine):
    wire = encode_text(leading_keys(OPEN_TARGET) + LIBISCSI_OPERATIONAL)
    first = machine.receive(request(wire[:37], transit=False, cont=True))
    assert_success(first, transit=False)
    assert first.data == b"" and not first.cont
    second = machine.receive(request(wire[37:90], transit=False, cont=True))
    assert second.data == b""
    reply = machine.receive(request(wire[90:]))
    assert_success(reply, finished=True)
    assert answers(reply)["MaxRecvDataSegmentLength"] == "262144"


def test_long_answer_goes_out_in_pieces_and_transits_with_the_last(machine):
    unknown = MANY_UNKNOWN
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + unknown))
    pieces = [reply]
    while reply.cont:
        assert not reply.transit and not reply.finished
        assert len(reply.data) == MAX_REPLY_SEGMENT
        reply = machine.receive(request(b""))
        pieces.append(reply)
    assert len(pieces) >= 2
    assert_success(pieces[-1], finished=True)
    text = parse_text(b"".join(piece.data for piece in pieces))
    assert sum(1 for key, value in text if value == "NotUnderstood") == len(MANY_UNKNOWN)


def test_long_answer_waits_for_transit_request(machine):
    unknown = MANY_UNKNOWN
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + unknown))
    while reply.cont:
        reply = machine.receive(request(b"", transit=False))
    assert_success(reply, transit=False)                 # the last piece answered a T=0 request
    assert_success(machine.receive(request(b"")), finished=True)


# --- refusals -----------------------------------------------------------------------------------

NO_AUTH = [("AuthMethod", "None")]

REFUSALS = [
    # (description, requests before the refused one, the refused request, status)
    ("no InitiatorName", [], request([("TargetName", OPEN_TARGET)]), LoginStatus.MISSING_PARAMETER),
    ("InitiatorName not an iSCSI name", [], request([("InitiatorName", "bob"), ("TargetName", OPEN_TARGET)]),
     LoginStatus.INITIATOR_ERROR),
    ("normal session without TargetName", [], request(leading_keys(None)), LoginStatus.MISSING_PARAMETER),
    ("unknown target", [], request(leading_keys("iqn.2024-01.org.example:none")), LoginStatus.NOT_FOUND),
    ("initiator not in ACL", [], request(leading_keys(ACL_TARGET, initiator=OTHER_INITIATOR)),
     LoginStatus.AUTHORIZATION_FAILURE),
    ("unknown SessionType", [], request(leading_keys(OPEN_TARGET, session_type="Bogus")),
     LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
    ("version 1 only", [], request(leading_keys(OPEN_TARGET), version_min=1, version_max=1),
     LoginStatus.UNSUPPORTED_VERSION),
    ("ISID of wrong length", [], request(leading_keys(OPEN_TARGET), isid=b"\x80\x00"), LoginStatus.INITIATOR_ERROR),
    ("CHAP target, AuthMethod=None", [], request(leading_keys(CHAP_TARGET) + NO_AUTH, csg=0, nsg=1),
     LoginStatus.AUTHENTICATION_FAILURE),
    ("CHAP target, security stage skipped", [], request(leading_keys(CHAP_TARGET)),
     LoginStatus.AUTHENTICATION_FAILURE),
    ("CHAP target, transit without AuthMethod", [], request(leading_keys(CHAP_TARGET), csg=0, nsg=1),
     LoginStatus.AUTHENTICATION_FAILURE),
    ("ACL CHAP applies over a CHAP-less target", [], request(leading_keys(MUTUAL_TARGET)),
     LoginStatus.AUTHENTICATION_FAILURE),
    ("no CHAP configured, initiator insists on CHAP", [],
     request(leading_keys(OPEN_TARGET) + [("AuthMethod", "CHAP")], csg=0, nsg=1), LoginStatus.AUTHENTICATION_FAILURE),
    ("CHAP keys without AuthMethod", [], request(leading_keys(OPEN_TARGET) + [("CHAP_A", "5")], csg=0, nsg=1),
     LoginStatus.AUTHENTICATION_FAILURE),
    ("malformed text", [], request(b"InitiatorName=" + INITIATOR.encode() + b"\x00Broken\x00"),
     LoginStatus.INITIATOR_ERROR),
    ("duplicate key in one PDU", [], request(encode_text(leading_keys(OPEN_TARGET)) + b"SessionType=Normal\x00"),
     LoginStatus.INITIATOR_ERROR),
    ("negotiated key repeated in a later PDU", [request(leading_keys(OPEN_TARGET) + [("HeaderDigest", "None")],
                                                        transit=False)],
     request([("HeaderDigest", "CRC32C")]), LoginStatus.INITIATOR_ERROR),
    ("InitiatorName changed in a later PDU", [request(leading_keys(OPEN_TARGET), transit=False)],
     request([("InitiatorName", OTHER_INITIATOR)]), LoginStatus.INITIATOR_ERROR),
    ("operational key in the security stage", [],
     request(leading_keys(OPEN_TARGET) + [("MaxBurstLength", "8192")], csg=0, nsg=1), LoginStatus.INITIATOR_ERROR),
    ("AuthMethod in the operational stage", [], request(leading_keys(OPEN_TARGET) + NO_AUTH),
     LoginStatus.INITIATOR_ERROR),
    ("SendTargets during login", [], request(leading_keys(OPEN_TARGET) + [("SendTargets", "All")]),
     LoginStatus.INITIATOR_ERROR),
    ("target-only key from the initiator", [], request(leading_keys(OPEN_TARGET) + [("TargetAddress", "x:1,1")]),
     LoginStatus.INITIATOR_ERROR),
    ("invalid MaxRecvDataSegmentLength", [], request(leading_keys(OPEN_TARGET) + [("MaxRecvDataSegmentLength", "1")]),
     LoginStatus.INITIATOR_ERROR),
    ("leading-only key on a non-leading connection", [],
     request(leading_keys(OPEN_TARGET) + [("MaxBurstLength", "8192")], tsih=3), LoginStatus.INITIATOR_ERROR),
    ("T and C both set", [], request(leading_keys(OPEN_TARGET), transit=True, cont=True), LoginStatus.INITIATOR_ERROR),
    ("CSG 2 is reserved", [], request(leading_keys(OPEN_TARGET), csg=2, nsg=3), LoginStatus.INVALID_DURING_LOGIN),
    ("CSG 3 in a request", [], request(leading_keys(OPEN_TARGET), csg=3, nsg=3), LoginStatus.INVALID_DURING_LOGIN),
    ("NSG 2 is reserved", [], request(leading_keys(OPEN_TARGET), csg=1, nsg=2), LoginStatus.INVALID_DURING_LOGIN),
    ("transit to the same stage", [], request(leading_keys(OPEN_TARGET), csg=1, nsg=1),
     LoginStatus.INVALID_DURING_LOGIN),
    ("back to security after operational", [request(leading_keys(OPEN_TARGET) + NO_AUTH, csg=0, nsg=1)],
     request([], csg=0, nsg=1), LoginStatus.INVALID_DURING_LOGIN),
    ("ISID changes mid-login", [request(leading_keys(OPEN_TARGET), transit=False)],
     request([], isid=bytes.fromhex("800000000002")), LoginStatus.INITIATOR_ERROR),
    ("CID changes mid-login", [request(leading_keys(OPEN_TARGET), transit=False)], request([], cid=1),
     LoginStatus.INITIATOR_ERROR),
    ("CSG changes within a C-bit sequence", [request(b"InitiatorName=iqn.", transit=False, cont=True, csg=0)],
     request(b"2024-01.x:y\x00", csg=1), LoginStatus.INITIATOR_ERROR),
    ("request text beyond the buffer limit", [request(b"X-a=" + b"v" * (DEFAULT_LIMITS.max_text_bytes - 10), transit=False,
                                                      cont=True)],
     request(b"v" * 100 + b"\x00"), LoginStatus.OUT_OF_RESOURCES),
    ("text while the target's answer is pending",
     [request(leading_keys(OPEN_TARGET) + MANY_UNKNOWN)],
     request([("HeaderDigest", "None")]), LoginStatus.INITIATOR_ERROR),
]


@pytest.mark.parametrize(("description", "before", "refused", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal(machine, description, before, refused, status):
    for earlier in before:
        reply = machine.receive(earlier)
        assert not reply.failed, machine.failure_reason
    assert_refused(machine, machine.receive(refused), status)


def test_wrong_chap_response_is_authentication_failure(machine):
    initiator = ChapInitiator(machine, CHAP_TARGET, ONE_WAY)
    initiator.offer()
    initiator.select_algorithm()
    assert_refused(machine, initiator.respond(secret="wrong-secret"), LoginStatus.AUTHENTICATION_FAILURE)
    assert "CHAP" in machine.failure_reason


def test_wrong_chap_name_is_authentication_failure(machine):
    initiator = ChapInitiator(machine, CHAP_TARGET, ONE_WAY)
    initiator.offer()
    initiator.select_algorithm()
    assert_refused(machine, initiator.respond(name="mallory"), LoginStatus.AUTHENTICATION_FAILURE)


def test_mutual_chap_without_mutual_credentials(machine):
    initiator = ChapInitiator(machine, ONE_WAY_ACL_TARGET, ONE_WAY, mutual_challenge=b"\x07" * 16)
    initiator.offer()
    initiator.select_algorithm()
    assert_refused(machine, initiator.respond(), LoginStatus.AUTHENTICATION_FAILURE)
    assert "no mutual credentials" in machine.failure_reason


def test_chap_without_md5(machine):
    initiator = ChapInitiator(machine, CHAP_TARGET, ONE_WAY)
    initiator.offer()
    assert_refused(machine, initiator.select_algorithm("6,7"), LoginStatus.AUTHENTICATION_FAILURE)


def test_target_removed_during_login(machine, directory):
    assert_success(machine.receive(request(leading_keys(OPEN_TARGET) + NO_AUTH, csg=0, nsg=1)))
    directory.remove(OPEN_TARGET)
    assert_refused(machine, machine.receive(request([])), LoginStatus.TARGET_REMOVED)


def test_internal_error_becomes_target_error(machine, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("bug")
    monkeypatch.setattr("odxtarget.transport.iscsi.login.answer_offer", broken)
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("HeaderDigest", "None")]))
    assert_refused(machine, reply, LoginStatus.TARGET_ERROR)
    assert "KeyError" in machine.failure_reason


@pytest.mark.parametrize("first", [request(leading_keys(OPEN_TARGET)), request([("TargetName", OPEN_TARGET)])])
def test_no_requests_after_the_end(machine, first):
    machine.receive(first)
    with pytest.raises(LoginUsageError):
        machine.receive(request(leading_keys(OPEN_TARGET)))


def test_refusal_reply_for_the_connection_code():
    reply = refusal_reply(LoginStatus.SESSION_DOES_NOT_EXIST, csg=1)
    assert (reply.status_class, reply.status_detail, reply.csg) == (2, 0x0A, 1)
    assert reply.failed and not reply.finished and reply.data == b""


def test_status_codes_match_rfc_7143_11_13_5():
    assert {status.name: status.value for status in LoginStatus} == {
        "SUCCESS": (0, 0), "TARGET_MOVED_TEMPORARILY": (1, 1), "TARGET_MOVED_PERMANENTLY": (1, 2),
        "INITIATOR_ERROR": (2, 0), "AUTHENTICATION_FAILURE": (2, 1), "AUTHORIZATION_FAILURE": (2, 2),
        "NOT_FOUND": (2, 3), "TARGET_REMOVED": (2, 4), "UNSUPPORTED_VERSION": (2, 5),
        "TOO_MANY_CONNECTIONS": (2, 6), "MISSING_PARAMETER": (2, 7), "CANT_INCLUDE_IN_SESSION": (2, 8),
        "SESSION_TYPE_NOT_SUPPORTED": (2, 9), "SESSION_DOES_NOT_EXIST": (2, 0x0A), "INVALID_DURING_LOGIN": (2, 0x0B),
        "TARGET_ERROR": (3, 0), "SERVICE_UNAVAILABLE": (3, 1), "OUT_OF_RESOURCES": (3, 2)}


def test_stage_tables_have_no_way_back():
    assert all(state is not LoginState.FULL_FEATURE for state in REQUEST_STAGES.values())
    assert all(nsg > csg for csg, nsg in STAGE_TRANSITIONS)


def test_policy_object_is_not_mutated(directory):
    from odxtarget.transport.iscsi.negotiation import NegotiationPolicy
    policy = NegotiationPolicy(max_outstanding_r2t=2)
    machine = LoginStateMachine(directory, policy=policy, target_mrdsl=16384)
    reply = machine.receive(request(leading_keys(OPEN_TARGET) + [("MaxOutstandingR2T", "4")]))
    assert answers(reply)["MaxOutstandingR2T"] == "2"
    assert answers(reply)["MaxRecvDataSegmentLength"] == "16384"
    assert policy.max_recv_data_segment_length == NegotiationPolicy().max_recv_data_segment_length
