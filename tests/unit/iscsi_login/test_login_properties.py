"""Hypothesis sweeps: whatever the initiator sends, the login machine answers with a reply.

The only exception ``receive`` may raise is ``LoginUsageError`` (called after the end); peer
input never crashes it, and never reaches the 03/00 internal-error path.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odxtarget.transport.iscsi.login import (
    MAX_REPLY_SEGMENT,
    LoginReply,
    LoginRequestInfo,
    LoginState,
    LoginStateMachine,
    LoginStatus,
    LoginUsageError,
)
from odxtarget.transport.iscsi.negotiation import KEY_TABLE
from odxtarget.transport.iscsi.text import encode_text, parse_text
from tests.unit.iscsi_login.helpers import (
    CHAP_TARGET,
    INITIATOR,
    ISID,
    MUTUAL_TARGET,
    OPEN_TARGET,
    OTHER_INITIATOR,
    CountingBytes,
    standard_directory,
)

KEYS = sorted(KEY_TABLE) + ["X-com.example.Thing", "X#NodeArchitecture", "FutureKey"]
PLAUSIBLE_VALUES = [
    "Yes", "No", "None", "CRC32C", "CRC32C,None", "CHAP", "CHAP,None", "5", "7,5", "0", "1", "2", "512",
    "8192", "262144", "16777215", "16777216", "0x2000", "0b", "0x", "0xzz", "0x" + "ab" * 16, "0bAAAA",
    "Normal", "Discovery", "All", "Reject", "Irrelevant", "NotUnderstood", "", "1~2", "alice", ",",
    INITIATOR, OTHER_INITIATOR, OPEN_TARGET, CHAP_TARGET, MUTUAL_TARGET,
]
values = st.one_of(st.sampled_from(PLAUSIBLE_VALUES),
                   st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24))
key_sets = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


@st.composite
def requests(draw, *, leading: bool = False) -> LoginRequestInfo:
    keys = draw(key_sets)
    if leading:
        keys = {"InitiatorName": draw(st.sampled_from([INITIATOR, OTHER_INITIATOR])),
                "TargetName": draw(st.sampled_from([OPEN_TARGET, CHAP_TARGET, MUTUAL_TARGET])),
                "SessionType": draw(st.sampled_from(["Normal", "Discovery"])), **keys}
    data = draw(st.one_of(st.just(encode_text(keys.items())), st.binary(max_size=64)) if not leading
                else st.just(encode_text(keys.items())))
    return LoginRequestInfo(
        transit=draw(st.booleans()), cont=draw(st.booleans()),
        csg=draw(st.sampled_from([0, 0, 1, 1, 2, 3])), nsg=draw(st.sampled_from([0, 1, 1, 3, 3, 2])),
        version_max=draw(st.sampled_from([0, 0, 0, 1])), version_min=draw(st.sampled_from([0, 0, 0, 1])),
        isid=draw(st.sampled_from([ISID, ISID, b"\x00" * 6, b"\x01"])), tsih=draw(st.sampled_from([0, 0, 0, 7])),
        initiator_task_tag=1, cid=draw(st.sampled_from([0, 0, 0, 1])), cmd_sn=1, exp_stat_sn=0, data=data)


def check_reply(machine: LoginStateMachine, request: LoginRequestInfo, reply: LoginReply) -> None:
    assert isinstance(reply, LoginReply)
    assert (reply.status_class, reply.status_detail) != LoginStatus.TARGET_ERROR.value, machine.failure_reason
    assert reply.version_active == 0
    assert len(reply.data) <= MAX_REPLY_SEGMENT
    if reply.transit:
        assert request.transit                     # the target never transits on its own
        assert not reply.cont
    if reply.failed:
        assert reply.status_class in (2, 3) and reply.data == b"" and not reply.finished
        assert machine.state is LoginState.FAILED and machine.failure_reason
    else:
        assert (reply.status_class, reply.status_detail) == (0, 0)
        if not reply.cont:
            parse_text(reply.data)                 # a complete answer is well-formed text
    if reply.finished:
        assert reply.transit and reply.nsg == 3 and machine.state is LoginState.FULL_FEATURE


def run(sequence: list[LoginRequestInfo]) -> None:
    machine = LoginStateMachine(standard_directory(), token_bytes=CountingBytes())
    for request in sequence:
        reply = machine.receive(request)
        check_reply(machine, request, reply)
        if reply.failed or reply.finished:
            with pytest.raises(LoginUsageError):
                machine.receive(request)
            return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=5))
def test_random_requests_always_get_a_reply(sequence):
    run(sequence)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(leading=True), st.lists(requests(), max_size=4))
def test_random_keys_after_a_plausible_start_always_get_a_reply(first, rest):
    run([first, *rest])
