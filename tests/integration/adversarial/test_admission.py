"""Who gets in: connection and session bounds per source address and per daemon, the login and
discovery timers, and failed-login throttling (the ``iscsi`` section, IscsiLimits).

Source addresses: everything on 127/8 is local, so a raw connection bound to 127.0.0.2 looks
like another host to per-address accounting. The witness always comes from 127.0.0.1 and is
counted with the other connections and sessions from there.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

import pytest

from tests.integration.adversarial.support import (
    LOGIN_AUTHENTICATION_FAILURE, LOGIN_NOT_FOUND, LOGIN_OUT_OF_RESOURCES, OTHER_HOSTS, RAW_INITIATOR,
    WITNESS_INITIATOR, Arena, adversary_spec, describe_pdu, wait_for_close)
from tests.integration.raw_initiator import LOGOUT_RSP, NOP_IN, LoginFailed, RawInitiator, encode_text
from tests.support.daemon import AclSpec, ChapSpec

pytestmark = pytest.mark.integration

#: The daemon looks at its timers about once a second, so a timeout may fire up to that late;
#: the rest is scheduling slack on a loaded CI machine.
TIMER_SLACK = 2.5
#: How soon "closed at accept" must be visible.
AT_ONCE = 2.0


def login_refusal(raw: RawInitiator, target: str, **kwargs) -> tuple[int, int]:
    """Status-Class/Status-Detail of a login that must fail (RFC 7143 11.13.5)."""
    with pytest.raises(LoginFailed) as refused:
        raw.login(target, **kwargs)
    return refused.value.status_class, refused.value.status_detail


def assert_closed_after_refusal(raw: RawInitiator) -> None:
    assert wait_for_close(raw.sock, AT_ONCE)[0], "a refused login must close its connection (RFC 7143 6.3)"


def assert_closed_at_once_without_answer(sock: socket.socket, what: str) -> None:
    closed, received = wait_for_close(sock, AT_ONCE)
    assert closed, f"{what}: still open after {AT_ONCE} s"
    assert received == b"", f"{what}: the target sent {len(received)} bytes before closing (expected none)"


# ------------------------------------------------------------------ case 4: idle connections

IDLE_CONNECTIONS = 2000
IDLE_LOGIN_TIMEOUT = 3.0


def open_idle_connections(host: str, port: int, count: int, batch: int = 50, pause: float = 0.01,
                          timeout: float = 15.0) -> list[tuple[socket.socket, float]]:
    """``count`` TCP connections that never send a byte, each with the time its handshake completed.

    Opened in paced batches of non-blocking connects: a burst larger than the listen backlog
    (100) overflows the accept queue before the daemon wakes, and every dropped SYN costs the
    client a 1 s retransmission, which would only slow the test down."""
    opened: list[tuple[socket.socket, float]] = []
    try:
        for start in range(0, count, batch):
            if start:
                time.sleep(pause)
            selector = selectors.DefaultSelector()
            for _ in range(min(batch, count - start)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((host, port))
                assert code in (0, errno.EINPROGRESS), f"connect: {errno.errorcode.get(code, code)}"
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while selector.get_map():
                left = deadline - time.monotonic()
                assert left > 0, f"{len(selector.get_map())} connects did not complete within {timeout} s"
                for key, _ in selector.select(left):
                    selector.unregister(key.fileobj)
                    opened.append((key.fileobj, time.monotonic()))
            selector.close()
    except BaseException:
        for sock, _ in opened:
            sock.close()
        raise
    return opened


def wait_until_all_closed(connections: list[tuple[socket.socket, float]], deadline: float
                          ) -> tuple[dict[int, float], dict[int, int]]:
    """Read every socket until EOF/reset or ``deadline``: (index -> seconds after its connect it
    closed, index -> bytes it received first)."""
    selector = selectors.DefaultSelector()
    for index, (sock, _) in enumerate(connections):
        selector.register(sock, selectors.EVENT_READ, index)
    closed: dict[int, float] = {}
    received: dict[int, int] = {}
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
            index = key.data
            try:
                chunk = key.fileobj.recv(4096)
            except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
                chunk = b""
            except BlockingIOError:
                continue
            if chunk:
                received[index] = received.get(index, 0) + len(chunk)
                continue
            closed[index] = time.monotonic() - connections[index][1]
            selector.unregister(key.fileobj)
    selector.close()
    return closed, received


@pytest.mark.slow
def test_idle_connections_that_never_log_in_are_all_closed(arena_factory, many_file_descriptors) -> None:
    """2000 TCP connections that never send a Login Request: with login_timeout 3 s every one sees
    EOF or a reset within the timeout plus timer slack (those beyond max_connections_per_address
    may be closed at once), and the witness logged in before them never notices."""
    arena = arena_factory(adversary_spec(iscsi={"login_timeout": IDLE_LOGIN_TIMEOUT}))
    connections = open_idle_connections(arena.daemon.host, arena.daemon.port, IDLE_CONNECTIONS)
    try:
        last_connected = max(connected for _, connected in connections)
        closed, received = wait_until_all_closed(connections,
                                                 last_connected + IDLE_LOGIN_TIMEOUT + TIMER_SLACK)
    finally:
        for sock, _ in connections:
            sock.close()
    still_open = IDLE_CONNECTIONS - len(closed)
    assert still_open == 0, (f"{still_open} of {IDLE_CONNECTIONS} idle connections were still open "
                             f"{IDLE_LOGIN_TIMEOUT + TIMER_SLACK:g} s after the last connect")
    late = sorted(seconds for seconds in closed.values() if seconds > IDLE_LOGIN_TIMEOUT + TIMER_SLACK)
    assert not late, f"{len(late)} connections closed later than login_timeout + slack: {late[:5]}"
    assert not received, f"{len(received)} connections that sent nothing received bytes from the target"
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 8: sessions and connections

def test_sessions_per_address_are_bounded(arena_factory) -> None:
    """max_sessions_per_address 4: with the witness and three raw sessions from 127.0.0.1, a fifth
    session (normal or discovery) gets 03/02 OUT OF RESOURCES; another address still logs in, and
    once one session has logged out a new login from 127.0.0.1 succeeds."""
    limit = 4
    arena = arena_factory(adversary_spec(iscsi={"max_sessions_per_address": limit}))
    sessions = [arena.logged_in() for _ in range(limit - 1)]          # + the witness = limit
    refused = arena.raw()
    assert login_refusal(refused, arena.daemon.iqn) == LOGIN_OUT_OF_RESOURCES
    assert_closed_after_refusal(refused)
    discovery = arena.raw()
    assert login_refusal(discovery, arena.daemon.iqn, session_type="Discovery") == LOGIN_OUT_OF_RESOURCES
    elsewhere = arena.logged_in(source_address=OTHER_HOSTS[0])
    assert elsewhere.ping().opcode == NOP_IN, "another address must not be limited by 127.0.0.1's sessions"
    logout = sessions[0].logout()
    assert logout.opcode == LOGOUT_RSP and logout.response == 0, describe_pdu(logout)
    assert wait_for_close(sessions[0].sock, AT_ONCE)[0], "the target closes the connection after a logout"
    again = arena.logged_in()
    assert again.ping().opcode == NOP_IN
    for raw in [*sessions, refused, discovery, elsewhere, again]:
        raw.close()
    arena.assert_everyone_else_served()


def test_sessions_per_daemon_are_bounded(arena_factory) -> None:
    """max_sessions 3: the witness plus one session each from 127.0.0.1 and 127.0.0.2 fill the
    daemon; a login from 127.0.0.3 gets 03/02, and succeeds once a session has ended."""
    arena = arena_factory(adversary_spec(iscsi={"max_sessions": 3, "max_sessions_per_address": 3}))
    first = arena.logged_in()
    second = arena.logged_in(source_address=OTHER_HOSTS[0])
    refused = arena.raw(source_address=OTHER_HOSTS[1])
    assert login_refusal(refused, arena.daemon.iqn) == LOGIN_OUT_OF_RESOURCES
    assert_closed_after_refusal(refused)
    logout = first.logout()
    assert logout.opcode == LOGOUT_RSP and logout.response == 0, describe_pdu(logout)
    assert wait_for_close(first.sock, AT_ONCE)[0]
    third = arena.logged_in(source_address=OTHER_HOSTS[1])
    assert third.ping().opcode == NOP_IN
    for raw in (first, second, refused, third):
        raw.close()
    arena.assert_everyone_else_served()


def test_connections_per_address_are_closed_at_accept(arena_factory) -> None:
    """max_connections_per_address 6: with the witness and five idle connections from 127.0.0.1
    the next one is closed at once without a byte; another address still connects and logs in,
    and after one connection closes a new one from 127.0.0.1 logs in again."""
    limit = 6
    arena = arena_factory(adversary_spec(iscsi={"max_connections_per_address": limit}))
    host, port = arena.daemon.host, arena.daemon.port
    held = [socket.create_connection((host, port), timeout=5) for _ in range(limit - 1)]
    try:
        over = socket.create_connection((host, port), timeout=5)
        assert_closed_at_once_without_answer(over, "a connection beyond max_connections_per_address")
        over.close()
        assert not any(wait_for_close(sock, 0.05)[0] for sock in held), "connections within the bound were closed"
        elsewhere = arena.logged_in(source_address=OTHER_HOSTS[0])
        assert elsewhere.ping().opcode == NOP_IN
        held.pop().close()
        time.sleep(0.5)          # let the daemon see the close
        again = arena.logged_in()
        assert again.ping().opcode == NOP_IN
        elsewhere.close()
        again.close()
    finally:
        for sock in held:
            sock.close()
    arena.assert_everyone_else_served()


def test_connections_per_daemon_are_closed_at_accept(arena_factory) -> None:
    """max_connections 4: the witness, two connections from 127.0.0.1 and one from 127.0.0.2
    fill the daemon; a connection from 127.0.0.3 is closed at once, and admitted after one closes."""
    arena = arena_factory(adversary_spec(iscsi={"max_connections": 4, "max_connections_per_address": 4}))
    host, port = arena.daemon.host, arena.daemon.port
    held = [socket.create_connection((host, port), timeout=5) for _ in range(2)]
    held.append(socket.create_connection((host, port), timeout=5, source_address=(OTHER_HOSTS[0], 0)))
    try:
        over = socket.create_connection((host, port), timeout=5, source_address=(OTHER_HOSTS[1], 0))
        assert_closed_at_once_without_answer(over, "a connection beyond max_connections")
        over.close()
        held.pop(0).close()
        time.sleep(0.5)
        admitted = arena.logged_in(source_address=OTHER_HOSTS[1])
        assert admitted.ping().opcode == NOP_IN
        admitted.close()
    finally:
        for sock in held:
            sock.close()
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 9: login and discovery timers

SHORT_TIMEOUT = 2.0


@pytest.mark.slow
def test_login_that_stalls_after_its_first_request_is_closed_after_login_timeout(arena_factory) -> None:
    """A first Login Request with T=0, then silence: the connection is closed once login_timeout
    (2 s) has passed since it was opened, not before and not much later."""
    arena = arena_factory(adversary_spec(iscsi={"login_timeout": SHORT_TIMEOUT}))
    raw = arena.raw()
    opened = time.monotonic()
    answer, _ = raw.login_exchange({"InitiatorName": RAW_INITIATOR, "TargetName": arena.daemon.iqn,
                                    "SessionType": "Normal", "AuthMethod": "None"}, transit=False, csg=0, nsg=0)
    assert answer.bhs[36] == 0, "the first login step itself is fine"
    closed, _ = wait_for_close(raw.sock, SHORT_TIMEOUT + TIMER_SLACK + 1)
    elapsed = time.monotonic() - opened
    raw.close()
    assert closed, f"the stalled login was still open {elapsed:.1f} s after connecting"
    assert SHORT_TIMEOUT - 0.2 <= elapsed <= SHORT_TIMEOUT + TIMER_SLACK, (
        f"closed after {elapsed:.2f} s, expected login_timeout {SHORT_TIMEOUT:g} s (+ up to {TIMER_SLACK:g} s)")
    arena.assert_everyone_else_served()


@pytest.mark.slow
def test_silent_discovery_session_is_closed_after_discovery_idle_timeout(arena_factory) -> None:
    """discovery_idle_timeout 2 s: a silent discovery session is closed after it, while a
    discovery session that keeps asking SendTargets and a silent normal session stay open."""
    arena = arena_factory(adversary_spec(iscsi={"discovery_idle_timeout": SHORT_TIMEOUT}))
    silent = arena.raw()
    silent.login(arena.daemon.iqn, session_type="Discovery")
    went_silent = time.monotonic()
    chatty = arena.raw()
    chatty.login(arena.daemon.iqn, session_type="Discovery")
    quiet_normal = arena.logged_in()
    closed_after = None
    # Keep the chatty session talking until the silent one is gone and the timeout lies well behind.
    while time.monotonic() - went_silent < (SHORT_TIMEOUT + TIMER_SLACK + 0.5 if closed_after is None
                                            else SHORT_TIMEOUT + 1.5):
        _, pairs = chatty.text(encode_text({"SendTargets": "All"}))
        assert ("TargetName", arena.daemon.iqn) in pairs, f"an active discovery session lost service: {pairs}"
        if closed_after is None and wait_for_close(silent.sock, 0.3)[0]:
            closed_after = time.monotonic() - went_silent
    assert closed_after is not None, "the silent discovery session was never closed"
    assert SHORT_TIMEOUT - 0.2 <= closed_after <= SHORT_TIMEOUT + TIMER_SLACK, (
        f"closed after {closed_after:.2f} s of silence, expected {SHORT_TIMEOUT:g} s (+ up to {TIMER_SLACK:g} s)")
    assert quiet_normal.ping().opcode == NOP_IN, "discovery_idle_timeout must not close normal sessions"
    for raw in (silent, chatty, quiet_normal):
        raw.close()
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 10: failed-login throttling

MAX_FAILED_LOGINS = 3
FAILED_LOGIN_WINDOW = 3.0
CHAP_INITIATOR = "iqn.2026-11.org.odxtarget.test:chap"
CHAP = ChapSpec(userid="chapuser", password="chap-secret-0123")


def fail_by_wrong_target_name(arena: Arena) -> tuple[int, int]:
    raw = arena.raw()
    try:
        return login_refusal(raw, "iqn.2026-11.org.odxtarget:no-such-target")
    finally:
        raw.close()


def fail_by_wrong_chap_secret(arena: Arena) -> tuple[int, int]:
    raw = arena.raw(initiator=CHAP_INITIATOR)
    try:
        return login_refusal(raw, arena.daemon.iqn, chap=(CHAP.userid, "wrong-secret-0000"))
    finally:
        raw.close()


FAILURES = {
    "wrong-target-name": (fail_by_wrong_target_name, LOGIN_NOT_FOUND),
    "wrong-chap-secret": (fail_by_wrong_chap_secret, LOGIN_AUTHENTICATION_FAILURE),
}


@pytest.mark.slow
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_logins_throttle_their_address_for_the_window(arena_factory, failure: str) -> None:
    """max_failed_logins_per_address 3 within failed_login_window 3 s: after three failed logins
    from 127.0.0.1 its next connection is closed at once without a Login Response, the witness
    (logged in before) and other addresses are served, and after the window a login works again."""
    fail, expected_status = FAILURES[failure]
    spec = adversary_spec(iscsi={"max_failed_logins_per_address": MAX_FAILED_LOGINS,
                                 "failed_login_window": FAILED_LOGIN_WINDOW},
                          acls=[AclSpec(WITNESS_INITIATOR), AclSpec(RAW_INITIATOR), AclSpec(CHAP_INITIATOR, chap=CHAP)],
                          demo_mode=False)
    arena = arena_factory(spec)
    for _ in range(MAX_FAILED_LOGINS):
        assert fail(arena) == expected_status
    last_failure = time.monotonic()
    probe = arena.raw()
    try:
        login = encode_text({"InitiatorName": RAW_INITIATOR, "TargetName": arena.daemon.iqn,
                             "SessionType": "Normal", "AuthMethod": "None"})
        probe.send_pdu(probe.login_bhs(transit=True, csg=0, nsg=1, data_len=len(login)), login)
    except OSError:
        pass                      # closed before our request went out: that is the point
    assert_closed_at_once_without_answer(probe.sock, f"a connection after {MAX_FAILED_LOGINS} failed logins")
    probe.close()
    elsewhere = arena.logged_in(source_address=OTHER_HOSTS[0])
    assert elsewhere.ping().opcode == NOP_IN, "throttling 127.0.0.1 must not refuse other addresses"
    elsewhere.close()
    arena.witness.assert_unaffected(arena.mark)
    time.sleep(max(0.0, last_failure + FAILED_LOGIN_WINDOW + 0.5 - time.monotonic()))
    welcome = arena.logged_in()
    assert welcome.ping().opcode == NOP_IN, "after the window a correct login must work again"
    welcome.close()
    arena.assert_everyone_else_served()

