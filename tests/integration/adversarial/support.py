"""Helpers of the adversarial suite: the witness, the RSS sampler, log checks, socket helpers.

The threat model (docs/security.md): every network peer and every initiator, logged in or not,
is untrusted. The daemon must never exhaust itself, must answer bad input precisely with a
one-line log and no traceback, and must keep serving everyone else. These helpers measure
exactly that: a *witness* session that must never see an error, the daemon's resident memory,
and the daemon's log.

Nothing here imports ``odxtarget.transport``: the PDUs come from ``tests/integration/raw_initiator``
(written out again from RFC 7143 section 11) and the witness is libiscsi.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.integration.raw_initiator import (
    ASYNC, DATA_IN, LOGIN_RSP, LOGOUT_RSP, NOP_IN, R2T, REJECT, SCSI_RSP, TEXT_RSP, TMF_RSP, Pdu, RawInitiator)
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, LunSpec

KIB = 1024
BLOCK = 512
TARGET_IQN = "iqn.2026-11.org.odxtarget:adversary"
RAW_INITIATOR = "iqn.2026-11.org.odxtarget.test:raw"
WITNESS_INITIATOR = "iqn.2026-11.org.odxtarget.test:witness"
FLOOD_LUN_BYTES = 64 * MIB            # LUN 0: what the adversaries hit
WITNESS_LUN = 1
WITNESS_LUN_BYTES = 16 * MIB          # LUN 1: only the witness writes here

# Reject reasons (RFC 7143 11.17.1)
REJECT_PROTOCOL_ERROR = 0x04
REJECT_IMMEDIATE_COMMAND = 0x06
# SCSI status (SAM-5 5.3.1)
STATUS_GOOD = 0x00
STATUS_CHECK_CONDITION = 0x02
STATUS_TASK_SET_FULL = 0x28
# Login Status-Class / Status-Detail (RFC 7143 11.13.5)
LOGIN_AUTHENTICATION_FAILURE = (0x02, 0x01)
LOGIN_NOT_FOUND = (0x02, 0x03)
LOGIN_OUT_OF_RESOURCES = (0x03, 0x02)

#: What the daemon log must never contain: a Python traceback, or the catch-all line the server
#: writes when a connection handler raised (bad input deserves a precise one-line refusal).
FORBIDDEN_LOG_TEXT = ("Traceback", "internal error")
#: Loopback addresses that look like other hosts to per-address accounting (all of 127/8 is local).
OTHER_HOSTS = [f"127.0.0.{n}" for n in range(2, 255)]


def adversary_spec(iscsi: dict[str, Any] | None = None, **overrides: Any) -> DaemonSpec:
    """A demo-mode target with a LUN for the adversaries (0) and one for the witness (1)."""
    spec = DaemonSpec(luns=[LunSpec(lun=0, size=FLOOD_LUN_BYTES), LunSpec(lun=WITNESS_LUN, size=WITNESS_LUN_BYTES)],
                      iqn=TARGET_IQN, demo_mode=True, iscsi=iscsi)
    for name, value in overrides.items():
        setattr(spec, name, value)
    return spec


# ------------------------------------------------------------------------------------------ memory

def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise RuntimeError(f"no VmRSS line for pid {pid}")


class RssSampler:
    """Samples the daemon's VmRSS every ``interval`` seconds in a thread; remembers baseline and peak.

    The machine is shared, so a missing bound must fail the test, not exhaust the host: once the
    growth passes ``kill_growth`` bytes the sampler SIGKILLs the daemon and says so in ``verdict``.
    """

    def __init__(self, daemon: DaemonProcess, *, kill_growth: int, interval: float = 0.01):
        assert daemon.pid is not None and daemon.running, "the daemon must run before sampling starts"
        self.pid = daemon.pid
        self.kill_growth = kill_growth
        self.interval = interval
        self.baseline = rss_bytes(self.pid)
        self.peak = self.baseline
        self.last = self.baseline
        self.killed_at: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = rss_bytes(self.pid)
            except (OSError, RuntimeError):
                return                  # the process is gone
            self.last = rss
            self.peak = max(self.peak, rss)
            if rss - self.baseline > self.kill_growth and self.killed_at is None:
                self.killed_at = rss
                os.kill(self.pid, signal.SIGKILL)
                return
            self._stop.wait(self.interval)

    @property
    def peak_growth(self) -> int:
        return self.peak - self.baseline

    def verdict(self) -> str:
        text = (f"VmRSS baseline {self.baseline / MIB:.1f} MiB, peak {self.peak / MIB:.1f} MiB "
                f"(growth {self.peak_growth / MIB:.1f} MiB), last {self.last / MIB:.1f} MiB")
        if self.killed_at is not None:
            text += f"; the sampler SIGKILLed the daemon at {self.killed_at / MIB:.1f} MiB to protect the host"
        return text

    def assert_growth_at_most(self, limit: int) -> None:
        assert self.killed_at is None and self.peak_growth <= limit, (
            f"resident memory grew beyond {limit / MIB:.0f} MiB: {self.verdict()}")

    def wait_until_within(self, limit: int, timeout: float) -> bool:
        """True once VmRSS is at most baseline + ``limit`` (checked for ``timeout`` seconds);
        False when it stays above, or the daemon is gone."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.last = rss_bytes(self.pid)
            except (OSError, RuntimeError):
                return False
            if self.last - self.baseline <= limit:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


# ----------------------------------------------------------------------------------------- witness

@dataclass(frozen=True, slots=True)
class WitnessFailure:
    at: float                    # time.monotonic()
    what: str


@dataclass(frozen=True, slots=True)
class WitnessMark:
    at: float
    rounds: int


class Witness:
    """A well-behaved libiscsi session on its own connection and LUN that writes a pattern, reads
    it back and compares, over and over, with a per-command timeout.

    Every failure (bad status, mismatch, timeout, lost connection, failed re-login) is recorded
    with its time; the witness then logs in again and carries on, so one test's damage is not
    blamed on the next. ``assert_unaffected(mark)`` is the check each case ends with.
    """

    def __init__(self, host: str, port: int, iqn: str, *, lun: int = WITNESS_LUN,
                 lun_bytes: int = WITNESS_LUN_BYTES, initiator_name: str = WITNESS_INITIATOR,
                 chap: tuple[str, str] | None = None, command_timeout: int = 5, pause: float = 0.02,
                 blocks: int = 8):
        self.host, self.port, self.iqn, self.lun = host, port, iqn, lun
        self.initiator_name = initiator_name
        self.chap = chap
        self.command_timeout = command_timeout
        self.pause = pause
        self.blocks = blocks
        self.lun_blocks = lun_bytes // BLOCK
        self.rounds = 0
        self.failures: list[WitnessFailure] = []
        self.busy_since: float | None = None        # start of the command in flight
        self._stop = threading.Event()
        self._session = self._login()               # the first login must work: raise here if not
        self._thread = threading.Thread(target=self._run, name="witness", daemon=True)

    def _login(self) -> libiscsi.IscsiSession:
        return libiscsi.connect(self.host, self.port, self.iqn, lun=self.lun, initiator_name=self.initiator_name,
                                chap=self.chap, timeout_seconds=self.command_timeout)

    def start(self) -> Witness:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.rounds < 3 and time.monotonic() < deadline and not self.failures:
            time.sleep(0.01)
        assert self.rounds >= 3 and not self.failures, f"the witness does not work at all: {self.failures}"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.command_timeout + 5)
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except libiscsi.LibiscsiError:
                pass

    def _fail(self, what: str) -> None:
        if len(self.failures) < 100:
            self.failures.append(WitnessFailure(time.monotonic(), what))

    def _run(self) -> None:
        lba = 0
        while not self._stop.is_set():
            if self._session is None:
                try:
                    self._session = self._login()
                except libiscsi.LibiscsiError as error:
                    self._fail(f"re-login failed: {error}")
                    self._stop.wait(0.5)
                    continue
            pattern = os.urandom(self.blocks * BLOCK)
            ok = self._step(f"WRITE(16) at LBA {lba}",
                            lambda: self._session.write(self.lun, lba, pattern, BLOCK),
                            lambda result: result.good)
            ok = ok and self._step(f"READ(16) at LBA {lba}",
                                   lambda: self._session.read(self.lun, lba, self.blocks, BLOCK),
                                   lambda result: result.good and result.data == pattern)
            if not ok:
                session, self._session = self._session, None
                try:
                    session.abandon()
                except libiscsi.LibiscsiError:
                    pass
                continue
            self.rounds += 1
            lba = (lba + self.blocks) % (self.lun_blocks - self.blocks)
            self._stop.wait(self.pause)

    def _step(self, what: str, command: Callable[[], libiscsi.Result],
              good: Callable[[libiscsi.Result], bool]) -> bool:
        started = time.monotonic()
        self.busy_since = started
        try:
            result = command()
        except libiscsi.LibiscsiError as error:
            self._fail(f"{what}: {error}")
            return False
        finally:
            self.busy_since = None
        elapsed = time.monotonic() - started
        if not good(result):
            detail = "data read back differs" if result.good else result.describe()
            self._fail(f"{what}: {detail} after {elapsed:.2f} s")
            return False
        if elapsed > self.command_timeout:
            self._fail(f"{what}: took {elapsed:.2f} s, more than {self.command_timeout} s")
            return False
        return True

    def mark(self) -> WitnessMark:
        return WitnessMark(time.monotonic(), self.rounds)

    def assert_unaffected(self, since: WitnessMark, *, min_rounds: int = 3) -> None:
        """No failure since ``since``, no command stuck longer than the timeout, and real work done
        (waiting up to one command timeout for ``min_rounds`` rounds after ``since``)."""
        deadline = time.monotonic() + self.command_timeout + 1
        while (self.rounds - since.rounds < min_rounds and time.monotonic() < deadline
               and not any(failure.at >= since.at for failure in self.failures)):
            time.sleep(0.02)
        busy_since = self.busy_since
        assert busy_since is None or time.monotonic() - busy_since <= self.command_timeout + 1, (
            f"a witness command has been waiting for {time.monotonic() - busy_since:.1f} s")
        failures = [f"+{failure.at - since.at:.2f} s: {failure.what}" for failure in self.failures
                    if failure.at >= since.at]
        assert not failures, "the witness session was disturbed:\n  " + "\n  ".join(failures)
        assert self._thread.is_alive(), "the witness thread ended"
        done = self.rounds - since.rounds
        assert done >= min_rounds, (f"the witness completed only {done} write/read rounds in "
                                    f"{time.monotonic() - since.at:.1f} s (expected at least {min_rounds})")


# --------------------------------------------------------------------------------------------- log

class DaemonLog:
    """The daemon's log from a mark onwards (a shared daemon's checks then blame the right test),
    or from its first line (``from_start``)."""

    def __init__(self, daemon: DaemonProcess, *, from_start: bool = False):
        self.daemon = daemon
        self.offset = 0 if from_start else len(daemon.log_text())

    def new_text(self) -> str:
        return self.daemon.log_text()[self.offset:]

    def assert_clean(self, *, settle: float = 0.2) -> None:
        """No traceback and no internal-error line since the mark."""
        time.sleep(settle)     # let lines written while the last answer was in flight arrive
        text = self.new_text()
        for fragment in FORBIDDEN_LOG_TEXT:
            assert fragment not in text, (f"the daemon log contains {fragment!r}:\n"
                                          + _context(text, text.index(fragment)))


def _context(text: str, position: int, width: int = 1500) -> str:
    return text[max(0, position - width // 3):position + width]


def assert_daemon_alive(daemon: DaemonProcess) -> None:
    assert daemon.running, (f"the daemon exited (status {daemon.process.returncode if daemon.process else None})"
                            f"\n--- log tail ---\n{daemon.log_text()[-3000:]}")


# ----------------------------------------------------------------------------------------- sockets

def wait_for_close(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until EOF or reset for at most ``timeout`` seconds: (closed, bytes received before)."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(received)
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(received)
        except (BlockingIOError, InterruptedError):
            continue
        if not chunk:
            return True, bytes(received)
        received += chunk


def send_with_deadline(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send as much of ``data`` as the peer takes within ``seconds``; returns the bytes sent.

    A target that applies backpressure stops reading, so a partial send is expected."""
    view = memoryview(data)
    sent = 0
    deadline = time.monotonic() + seconds
    old_timeout = sock.gettimeout()
    try:
        while sent < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, 0.5))
            try:
                sent += sock.send(view[sent:sent + 1024 * KIB])
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
    finally:
        sock.settimeout(old_timeout)
    return sent


class PduCollector(threading.Thread):
    """Reads every PDU of one raw connection in the background while the test keeps sending."""

    def __init__(self, raw: RawInitiator):
        super().__init__(name="pdu-collector", daemon=True)
        self.raw = raw
        self.pdus: list[Pdu] = []
        self.closed = False
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                readable, _, _ = select.select([self.raw.sock], [], [], 0.1)
                if not readable:
                    continue
                self.pdus.append(self.raw.recv_pdu())
            except TimeoutError:
                continue
            except (ConnectionError, OSError, ValueError) as error:     # ValueError: socket closed
                self.closed = True
                self.error = str(error)
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def wait_for(self, predicate: Callable[[list[Pdu]], bool], timeout: float) -> bool:
        """True once ``predicate(pdus)`` holds, or False after ``timeout`` seconds / on close."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.pdus):
                return True
            if self.closed:
                return predicate(self.pdus)
            time.sleep(0.02)
        return predicate(self.pdus)


def command_window(pdu: Pdu) -> int:
    """MaxCmdSN - ExpCmdSN + 1 in serial arithmetic (RFC 7143 4.2.2.1); 0 means closed."""
    return (pdu.max_cmd_sn - pdu.exp_cmd_sn + 1) & 0xFFFFFFFF


#: Target PDUs that carry ExpCmdSN and MaxCmdSN at bytes 28..35 (RFC 7143 11.4, 11.7, 11.8, 11.11,
#: 11.13, 11.15, 11.17, 11.19).
WINDOW_OPCODES = frozenset({SCSI_RSP, DATA_IN, R2T, TEXT_RSP, LOGIN_RSP, REJECT, NOP_IN, TMF_RSP, LOGOUT_RSP, ASYNC})


def describe_pdu(pdu: Pdu) -> str:
    return (f"opcode {pdu.opcode:#04x} flags {pdu.flags:#04x} ITT {pdu.itt:#x} byte2 {pdu.bhs[2]:#04x} "
            f"byte3 {pdu.bhs[3]:#04x} data {len(pdu.data)} bytes")


@dataclass(slots=True)
class Arena:
    """One daemon under attack, its witness, and the log from the start of the case."""

    daemon: DaemonProcess
    witness: Witness
    log: DaemonLog
    mark: WitnessMark = field(init=False)

    def __post_init__(self) -> None:
        self.mark = self.witness.mark()

    def raw(self, *, initiator: str = RAW_INITIATOR, isid: bytes | None = None, port: int | None = None,
            source_address: str | None = None, timeout: float = 5.0) -> RawInitiator:
        """A raw connection (not logged in)."""
        return RawInitiator(self.daemon.host, port or self.daemon.port, initiator=initiator,
                            isid=isid or b"\x80" + os.urandom(5), timeout=timeout, source_address=source_address)

    def logged_in(self, **kwargs: Any) -> RawInitiator:
        """A raw connection logged in to the daemon's main target without authentication."""
        raw = self.raw(**kwargs)
        raw.login(self.daemon.iqn)
        return raw

    def assert_everyone_else_served(self, *, min_rounds: int = 3) -> None:
        """The daemon lives, the witness never noticed, and the log has no traceback."""
        assert_daemon_alive(self.daemon)
        self.witness.assert_unaffected(self.mark, min_rounds=min_rounds)
        self.log.assert_clean()


def start_arena(daemon: DaemonProcess, *, witness_chap: tuple[str, str] | None = None,
                log_from_start: bool = True) -> Arena:
    """The witness logs in and proves it works; the log is checked from the daemon's first line."""
    witness = Witness(daemon.host, daemon.port, daemon.iqn, chap=witness_chap).start()
    return Arena(daemon, witness, DaemonLog(daemon, from_start=log_from_start))


def assert_logs_clean(daemons: list[DaemonProcess]) -> None:
    """The whole log of each daemon: no traceback, no internal-error line."""
    for daemon in daemons:
        text = daemon.log_text()
        for fragment in FORBIDDEN_LOG_TEXT:
            assert fragment not in text, f"{daemon.directory.name}: the daemon log contains {fragment!r}"
