"""The record of a cluster ROD token (odxtarget.copy.token_record): encoding, decoding, names,
and the lifetime decisions every gateway makes from it (docs/rbd.md, "ROD tokens across
gateways")."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odxtarget.copy import errors
from odxtarget.copy.token_record import (
    RecordError, TokenRecord, TokenState, record_name, snapshot_name, token_digest, token_id_of_record,
    token_id_of_snapshot,
)

TOKEN = bytes(range(256)) * 2


def make(**changes) -> TokenRecord:
    fields = dict(token_id=0x0123_4567_89AB_CDEF, digest=token_digest(TOKEN), rod_type=0x0080_0000, pool="rbd",
                  image="vm", snapshot=snapshot_name(0x0123_4567_89AB_CDEF), designator=bytes.fromhex("6001405abcdef012"),
                  ranges=((0, 8), (100, 16)), block_size=512, image_bytes=1 << 30, bytes_represented=24 * 512,
                  owner="iqn.2026-11.org.example:host", gateway="gw1:42", created=1000.0, inactivity_timeout=60.0,
                  last_used=1000.0)
    fields.update(changes)
    return TokenRecord(**fields)


times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
records = st.builds(
    make,
    token_id=st.integers(1, (1 << 64) - 1),
    pool=st.text(max_size=20), image=st.text(max_size=40), owner=st.text(max_size=60),
    designator=st.binary(max_size=20),
    ranges=st.lists(st.tuples(st.integers(0, 1 << 60), st.integers(0, 1 << 32)), max_size=8).map(tuple),
    block_size=st.sampled_from([512, 4096]),
    inactivity_timeout=st.floats(min_value=1, max_value=600), last_used=times,
    leases=st.dictionaries(st.text(min_size=1, max_size=16), times, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    state=st.sampled_from(list(TokenState)), forget_at=times,
)


@given(records)
def test_a_record_decodes_to_what_was_encoded(record):
    assert TokenRecord.decode(record.encode()) == record


@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_record_error_or_a_record(raw):
    try:
        TokenRecord.decode(raw)
    except RecordError:
        pass


@given(records, st.sampled_from(["token_id", "digest", "ranges", "state", "leases", "last_used", "format"]),
       st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 5), st.lists(st.integers(), max_size=3)))
def test_a_record_with_a_field_of_the_wrong_kind_is_a_record_error(record, key, value):
    fields = json.loads(record.encode())
    fields[key] = value
    try:
        decoded = TokenRecord.decode(json.dumps(fields).encode())
    except RecordError:
        return
    # Only values that are valid for the field decode.
    assert key != "format" or value == 1
    assert key != "token_id" or (isinstance(value, int) and value > 0)
    assert key != "state" or value in {state.value for state in TokenState}
    assert decoded.encode() == TokenRecord.decode(decoded.encode()).encode()


def test_a_record_of_another_format_is_refused():
    fields = json.loads(make().encode())
    fields["format"] = 2
    with pytest.raises(RecordError, match="format"):
        TokenRecord.decode(json.dumps(fields).encode())


def test_only_the_exact_token_matches_its_digest():
    record = make()
    assert record.matches(TOKEN)
    altered = bytearray(TOKEN)
    altered[511] ^= 1
    assert not record.matches(bytes(altered))
    assert json.loads(record.encode())["digest"] == record.digest and TOKEN.hex() not in record.encode().decode()


def test_names_carry_the_token_identifier_and_nothing_else_parses():
    assert record_name(0xAB) == "rod.00000000000000ab" and token_id_of_record("rod.00000000000000ab") == 0xAB
    assert snapshot_name(0xAB) == "odx-rod-00000000000000ab" and token_id_of_snapshot("odx-rod-00000000000000ab") == 0xAB
    for name in ("odx-rod-ab", "odx-rod-00000000000000AB", "mysnap", "odx-rod-00000000000000ab-x", ""):
        assert token_id_of_snapshot(name) is None
    for name in ("rod.ab", "rbd_header.1", "rod.00000000000000zz"):
        assert token_id_of_record(name) is None


def test_the_token_expires_its_inactivity_timeout_after_its_last_use():
    record = make(last_used=1000.0, inactivity_timeout=60.0)
    assert record.expires == 1060.0
    assert not record.expired(1059.9) and record.expired(1060.0)
    used = record.released("copy", 1050.0)
    assert used.expires == 1110.0


def test_a_lease_keeps_the_token_alive_until_it_is_released():
    record = make(last_used=1000.0, inactivity_timeout=10.0).leased("copy-a", 1005.0, 30.0)
    assert record.expires == 1035.0 and not record.expired(1020.0)
    both = record.leased("copy-b", 1006.0, 30.0)
    assert dict(both.leases) == {"copy-a": 1035.0, "copy-b": 1036.0}
    released = both.released("copy-b", 1010.0)
    assert dict(released.leases) == {"copy-a": 1035.0}
    assert released.expires == 1035.0                      # copy-a still reads the snapshot
    assert released.released("copy-a", 1011.0).expires == 1021.0


def test_leases_that_ran_out_are_dropped_when_another_is_taken():
    record = make().leased("dead-gateway", 1000.0, 30.0).leased("copy", 1031.0, 30.0)
    assert dict(record.leases) == {"copy": 1061.0}


def test_garbage_collection_waits_for_the_skew_allowance_and_the_tombstone():
    record = make(last_used=1000.0, inactivity_timeout=60.0)
    assert not record.abandoned(1064.9, skew=5.0) and record.abandoned(1065.0, skew=5.0)
    dead = record.invalidated(TokenState.EXPIRED, 1065.0)
    assert not dead.abandoned(2000.0, skew=5.0)            # claimed once
    assert dead.state is TokenState.EXPIRED and dead.leases == ()
    assert not dead.forgettable(1184.9) and dead.forgettable(1185.0)
    assert not record.forgettable(10_000.0)                # a live record is never just forgotten


@pytest.mark.parametrize("state, error", [
    (TokenState.EXPIRED, errors.TokenExpired), (TokenState.DELETED, errors.TokenDeleted),
    (TokenState.CANCELLED, errors.TokenCancelled), (TokenState.REVOKED, errors.TokenRevoked),
])
def test_a_dead_token_answers_why_it_died(state, error):
    assert state.error() is error
