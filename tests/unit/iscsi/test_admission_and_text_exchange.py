"""Admission (connections, sessions and failed logins per source address) and the bounded text
exchange, each on its own."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from odxtarget.transport.iscsi.admission import MAX_TRACKED_ADDRESSES, Admission
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.pdu import RESERVED_TAG, RejectReason, TextRequest
from odxtarget.transport.iscsi.text_exchange import TextActionKind, TextExchange


# ------------------------------------------------------------------ admission
def test_connections_are_bounded_per_address_and_per_daemon():
    admission = Admission(IscsiLimits(max_connections=3, max_connections_per_address=2))
    assert admission.admit_connection("10.0.0.1", 0) is None
    assert admission.admit_connection("10.0.0.1", 0) is None
    assert "max_connections_per_address" in admission.admit_connection("10.0.0.1", 0)
    assert admission.admit_connection("10.0.0.2", 0) is None
    assert "max_connections (3)" in admission.admit_connection("10.0.0.3", 0)
    admission.connection_closed("10.0.0.1")
    assert admission.admit_connection("10.0.0.1", 0) is None
    assert admission.connection_count == 3


def test_sessions_are_bounded_and_released():
    admission = Admission(IscsiLimits(max_sessions=2, max_sessions_per_address=1))
    assert admission.admit_session("a") is None
    assert "max_sessions_per_address" in admission.admit_session("a")
    assert admission.admit_session("b") is None
    assert "max_sessions (2)" in admission.admit_session("c")
    admission.session_closed("a")
    admission.session_closed("a")          # closing twice never goes negative
    assert admission.admit_session("a") is None
    assert admission.session_count == 2


def test_failed_logins_throttle_an_address_for_the_window_only():
    admission = Admission(IscsiLimits(max_failed_logins_per_address=3, failed_login_window=10))
    for now in (0, 1, 2):
        assert admission.admit_connection("bad", now) is None
        admission.connection_closed("bad")
        admission.login_failed("bad", now)
    assert "3 failed logins" in admission.admit_connection("bad", 5)
    assert admission.admit_connection("good", 5) is None
    assert admission.admit_connection("bad", 10.5) is None      # the first failure left the window


def test_failure_history_is_bounded():
    admission = Admission(IscsiLimits(max_failed_logins_per_address=1))
    for number in range(MAX_TRACKED_ADDRESSES + 10):
        admission.login_failed(f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}", 0)
    assert len(admission._failures) == MAX_TRACKED_ADDRESSES
    assert admission.throttled("10.0.0.0", 0) is False          # the oldest was forgotten
    assert admission.throttled(f"10.0.{(MAX_TRACKED_ADDRESSES + 9) >> 8 & 255}.{(MAX_TRACKED_ADDRESSES + 9) & 255}", 0)


# ------------------------------------------------------------------ text exchange
def exchange(max_text_bytes=100, answer=lambda text: b"A=" + str(len(text)).encode() + b"\0", send_limit=16):
    ttts = itertools.count(1)
    return TextExchange(max_text_bytes, answer, lambda: next(ttts), lambda: send_limit)


def test_long_answers_go_out_in_pieces_fetched_by_ttt():
    text = exchange(answer=lambda text: b"K=" + b"v" * 40 + b"\0")
    first = text.receive(TextRequest(initiator_task_tag=1, data=b"SendTargets=All\0"))
    assert (first.final, first.cont, len(first.data)) == (False, True, 16)
    second = text.receive(TextRequest(initiator_task_tag=1, target_transfer_tag=first.target_transfer_tag))
    third = text.receive(TextRequest(initiator_task_tag=1, target_transfer_tag=second.target_transfer_tag))
    assert third.final and first.data + second.data + third.data == b"K=" + b"v" * 40 + b"\0"
    assert not text.pending


def test_an_unknown_ttt_is_rejected():
    action = exchange().receive(TextRequest(initiator_task_tag=1, target_transfer_tag=77))
    assert action.kind is TextActionKind.REJECT and action.reject_reason == RejectReason.INVALID_PDU_FIELD


def test_a_new_itt_replaces_a_pending_exchange():
    text = exchange()
    text.receive(TextRequest(initiator_task_tag=1, cont=True, final=False, data=b"A=" + b"x" * 50))
    action = text.receive(TextRequest(initiator_task_tag=2, data=b"B=1\0"))
    assert action.kind is TextActionKind.RESPOND and action.data == b"A=4\0"


def test_a_malformed_request_is_rejected():
    action = exchange(answer=lambda text: None).receive(TextRequest(initiator_task_tag=1, data=b"junk"))
    assert action.kind is TextActionKind.REJECT and action.reject_reason == RejectReason.PROTOCOL_ERROR


requests = st.builds(
    lambda itt, ttt, cont, size: TextRequest(initiator_task_tag=itt, target_transfer_tag=ttt, cont=cont,
                                             final=not cont, data=b"X-a=" + b"v" * size),
    st.integers(0, 2), st.sampled_from([RESERVED_TAG, 1, 2, 3]), st.booleans(), st.integers(0, 120))


@given(st.lists(requests, max_size=60))
def test_collected_text_never_passes_the_bound(sequence):
    text = exchange(max_text_bytes=100)
    for request in sequence:
        action = text.receive(request)
        assert action.kind in (TextActionKind.RESPOND, TextActionKind.REJECT)
        current = text._current
        assert current is None or len(current.request) <= 100
