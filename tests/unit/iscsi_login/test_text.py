"""The key=value codec and value grammars (RFC 7143 6.1, 6.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odxtarget.transport.iscsi.text import (
    LARGE_VALUE_MAX,
    TEXT_VALUE_MAX,
    TextFormatError,
    encode_text,
    format_base64,
    format_boolean,
    format_hex,
    is_valid_key_name,
    parse_binary,
    parse_boolean,
    parse_list,
    parse_numerical,
    parse_range,
    parse_text,
)

# One table for both directions (h11 SIMPLE_CASES style).
CASES = [
    ([], b""),
    ([("HeaderDigest", "None")], b"HeaderDigest=None\x00"),
    ([("InitiatorName", "iqn.2024-01.org.example:i"), ("SessionType", "Discovery")],
     b"InitiatorName=iqn.2024-01.org.example:i\x00SessionType=Discovery\x00"),
    ([("TargetAlias", "")], b"TargetAlias=\x00"),                       # empty value is legal
    ([("X-com.example.Key", "a=b")], b"X-com.example.Key=a=b\x00"),      # value is all after the first "="
    ([("X#NodeArchitecture", "Linux")], b"X#NodeArchitecture=Linux\x00"),
    ([("InitiatorAlias", "h\u00f6st")], "InitiatorAlias=h\u00f6st\x00".encode()),
]


@pytest.mark.parametrize(("pairs", "wire"), CASES)
def test_encode_matches_wire(pairs, wire):
    assert encode_text(pairs) == wire


@pytest.mark.parametrize(("pairs", "wire"), CASES)
def test_parse_matches_pairs(pairs, wire):
    assert parse_text(wire) == pairs


def test_extra_nul_padding_is_ignored():
    assert parse_text(b"A=1\x00\x00\x00B=2\x00\x00") == [("A", "1"), ("B", "2")]


@pytest.mark.parametrize(("wire", "fragment"), [
    (b"HeaderDigest=None", "NUL-terminated"),
    (b"HeaderDigest\x00", "without '='"),
    (b"=None\x00", "invalid key name"),
    (b"Header Digest=None\x00", "invalid key name"),
    (b"K" + b"e" * 255 + b"=1\x00", "invalid key name"),    # too long even to answer NotUnderstood
    (b"A=1\x00A=2\x00", "more than once"),
    (b"A=\xff\xfe\x00", "not UTF-8"),
    (b"K\xc3\xa9=1\x00", "not ASCII"),
])
def test_malformed_text_is_refused(wire, fragment):
    with pytest.raises(TextFormatError, match=fragment):
        parse_text(wire)


def test_iscsi_protocol_level_is_a_valid_key_despite_its_lower_case_start():
    assert parse_text(b"iSCSIProtocolLevel=1\x00") == [("iSCSIProtocolLevel", "1")]
    assert not is_valid_key_name("iSCSIOtherKey")


def test_key_name_length_limit_is_63():
    assert is_valid_key_name("K" + "e" * 62)
    assert not is_valid_key_name("K" + "e" * 63)


def test_value_limit_is_per_key():
    limits = {"Short": TEXT_VALUE_MAX}.get
    ok = b"Short=" + b"v" * TEXT_VALUE_MAX + b"\x00"
    assert parse_text(ok, value_limit=lambda key: limits(key, LARGE_VALUE_MAX))[0][1] == "v" * TEXT_VALUE_MAX
    with pytest.raises(TextFormatError, match="more than 255"):
        parse_text(b"Short=" + b"v" * (TEXT_VALUE_MAX + 1) + b"\x00",
                   value_limit=lambda key: limits(key, LARGE_VALUE_MAX))
    long_ok = b"Long=" + b"v" * LARGE_VALUE_MAX + b"\x00"
    assert len(parse_text(long_ok)[0][1]) == LARGE_VALUE_MAX
    with pytest.raises(TextFormatError):
        parse_text(b"Long=" + b"v" * (LARGE_VALUE_MAX + 1) + b"\x00")


def test_encode_refuses_bad_keys_and_nul_values():
    with pytest.raises(TextFormatError):
        encode_text([("bad key", "x")])
    with pytest.raises(TextFormatError):
        encode_text([("Good", "a\x00b")])


def test_repeated_keys_only_where_allowed():
    wire = encode_text([("TargetAddress", "a:1,1"), ("TargetAddress", "b:1,1")])
    assert wire.count(b"TargetAddress=") == 2
    assert parse_text(wire, repeatable={"TargetAddress"}) == [("TargetAddress", "a:1,1"), ("TargetAddress", "b:1,1")]
    with pytest.raises(TextFormatError, match="more than once"):
        parse_text(wire)


# --- value grammars --------------------------------------------------------------------------


def test_boolean():
    assert parse_boolean("Yes") is True and parse_boolean("No") is False
    assert format_boolean(True) == "Yes" and format_boolean(False) == "No"
    for bad in ("yes", "NO", "", "True"):
        with pytest.raises(TextFormatError):
            parse_boolean(bad)


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("8192", 8192), ("0x2000", 8192), ("0X2000", 8192),
                                              ("0xffffffffffffffff", 2**64 - 1)])
def test_numerical_values(text, number):
    assert parse_numerical(text) == number


@pytest.mark.parametrize("text", ["", "08192", "-1", "1e3", "0x", "0xg1", " 1", "18446744073709551616"])
def test_bad_numerical_values(text):
    with pytest.raises(TextFormatError):
        parse_numerical(text)


def test_numerical_range_check():
    assert parse_numerical("512", 512, 1024) == 512
    with pytest.raises(TextFormatError, match="outside"):
        parse_numerical("511", 512, 1024)


def test_range():
    assert parse_range("1~5") == (1, 5)
    assert parse_range("0x10~0x10") == (16, 16)
    for bad in ("5~1", "1-5", "~5"):
        with pytest.raises(TextFormatError):
            parse_range(bad)


def test_list():
    assert parse_list("CRC32C,None") == ["CRC32C", "None"]
    with pytest.raises(TextFormatError):
        parse_list("CRC32C,,None")


def test_binary_hex_and_base64():
    assert parse_binary("0x0102ff") == b"\x01\x02\xff"
    assert parse_binary("0XABC") == b"\x0a\xbc"          # odd digit count: implied leading zero
    assert parse_binary("0bAQL/") == b"\x01\x02\xff"
    assert format_hex(b"\x01\x02\xff") == "0x0102ff"
    assert format_base64(b"\x01\x02\xff") == "0bAQL/"
    for bad in ("0102", "0x", "0xzz", "0b", "0b!!!!", "0bAQ"):
        with pytest.raises(TextFormatError):
            parse_binary(bad)


def test_binary_length_limit():
    assert len(parse_binary("0x" + "00" * 1024)) == 1024
    with pytest.raises(TextFormatError, match="exceeds"):
        parse_binary("0x" + "00" * 1025)


# --- properties ------------------------------------------------------------------------------

_KEY_TAIL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-+@_"
_key_names = st.builds(str.__add__, st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                       st.text(alphabet=_KEY_TAIL, max_size=62))
_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(st.dictionaries(_key_names, _values, max_size=12))
def test_round_trip(mapping):
    pairs = list(mapping.items())
    wire = encode_text(pairs)
    assert parse_text(wire) == pairs
    assert wire.count(b"\x00") == len(pairs)


@given(st.binary(min_size=1, max_size=1024))
def test_binary_round_trip(raw):
    assert parse_binary(format_hex(raw)) == raw
    assert parse_binary(format_base64(raw)) == raw


@given(st.binary(max_size=300))
def test_parse_only_raises_text_format_error(wire):
    try:
        parse_text(wire)
    except TextFormatError:
        pass


@pytest.mark.parametrize("key", ["headerDigest", "sENDtARGETS", "K" + "e" * 63, "X_lower-start"])
def test_keys_outside_the_grammar_are_parsed_as_unknown_keys(key):
    """RFC 7143 6.2: keys are case-sensitive, so these are keys nobody defined, answered
    NotUnderstood by the negotiation, not malformed text."""
    assert parse_text(key.encode() + b"=All\x00") == [(key, "All")]
    assert encode_text([(key, "NotUnderstood")]) == key.encode() + b"=NotUnderstood\x00"
