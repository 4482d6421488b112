"""CHAP (RFC 1994, RFC 7143 12.1.3) with vectors computed independently via hashlib.md5."""

from __future__ import annotations

import base64
import hashlib

import pytest

from odxtarget.config import ChapConfig
from odxtarget.transport.iscsi.chap import (
    CHALLENGE_LENGTH,
    ChapAuthenticator,
    ChapFailure,
    ChapState,
    chap_response,
)
from tests.unit.iscsi_login.helpers import MUTUAL, ONE_WAY, CountingBytes


def challenged(credentials: ChapConfig = ONE_WAY) -> tuple[ChapAuthenticator, int, bytes]:
    authenticator = ChapAuthenticator(credentials, token_bytes=CountingBytes(0x41))
    answer = dict(authenticator.receive({"CHAP_A": "7,5"}))
    return authenticator, int(answer["CHAP_I"]), bytes.fromhex(answer["CHAP_C"][2:])


def expected_response(identifier: int, secret: str, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()


def test_known_vector():
    # RFC 1994: MD5(identifier || secret || challenge); vector computed by hand with hashlib.
    assert chap_response(1, b"secret", b"\x00" * 16) == hashlib.md5(b"\x01secret" + b"\x00" * 16).digest()
    assert chap_response(0x41, b"abc", b"xyz").hex() == hashlib.md5(b"Aabcxyz").hexdigest()


def test_challenge_answers_md5_with_random_identifier_and_challenge():
    authenticator = ChapAuthenticator(ONE_WAY, token_bytes=CountingBytes(0x41))
    answer = authenticator.receive({"CHAP_A": "7,6,5"})
    assert answer[0] == ("CHAP_A", "5")
    assert answer[1] == ("CHAP_I", str(0x41))
    assert answer[2] == ("CHAP_C", "0x" + bytes(range(0x42, 0x42 + CHALLENGE_LENGTH)).hex())
    assert CHALLENGE_LENGTH >= 16
    assert authenticator.state is ChapState.AWAIT_RESPONSE


def test_default_randomness_differs_between_logins():
    first = dict(ChapAuthenticator(ONE_WAY).receive({"CHAP_A": "5"}))["CHAP_C"]
    second = dict(ChapAuthenticator(ONE_WAY).receive({"CHAP_A": "5"}))["CHAP_C"]
    assert first != second


@pytest.mark.parametrize("encode", [
    lambda raw: "0x" + raw.hex(),
    lambda raw: "0X" + raw.hex().upper(),
    lambda raw: "0b" + base64.b64encode(raw).decode(),
])
def test_one_way_success_in_every_encoding(encode):
    authenticator, identifier, challenge = challenged()
    answer = authenticator.receive({"CHAP_N": "alice",
                                    "CHAP_R": encode(expected_response(identifier, "initiator-secret", challenge))})
    assert answer == []
    assert authenticator.authenticated


@pytest.mark.parametrize(("keys", "fragment"), [
    ({"CHAP_N": "alice", "CHAP_R": "0x" + "00" * 16}, "do not match"),
    ({"CHAP_N": "mallory", "CHAP_R": None}, "unknown CHAP_N"),
    ({"CHAP_N": "alice", "CHAP_R": "0x1234"}, "do not match"),     # wrong length
    ({"CHAP_N": "alice", "CHAP_R": "not-binary"}, "malformed"),
    ({"CHAP_R": None}, "must come together"),
    ({"CHAP_N": "alice", "CHAP_R": None, "CHAP_I": "1"}, "both CHAP_I and CHAP_C"),
    ({"CHAP_A": "5"}, "CHAP_A sent twice"),
])
def test_one_way_failures(keys, fragment):
    authenticator, identifier, challenge = challenged()
    good = "0x" + expected_response(identifier, "initiator-secret", challenge).hex()
    keys = {key: good if value is None else value for key, value in keys.items()}
    with pytest.raises(ChapFailure, match=fragment):
        authenticator.receive(keys)
    assert not authenticator.authenticated


def test_wrong_secret_fails():
    authenticator, identifier, challenge = challenged()
    with pytest.raises(ChapFailure):
        authenticator.receive({"CHAP_N": "alice",
                               "CHAP_R": "0x" + expected_response(identifier, "guess", challenge).hex()})


def test_no_md5_no_login():
    with pytest.raises(ChapFailure, match="no common CHAP algorithm"):
        ChapAuthenticator(ONE_WAY).receive({"CHAP_A": "6,7"})


def test_response_before_challenge_fails():
    with pytest.raises(ChapFailure, match="expected only CHAP_A"):
        ChapAuthenticator(ONE_WAY).receive({"CHAP_N": "alice", "CHAP_R": "0x00"})


def test_no_chap_keys_after_success():
    authenticator, identifier, challenge = challenged()
    authenticator.receive({"CHAP_N": "alice",
                           "CHAP_R": "0x" + expected_response(identifier, "initiator-secret", challenge).hex()})
    with pytest.raises(ChapFailure, match="after authentication completed"):
        authenticator.receive({"CHAP_A": "5"})
    assert authenticator.receive({}) == []


def test_mutual_success():
    authenticator, identifier, challenge = challenged(MUTUAL)
    initiator_challenge = bytes(range(100, 132))
    answer = authenticator.receive({
        "CHAP_N": "alice",
        "CHAP_R": "0x" + expected_response(identifier, "initiator-secret", challenge).hex(),
        "CHAP_I": "77",
        "CHAP_C": "0b" + base64.b64encode(initiator_challenge).decode(),
    })
    assert answer == [("CHAP_N", "target-bob"),
                      ("CHAP_R", "0x" + expected_response(77, "target-secret", initiator_challenge).hex())]
    assert authenticator.authenticated


def mutual_keys(identifier: int, challenge: bytes, initiator_challenge: bytes, *, chap_i: str = "77") -> dict:
    return {"CHAP_N": "alice",
            "CHAP_R": "0x" + expected_response(identifier, "initiator-secret", challenge).hex(),
            "CHAP_I": chap_i, "CHAP_C": "0x" + initiator_challenge.hex()}


def test_mutual_refuses_reflected_challenge():
    authenticator, identifier, challenge = challenged(MUTUAL)
    with pytest.raises(ChapFailure, match="reflected"):
        authenticator.receive(mutual_keys(identifier, challenge, challenge))


def test_mutual_without_target_credentials():
    authenticator, identifier, challenge = challenged(ONE_WAY)
    with pytest.raises(ChapFailure, match="no mutual credentials"):
        authenticator.receive(mutual_keys(identifier, challenge, b"\x01" * 16))


def test_mutual_refuses_shared_secret():
    same = ChapConfig("alice", "initiator-secret", "target-bob", "initiator-secret")
    authenticator, identifier, challenge = challenged(same)
    with pytest.raises(ChapFailure, match="equals the initiator secret"):
        authenticator.receive(mutual_keys(identifier, challenge, b"\x01" * 16))


def test_mutual_identifier_must_be_an_octet():
    authenticator, identifier, challenge = challenged(MUTUAL)
    with pytest.raises(ChapFailure, match="malformed"):
        authenticator.receive(mutual_keys(identifier, challenge, b"\x01" * 16, chap_i="256"))


def test_mutual_challenge_length_limit():
    authenticator, identifier, challenge = challenged(MUTUAL)
    with pytest.raises(ChapFailure, match="malformed"):
        authenticator.receive(mutual_keys(identifier, challenge, b"\x01" * 1025))
