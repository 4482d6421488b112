"""Token lifetime (SPC-4 5.16.6.3): inactivity expiry (23h/07h), DEL_TKN (23h/09h), the
inactivity timer restarting on use, and REPORT ALL ROD TOKENS following the live set."""

from __future__ import annotations

import struct
import time

import pytest

from tests.integration.odx.odx_support import (
    GOOD, TOKEN_DELETED, TOKEN_EXPIRED, TOKEN_REVOKED, OdxSession, check,
)
from tests.support.copy_cdbs import rart_cdb

pytestmark = [pytest.mark.integration]

TIMEOUT_SECONDS = 1


def test_an_idle_token_expires(session: OdxSession):
    session.fill(0, 0, 64 * 512, seed=21)
    token = session.token(0, [(0, 64)], inactivity_timeout=TIMEOUT_SECONDS)
    check(session.write_using(1, token, [(0, 64)])[1], GOOD, "fresh token")
    time.sleep(TIMEOUT_SECONDS * 0.6)
    check(session.write_using(1, token, [(100, 64)])[1], GOOD, "used again before the timeout")
    time.sleep(TIMEOUT_SECONDS * 0.6)       # 1.2 timeouts after creation, 0.6 after last use
    check(session.write_using(1, token, [(200, 64)])[1], GOOD, "the timer restarted on use")
    time.sleep(TIMEOUT_SECONDS * 1.2)
    check(session.write_using(1, token, [(300, 64)])[1], TOKEN_EXPIRED, "idle past the timeout")
    assert session.read(1, 300, 64 * 512) == bytes(64 * 512)


def test_default_inactivity_timeout_comes_from_the_config(start_daemon):
    daemon = start_daemon(odx={"default_inactivity_timeout": TIMEOUT_SECONDS, "max_inactivity_timeout": 5})
    with OdxSession(daemon) as session:
        token = session.token(0, [(0, 64)])                  # INACTIVITY TIMEOUT 0: the default
        time.sleep(TIMEOUT_SECONDS * 1.3)
        check(session.write_using(1, token, [(0, 64)])[1], TOKEN_EXPIRED, "default timeout")
        listed = check(session.command(0, rart_cdb(1024), data_in_len=1024), GOOD, "RART").data
        assert struct.unpack_from(">I", listed)[0] == 4          # expired tokens are not listed


def test_del_tkn_deletes_the_token_after_its_write(session: OdxSession):
    data = session.fill(0, 0, 64 * 512, seed=22)
    token = session.token(0, [(0, 64)])
    check(session.write_using(1, token, [(0, 64)], delete_token=True)[1], GOOD, "WUT DEL_TKN=1")
    assert session.read(1, 0, 64 * 512) == data
    check(session.write_using(1, token, [(100, 64)])[1], TOKEN_DELETED, "after DEL_TKN")


def test_report_all_rod_tokens_lists_the_live_tokens(session: OdxSession):
    tokens = [session.token(0, [(index * 64, 64)]) for index in range(3)]
    listed = check(session.command(0, rart_cdb(1024), data_in_len=1024), GOOD, "RART").data
    assert struct.unpack_from(">I4x", listed)[0] == 4 + 3 * 96
    assert sorted(listed[8 + 96 * index:8 + 96 * (index + 1)] for index in range(3)) == \
        sorted(token[:96] for token in tokens)
    check(session.write_using(1, tokens[1], [(0, 64)], delete_token=True)[1], GOOD, "DEL_TKN")
    listed = check(session.command(1, rart_cdb(1024), data_in_len=1024), GOOD, "RART").data
    assert struct.unpack_from(">I", listed)[0] == 4 + 2 * 96
    assert tokens[1][:96] not in (listed[8:104], listed[104:200])


def test_a_revoked_token_answers_token_revoked(session: OdxSession):
    """The admin revoke (control socket ``odx.revoke``): next use is 23h/06h, others unaffected."""
    from odxtarget.admin.client import AdminClient

    session.fill(0, 0, 64 * 512, seed=23)
    revoked, kept = session.token(0, [(0, 64)]), session.token(0, [(0, 64)])
    with AdminClient(str(session.daemon.directory / "state" / "control.sock")) as admin:
        admin.call("odx.revoke", token=revoked[8:16].hex())
    check(session.write_using(1, revoked, [(0, 64)])[1], TOKEN_REVOKED, "revoked")
    check(session.write_using(1, kept, [(0, 64)])[1], GOOD, "another token")
