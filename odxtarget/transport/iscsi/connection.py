"""One iSCSI connection, sans-IO: bytes in, bytes out (RFC 7143).

Theory of operation
-------------------
``IscsiConnection.receive_data(chunk, now)`` frames the bytes into PDUs (``pdu.PduFramer``)
and handles them in order; everything to send accumulates in an output list that the runner
drains with ``data_to_send()`` and hands to ``transport.writelines``. Time only arrives as
``now`` (``receive_data``/``on_timer``/``resume``); nothing here awaits, sleeps or reads a
clock.

SCSI commands go to the SCSI target's ``execute`` in CmdSN order. One that completes at once
(a cached read, INQUIRY) is answered at once; one that waits for storage is a ``Pending``
that the injected ``CommandRunner`` runs off the event loop (docs/execution.md), and it is
answered when its work is done, in any order (``_command_ended``, then ``on_output``). The
split: ``ordering`` (the CmdSN window and held PDUs), ``task_table`` (waiting and running
tasks, aborts and the barriers task management and logout wait on), ``data_transfer``
(Data-Out budget, Data-In framing), ``text_exchange`` (Text Requests); this module is the
state machine that ties them to PDUs.

Connection states (``ConnectionState``) and the PDUs each accepts are a table
(``ALLOWED_OPCODES``); a PDU outside it is refused (login phase: connection dropped,
full feature phase: Reject). The login phase is delegated to the login state machine
(``odxtarget.transport.iscsi.login``); this module only frames login PDUs, checks
ISID/TSIH/CID consistency, allocates the TSIH and registers the session (reinstating an
old one with the same initiator name + ISID + target, RFC 7143 6.3.5).

Full feature phase: non-immediate PDUs are ordered by CmdSN (``session.CommandWindow``):
the expected one runs at once, one ahead within the window waits until the gap fills, and
one outside the window is silently ignored (RFC 7143 4.2.2.1). A SCSI command starts
collecting data when it arrives (immediate and unsolicited data, then R2Ts once it is in
CmdSN order) and executes once it is both in order and has all of its data.

Bounds (``limits.IscsiLimits``, docs/security.md): every peer is untrusted, so

* the task table holds at most ``max_tasks_per_connection`` tasks, which is also the CmdSN
  window we advertise (numbered commands still running keep their place in it, so MaxCmdSN
  only moves when one is answered); past it an immediate command gets Reject 06h (RFC 7143
  11.17.1) and a numbered one TASK SET FULL;
* no buffer is sized by the Expected Data Transfer Length alone: a write solicits at most what
  its CDB asks for (``ScsiTargetPort.data_out_length``), buffers grow burst by burst, and R2Ts
  go out only while the connection's buffered Data-Out fits ``max_data_out_bytes``;
* output that the socket has not taken yet is bounded by ``max_pending_send_bytes``: past it
  the connection stops handling PDUs (``input_stalled``) and the runner stops reading its
  socket until ``resume`` is called, so a peer that never reads its responses holds no more;
* a text exchange (``text_exchange.TextExchange``) and the login text collect at most
  ``max_text_bytes``; the login phase lasts at most ``login_timeout`` seconds and a silent
  discovery session at most ``discovery_idle_timeout`` seconds.

Error handling at ErrorRecoveryLevel 0 (RFC 7143 7): header digest errors and Data-Out
buffer offsets outside what was asked for drop the connection (the session fails: the core
is told of the I_T nexus loss). A data digest error is answered with Reject 02h; on a
Data-Out the task then ends with CHECK CONDITION ABORTED COMMAND / PROTOCOL SERVICE CRC
ERROR once all its data has arrived (RFC 7143 7.8 b, 11.4.7.2). An out-of-order DataSN is
an implied digest error (RFC 7143 7.9) and ends the task the same way. A command PDU with
a bad data digest is discarded and not counted (the initiator retries it, same CmdSN).
"""

from __future__ import annotations

import enum
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from odxtarget.scsi.execution import InlineRunner, Pending
from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ScsiCommand, ScsiResult, Status, TaskAttribute
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.data_transfer import DataOutBudget, frame_data_in
from odxtarget.transport.iscsi.discovery import (SESSION_TYPE_DISCOVERY, SESSION_TYPE_NORMAL, PortalDirectory,
                                                 TargetDirectory)
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.login import LoginReply, LoginRequestInfo, LoginStateMachine, LoginStatus
from odxtarget.transport.iscsi.negotiation import SessionParameters, TextSessionInfo, negotiate_text_request
from odxtarget.transport.iscsi.pdu import Opcode, RejectReason, RESERVED_TAG
from odxtarget.transport.iscsi.ordering import CommandOrder, CommandWindow, Placement
from odxtarget.transport.iscsi.session import Session, SessionRegistry
from odxtarget.transport.iscsi.task import DataOutBuffer, R2tState, ScsiTask
from odxtarget.transport.iscsi.task_table import AbortBarrier, CommandRunner, RunningCommand, TaskTable
from odxtarget.transport.iscsi.text import TextFormatError
from odxtarget.transport.iscsi.text_exchange import TextActionKind, TextExchange
from odxtarget.transport.iscsi.tmf import perform_task_management

log = logging.getLogger("odxtarget.iscsi")

_U32 = struct.Struct(">I")
_SERIAL_MOD = 1 << 32
_MAX_RESIDUAL = 0xFFFFFFFF
_SCSI_RESPONSE = P.ScsiResponse._S.pack
_R2T = P.ReadyToTransfer._S.pack
_SCSI_COMMAND_UNPACK = P.ScsiCommandPdu._S.unpack_from
_OPCODE_SCSI_RESPONSE = int(Opcode.SCSI_RESPONSE)
_OPCODE_R2T = int(Opcode.READY_TO_TRANSFER)
_GOOD = int(Status.GOOD)

DEFAULT_TARGET_MRDSL = 262144

# RFC 7143 11.4.7.2 iSCSI conditions: sense key ABORTED COMMAND with these ASC/ASCQ.
PROTOCOL_SERVICE_CRC_ERROR = (0x47, 0x05)
UNEXPECTED_UNSOLICITED_DATA = (0x0C, 0x0C)
INCORRECT_AMOUNT_OF_DATA = (0x0C, 0x0D)
INVALID_FIELD_IN_CDB = (0x24, 0x00)


#: RFC 7143 11.3.1 ATTR (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA; 5-7 reserved)
#: to the core's SAM-5 task attributes. An untagged task is simple; reserved values are too.
TASK_ATTRIBUTES = (TaskAttribute.SIMPLE, TaskAttribute.SIMPLE, TaskAttribute.ORDERED, TaskAttribute.HEAD_OF_QUEUE,
                   TaskAttribute.ACA, TaskAttribute.SIMPLE, TaskAttribute.SIMPLE, TaskAttribute.SIMPLE)


def _lun_of(lun_field: bytes) -> int:
    """decode_lun with the peripheral-addressing case inlined (hot path)."""
    return lun_field[1] if lun_field[0] == 0 else P.decode_lun(lun_field)


def _iscsi_condition(asc_ascq: tuple[int, int], key: int = SenseKey.ABORTED_COMMAND) -> bytes:
    return SenseData(key, asc_ascq[0], asc_ascq[1]).fixed()


class ConnectionState(enum.Enum):
    LOGIN = "login"
    FULL_FEATURE = "full feature"
    LOGGED_OUT = "logged out"     # Logout Response sent; nothing more is read
    CLOSED = "closed"


# The transition table's input side: which opcodes each state handles at all.
ALLOWED_OPCODES: dict[ConnectionState, frozenset[int]] = {
    ConnectionState.LOGIN: frozenset({Opcode.LOGIN_REQUEST}),
    ConnectionState.FULL_FEATURE: frozenset({
        Opcode.NOP_OUT, Opcode.SCSI_COMMAND, Opcode.TASK_MANAGEMENT_REQUEST, Opcode.TEXT_REQUEST,
        Opcode.SCSI_DATA_OUT, Opcode.LOGOUT_REQUEST, Opcode.SNACK_REQUEST}),
    ConnectionState.LOGGED_OUT: frozenset(),
    ConnectionState.CLOSED: frozenset(),
}
# A discovery session only talks text, NOP and logout (RFC 7143 4.3).
DISCOVERY_OPCODES = frozenset({Opcode.NOP_OUT, Opcode.TEXT_REQUEST, Opcode.LOGOUT_REQUEST})


class _ConnectionFailure(Exception):
    """Internal: the connection must be dropped (ERL 0 recovery is session recovery)."""


@dataclass(frozen=True, slots=True)
class LoginContext:
    """What a login state machine of one connection is built from."""

    directory: TargetDirectory          # the targets reachable through this connection's portal
    portal_group_tag_for: Callable[[str], int]
    target_mrdsl: int
    max_text_bytes: int


class LoginMachine(Protocol):
    """The login state machine as the connection drives it (``login.LoginStateMachine``)."""

    session_type: str
    initiator_name: str
    initiator_alias: str | None
    target_name: str | None
    isid: bytes
    parameters: SessionParameters
    failure_reason: str | None

    def receive(self, request: LoginRequestInfo) -> LoginReply: ...


LoginFactory = Callable[[LoginContext], LoginMachine]


def default_login_factory(context: LoginContext) -> LoginMachine:
    return LoginStateMachine(context.directory, portal_group_tag_for=context.portal_group_tag_for,
                             target_mrdsl=context.target_mrdsl, max_text_bytes=context.max_text_bytes)


class IscsiConnection:
    """The target side of one TCP connection, from login to logout.

    Args:
        registry: the server's targets and live sessions.
        peer: "ip:port" of the initiator (for log lines and ``describe``).
        peer_address: the initiator's IP address, which admission counts sessions and
            failed logins by (default: the host part of ``peer``).
        local_address: the IP the initiator connected to (reported for wildcard portals).
        local_port: the TCP port it connected to; with ``local_address`` it names the portal,
            and only targets served on that portal can be logged in to or discovered
            (None: no restriction).
        portal_group_tag: the TPGT of the portal group this connection arrived on.
        login_factory: builds the login state machine; tests may inject a scripted one.
        target_mrdsl: the MaxRecvDataSegmentLength we declare.
        nop_interval: seconds of silence before we ping with a NOP-In (0: never); an
            unanswered ping for as long again drops the connection.
        limits: the bounds this connection enforces (docs/security.md).
        runner: runs the commands that wait for storage (``transport.workers.CommandDriver``);
            the default runs them on the calling thread, for tests only.
    """

    def __init__(self, registry: SessionRegistry, *, peer: str = "?", peer_address: str | None = None,
                 local_address: str | None = None, local_port: int | None = None, portal_group_tag: int = 1,
                 login_factory: LoginFactory | None = None, target_mrdsl: int = DEFAULT_TARGET_MRDSL,
                 nop_interval: float = 30.0, now: float = 0.0, limits: IscsiLimits | None = None,
                 runner: CommandRunner | None = None):
        self.registry = registry
        self.peer = peer
        self.peer_address = peer_address if peer_address is not None else peer.rpartition(":")[0] or peer
        self.local_address = local_address
        self.local_port = local_port
        self.portal_group_tag = portal_group_tag
        self.target_mrdsl = target_mrdsl
        self.nop_interval = nop_interval
        self.limits = limits if limits is not None else registry.limits
        self.state = ConnectionState.LOGIN
        self.session: Session | None = None
        self.framer = P.PduFramer(max_recv_data_segment_length=8192)
        self.header_digest = False
        self.data_digest = False
        self.max_xmit = 8192
        self.max_burst = 262144
        self.first_burst = 65536
        self.immediate_data = True
        self.initial_r2t = True
        self.max_outstanding_r2t = 1
        self.stat_sn = 0
        self.window: CommandWindow | None = None
        self.order: CommandOrder | None = None
        self._out: list = []
        self._out_bytes = 0            # bytes in ``_out``
        #: Bytes the runner's transport still holds unsent (it sets this after each write).
        self.send_backlog = 0
        self.close_requested = False   # the runner closes the socket once the output is written
        self.on_terminate: Callable[[], None] | None = None
        #: Called when output appeared outside ``receive_data``/``on_timer``/``resume`` (a
        #: command finished on the storage workers): the runner flushes it.
        self.on_output: Callable[[], None] | None = None
        self._login_factory = login_factory or default_login_factory
        self._login: LoginMachine | None = None
        self._login_first: P.LoginRequest | None = None
        self._initiator_name = "?"
        self.tasks = TaskTable(self, runner if runner is not None else InlineRunner())
        self._r2t_owner: dict[int, tuple[ScsiTask, R2tState]] = {}  # by TTT
        self._aborted_tags: set[int] = set()             # ITTs of aborted tasks (their Data-Outs are dropped)
        self._budget = DataOutBudget(self.limits.max_data_out_bytes)
        self._stalled: deque[P.RawPdu] = deque()         # PDUs received but not handled yet
        self._framing_error: P.PduFramingError | None = None
        self._closing_barrier: AbortBarrier | None = None
        self._next_ttt = 1
        self._text = TextExchange(self.limits.max_text_bytes, self._answer_text, self._allocate_ttt,
                                  lambda: self.max_xmit)
        self._last_received = now
        self._created = now
        self._now = now
        self._ping_ttt: int | None = None
        self._ping_sent_at = 0.0
        self.cid = 0
        self._normal = False           # a Normal (not discovery) session in full feature phase
        self._dispatch = {
            Opcode.LOGIN_REQUEST: self._on_login_request,
            Opcode.NOP_OUT: self._on_nop_out,
            Opcode.SCSI_COMMAND: self._on_scsi_command,
            Opcode.TASK_MANAGEMENT_REQUEST: self._on_task_management,
            Opcode.TEXT_REQUEST: self._on_text_request,
            Opcode.SCSI_DATA_OUT: self._on_data_out,
            Opcode.LOGOUT_REQUEST: self._on_logout,
            Opcode.SNACK_REQUEST: self._on_snack,
        }

    # ------------------------------------------------------------------ runner interface
    def receive_data(self, chunk: bytes | memoryview, now: float = 0.0) -> None:
        """Handle bytes from the peer; ``b""`` means EOF.

        PDUs beyond what the output bound lets us answer stay queued (``input_stalled``)
        until ``resume``; the runner stops reading meanwhile.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.LOGGED_OUT):
            return
        if not chunk:
            self.connection_lost("peer closed the connection")
            return
        self._last_received = now
        self._now = now
        if self._framing_error is not None:
            return          # the stream is no longer trusted; the connection closes once the queue is done
        try:
            pdus = self.framer.feed(chunk)
        except P.PduFramingError as error:
            # Kept until the queue is done: without the PDUs or the traceback, whose frames
            # refer to the receive buffer (server.py reuses it only when nothing does).
            pdus, error.pdus_before = error.pdus_before, []
            self._framing_error = error.with_traceback(None)
        if self._stalled:
            self._stalled.extend(pdus)
        else:
            self._stalled = deque(pdus)
        self._handle_queued()

    def resume(self, now: float) -> None:
        """The socket took some output: handle queued PDUs again."""
        self._now = now
        if self.state in (ConnectionState.LOGIN, ConnectionState.FULL_FEATURE):
            self._handle_queued()

    @property
    def input_stalled(self) -> bool:
        """PDUs wait until the peer has read more of our output: the runner stops reading."""
        return bool(self._stalled)

    def _send_pressure(self) -> bool:
        return self._out_bytes + self.send_backlog > self.limits.max_pending_send_bytes

    def _handle_queued(self) -> None:
        queue = self._stalled
        while queue:
            if self._send_pressure():
                return
            if not self._handle(queue.popleft()):
                queue.clear()
                return
        error = self._framing_error
        if error is not None and self.state in (ConnectionState.LOGIN, ConnectionState.FULL_FEATURE):
            if error.reject_reason is not None and self.state is ConnectionState.FULL_FEATURE:
                self._send_reject(error.reject_reason, error.bhs)
            self._drop(f"{error} (RFC 7143 7.8: connection closed)")

    def data_to_send(self) -> list:
        """The buffers to write, in order; the list is handed over (and emptied here)."""
        out = self._out
        self._out = []
        self._out_bytes = 0
        return out

    def on_timer(self, now: float) -> None:
        """Keepalive (RFC 7143 11.19): ping an idle initiator, drop one that never answers.

        Also bounds the login phase (``login_timeout``) and a silent discovery session
        (``discovery_idle_timeout``): an idle socket must not hold resources forever.
        """
        self._now = now
        limits = self.limits
        if self.state is ConnectionState.LOGIN:
            if now - self._created >= limits.login_timeout:
                self._drop(f"login not completed within {limits.login_timeout:g} s")
            return
        if self.state is not ConnectionState.FULL_FEATURE:
            return
        if self._is_discovery():
            if now - self._last_received >= limits.discovery_idle_timeout:
                self._drop(f"discovery session silent for {limits.discovery_idle_timeout:g} s")
            return
        if self.nop_interval <= 0:
            return
        if self._ping_ttt is not None:
            if now - self._ping_sent_at >= self.nop_interval:
                self._drop(f"no NOP-Out answer to our NOP-In ping within {self.nop_interval:g} s")
            return
        if now - self._last_received >= self.nop_interval:
            self._ping_ttt = self._allocate_ttt()
            self._ping_sent_at = now
            # A target-initiated NOP-In carries StatSN but does not advance it (RFC 7143 11.19.3).
            self._emit(P.NopIn(lun=bytes(8), initiator_task_tag=RESERVED_TAG, target_transfer_tag=self._ping_ttt,
                               stat_sn=self.stat_sn, exp_cmd_sn=self._exp_cmd_sn(), max_cmd_sn=self._max_cmd_sn()))

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The socket is gone: at ERL 0 the session fails with it (I_T nexus loss)."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self._forget_tasks()
        if self.session is not None and not self.session.closed:
            self.registry.close(self.session, logged_out=False, reason=reason)

    def terminate(self, reason: str) -> None:
        """Drop this connection from outside (reinstatement, reset, shutdown)."""
        if self.state is ConnectionState.CLOSED:
            return
        self._forget_tasks()
        self.state = ConnectionState.CLOSED
        self.close_requested = True
        if self.session is not None and not self.session.closed:
            self.registry.close(self.session, logged_out=False, reason=reason)
        if self.on_terminate is not None:
            self.on_terminate()

    @property
    def busy(self) -> bool:
        """Tasks are waiting for data-out, for their CmdSN turn or for storage."""
        return bool(self.tasks)

    def describe(self) -> dict:
        """What the admin shell shows for this connection's session."""
        session = self.session
        return {
            "initiator": session.initiator_name if session else self._initiator_name,
            "isid": session.isid.hex() if session else None,
            "tsih": session.tsih if session else None,
            "target": session.target_name if session else None,
            "session_type": session.session_type if session else None,
            "peer": self.peer,
            "state": self.state.value,
            "header_digest": "CRC32C" if self.header_digest else "None",
            "data_digest": "CRC32C" if self.data_digest else "None",
        }

    # ------------------------------------------------------------------ plumbing
    def _handle(self, raw: P.RawPdu) -> bool:
        """Handle one PDU; False when the connection is finished."""
        opcode = raw.bhs[0] & 0x3F
        try:
            if opcode not in ALLOWED_OPCODES[self.state]:
                self._out_of_state(raw, opcode)
            else:
                self._dispatch[opcode](raw)
        except _ConnectionFailure as error:
            self._drop(str(error))
        return self.state in (ConnectionState.LOGIN, ConnectionState.FULL_FEATURE)

    def _out_of_state(self, raw: P.RawPdu, opcode: int) -> None:
        if self.state is ConnectionState.LOGIN:
            raise _ConnectionFailure(f"opcode {opcode:#04x} during the login phase (RFC 7143 6.3)")
        if self.state is ConnectionState.FULL_FEATURE:
            if opcode == Opcode.LOGIN_REQUEST:
                self._refuse(raw, RejectReason.PROTOCOL_ERROR, "Login Request in full feature phase")
            else:
                self._refuse(raw, RejectReason.COMMAND_NOT_SUPPORTED, f"unknown opcode {opcode:#04x}")

    def _who(self) -> str:
        return f"initiator {self._initiator_name} at {self.peer}"

    def _refuse(self, raw: P.RawPdu, reason: int, why: str) -> None:
        """Reject one PDU (RFC 7143 11.17) and log why."""
        log.warning("%s: Reject %s (%02Xh): %s", self._who(), RejectReason(reason).name, int(reason), why)
        self._send_reject(reason, bytes(raw.bhs))

    def _send_reject(self, reason: int, bhs: bytes) -> None:
        stat_sn = self._next_stat_sn()
        self._emit(P.Reject(reason=reason, stat_sn=stat_sn, exp_cmd_sn=self._exp_cmd_sn(),
                            max_cmd_sn=self._max_cmd_sn(), data=bhs))

    def _drop(self, why: str) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        log.warning("%s: closing connection: %s", self._who(), why)
        self.close_requested = True
        self.connection_lost(why)

    def _emit(self, pdu) -> None:
        self._queue(P.encode_pdu(pdu, self.header_digest, self.data_digest))

    def _emit_raw(self, header: bytes, data=b"") -> None:
        self._queue(P.frame_pdu(header, data, self.header_digest, self.data_digest))

    def _queue(self, buffers) -> None:
        """Append one PDU's buffers to the output, counting them against the send bound."""
        self._out.extend(buffers)
        self._out_bytes += sum(len(buffer) for buffer in buffers)

    def _output_ready(self) -> None:
        if self.on_output is not None and self._out:
            self.on_output()

    def _next_stat_sn(self) -> int:
        stat_sn = self.stat_sn
        self.stat_sn = (stat_sn + 1) % _SERIAL_MOD
        return stat_sn

    def _exp_cmd_sn(self) -> int:
        return self.window.exp_cmd_sn if self.window else 0

    def _max_cmd_sn(self) -> int:
        return self.window.max_cmd_sn if self.window else 0

    def _allocate_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = ttt + 1 if ttt + 1 < RESERVED_TAG else 1
        return ttt

    def _forget_tasks(self) -> None:
        """The connection ends: abort everything it holds; nobody waits for an answer."""
        self.tasks.abort_all()
        self._r2t_owner.clear()
        if self.order is not None:
            self.order.clear()
        self._budget.clear()
        self._stalled.clear()

    # ------------------------------------------------------------------ login phase
    def _login_reply(self, request: P.LoginRequest, *, status_class: int, status_detail: int, transit=False,
                     csg=0, nsg=0, data=b"", tsih=0, version_active=0) -> None:
        self._emit(P.LoginResponse(transit=transit, csg=csg, nsg=nsg, version_max=0,
                                   version_active=version_active, isid=request.isid, tsih=tsih,
                                   initiator_task_tag=request.initiator_task_tag, stat_sn=self._next_stat_sn(),
                                   exp_cmd_sn=request.cmd_sn,
                                   max_cmd_sn=(request.cmd_sn + self.registry.command_window - 1) % _SERIAL_MOD,
                                   status_class=status_class, status_detail=status_detail, data=data))

    def _login_refused(self, request: P.LoginRequest, status: LoginStatus, why: str) -> None:
        log.warning("%s: login refused (status %02X/%02X): %s", self._who(), status.status_class,
                    status.status_detail, why)
        self.registry.admission.login_failed(self.peer_address, self._now, status.name.lower())
        self._login_reply(request, status_class=status.status_class, status_detail=status.status_detail,
                          csg=request.csg, nsg=request.nsg)
        self.close_requested = True
        self.state = ConnectionState.CLOSED

    def _login_context(self) -> LoginContext:
        directory: TargetDirectory = self.registry
        if self.local_address is not None and self.local_port is not None:
            directory = PortalDirectory(self.registry, self.local_address, self.local_port)
        return LoginContext(directory, self._portal_group_tag_for, self.target_mrdsl, self.limits.max_text_bytes)

    def _on_login_request(self, raw: P.RawPdu) -> None:
        request = P.LoginRequest.unpack(raw.bhs, bytes(raw.data))
        if raw.data_digest_error:   # digests are never on during login; defensive
            raise _ConnectionFailure("data digest error during login")
        first = self._login_first
        if first is None:
            self._login_first = request
            self.stat_sn = request.exp_stat_sn if request.exp_stat_sn else 1
            self.cid = request.cid
            if request.tsih != 0:
                existing = self.registry.by_tsih(request.tsih)
                if existing is None:
                    self._login_refused(request, LoginStatus.SESSION_DOES_NOT_EXIST,
                                        f"TSIH {request.tsih} names no live session")
                else:
                    # MaxConnections=1 (RFC 7143 13.2): a live session takes no second connection.
                    self._login_refused(request, LoginStatus.TOO_MANY_CONNECTIONS,
                                        f"session TSIH {request.tsih} already has its connection (MaxConnections=1)")
                return
            self._login = self._login_factory(self._login_context())
        elif (request.isid != first.isid or request.tsih != first.tsih or request.cid != first.cid
              or request.initiator_task_tag != first.initiator_task_tag):
            # RFC 7143 11.12: ISID, TSIH, CID and ITT stay the same for the whole login.
            self._login_refused(request, LoginStatus.INITIATOR_ERROR, "ISID/TSIH/CID/ITT changed during the login")
            return
        info = LoginRequestInfo(transit=request.transit, cont=request.cont, csg=request.csg, nsg=request.nsg,
                                version_max=request.version_max, version_min=request.version_min,
                                isid=request.isid, tsih=request.tsih,
                                initiator_task_tag=request.initiator_task_tag, cid=request.cid,
                                cmd_sn=request.cmd_sn, exp_stat_sn=request.exp_stat_sn, data=request.data)
        login = self._login
        reply = login.receive(info)
        if login.initiator_name:
            self._initiator_name = login.initiator_name
        if reply.failed or reply.status_class != 0:
            why = login.failure_reason or "login state machine refused"
            log.warning("%s: login refused (status %02X/%02X): %s", self._who(), reply.status_class,
                        reply.status_detail, why)
            self.registry.admission.login_failed(self.peer_address, self._now,
                                                 LoginStatus.name_of(reply.status_class, reply.status_detail))
            self._login_reply(request, status_class=reply.status_class, status_detail=reply.status_detail,
                              transit=reply.transit, csg=reply.csg, nsg=reply.nsg, data=reply.data,
                              version_active=reply.version_active)
            self.close_requested = True
            self.state = ConnectionState.CLOSED
            return
        tsih = 0
        if reply.finished:
            refusal = self.registry.admission.admit_session(self.peer_address)
            if refusal is not None:
                log.warning("%s: login refused (status 03/02): %s", self._who(), refusal)
                self.registry.admission.login_refused(LoginStatus.OUT_OF_RESOURCES.name.lower())
                self._login_reply(request, status_class=LoginStatus.OUT_OF_RESOURCES.status_class,
                                  status_detail=LoginStatus.OUT_OF_RESOURCES.status_detail, csg=request.csg,
                                  nsg=request.nsg)
                self.close_requested = True
                self.state = ConnectionState.CLOSED
                return
            tsih = self._start_session(request)
        self._login_reply(request, status_class=0, status_detail=0, transit=reply.transit, csg=reply.csg,
                          nsg=reply.nsg, data=reply.data, tsih=tsih, version_active=reply.version_active)
        if reply.finished:
            self._enter_full_feature()

    def _start_session(self, request: P.LoginRequest) -> int:
        login = self._login
        session_type = login.session_type
        target_name = login.target_name if session_type == SESSION_TYPE_NORMAL else None
        old = self.registry.by_identity(login.initiator_name, login.isid, target_name)
        if old is not None and session_type == SESSION_TYPE_NORMAL:
            # RFC 7143 6.3.5 session reinstatement: the old session (and its nexus) ends first.
            log.info("%s: reinstating session isid 0x%s (old TSIH %d)", self._who(), login.isid.hex(), old.tsih)
            self.registry.terminate(old, "reinstated by a new login with the same ISID")
        session = self.registry.create(session_type=session_type, initiator_name=login.initiator_name,
                                       initiator_alias=login.initiator_alias, isid=login.isid,
                                       target_name=target_name, parameters=login.parameters,
                                       exp_cmd_sn=request.cmd_sn, peer_address=self.peer_address)
        session.connection = self
        self.session = session
        self.window = session.window
        self.order = CommandOrder(session.window)
        params = session.parameters
        log.info("%s: %s session logged in: isid 0x%s tsih %d target %s (HeaderDigest %s, DataDigest %s)",
                 self._who(), session_type, session.isid.hex(), session.tsih, target_name,
                 "CRC32C" if params.header_digest else "None", "CRC32C" if params.data_digest else "None")
        return session.tsih

    def _enter_full_feature(self) -> None:
        params = self.session.parameters
        self.header_digest = bool(params.header_digest)
        self.data_digest = bool(params.data_digest)
        self.max_xmit = int(params.max_xmit_data_segment_length)
        self.max_burst = int(params.max_burst_length)
        self.first_burst = int(params.first_burst_length)
        self.immediate_data = bool(params.immediate_data)
        self.initial_r2t = bool(params.initial_r2t)
        self.max_outstanding_r2t = max(1, int(params.max_outstanding_r2t))
        self.framer.configure(max_recv_data_segment_length=int(params.max_recv_data_segment_length),
                              header_digest=self.header_digest, data_digest=self.data_digest)
        self.state = ConnectionState.FULL_FEATURE
        self._normal = self.session.session_type == SESSION_TYPE_NORMAL
        self._login = None

    # ------------------------------------------------------------------ CmdSN ordering
    def _ordered(self, raw: P.RawPdu, cmd_sn: int, run: Callable[[], None], hold) -> None:
        """Run ``run`` now if ``cmd_sn`` is next, hold ``hold`` if it is ahead, else drop it."""
        placement = self.order.place(cmd_sn, hold)
        if placement is Placement.RUN_NOW:
            run()
            self._release_held()
        elif placement is Placement.DUPLICATE:
            self._refuse(raw, RejectReason.PROTOCOL_ERROR, f"CmdSN {cmd_sn} used twice")
        elif placement is Placement.OUTSIDE:
            # RFC 7143 4.2.2.1: outside [ExpCmdSN, MaxCmdSN] -> silently ignored.
            window = self.window
            log.warning("%s: ignoring PDU opcode %#04x with CmdSN %d outside the window [%d, %d]", self._who(),
                        raw.opcode, cmd_sn, window.exp_cmd_sn, window.max_cmd_sn)
        # HELD: it runs when its turn comes; CONSUMED: an ABORT TASK took its CmdSN, ignore it

    def _release_held(self) -> None:
        for item in self.order.released():
            if isinstance(item, ScsiTask):
                item.ordered = True
                if self.tasks.waiting.get(item.initiator_task_tag) is item:
                    self._count_in_window(item)
                    self._after_data(item)
            else:
                self._handle_in_order(item)
            if self.state is not ConnectionState.FULL_FEATURE:
                return

    def _handle_in_order(self, raw: P.RawPdu) -> None:
        opcode = raw.opcode
        if opcode == Opcode.NOP_OUT:
            self._nop_out_in_order(P.NopOut.unpack(raw.bhs, raw.data))
        elif opcode == Opcode.TASK_MANAGEMENT_REQUEST:
            self._tmf_in_order(P.TaskManagementRequest.unpack(raw.bhs))
        elif opcode == Opcode.TEXT_REQUEST:
            self._text_in_order(P.TextRequest.unpack(raw.bhs, raw.data))
        elif opcode == Opcode.LOGOUT_REQUEST:
            self._logout_in_order(P.LogoutRequest.unpack(raw.bhs))

    def _is_discovery(self) -> bool:
        return self.session is not None and self.session.session_type == SESSION_TYPE_DISCOVERY

    def _retain(self, raw: P.RawPdu) -> P.RawPdu:
        """A copy of ``raw`` that may outlive the receive buffer (held for later)."""
        return P.RawPdu(bytes(raw.bhs), bytes(raw.ahs), bytes(raw.data))

    def _numbered(self, raw: P.RawPdu, handler: Callable[[], None]) -> None:
        cmd_sn = _U32.unpack_from(raw.bhs, 24)[0]
        if raw.immediate:
            handler()
        else:
            self._ordered(raw, cmd_sn, handler, self._retain(raw))

    def _count_in_window(self, task: ScsiTask) -> None:
        """A numbered task passed ExpCmdSN unanswered: it keeps its place in the window
        (``CommandWindow.occupied``) until it is answered or aborted."""
        if not task.immediate and not task.in_window:
            task.in_window = True
            self.window.occupied += 1

    def _leave_window(self, in_window: bool) -> None:
        if in_window:
            self.window.occupied -= 1

    # ------------------------------------------------------------------ NOP
    def _on_nop_out(self, raw: P.RawPdu) -> None:
        if raw.data_digest_error:
            self._refuse(raw, RejectReason.DATA_DIGEST_ERROR, "NOP-Out data digest error")
            return
        nop = P.NopOut.unpack(raw.bhs, raw.data)
        if nop.initiator_task_tag == RESERVED_TAG:
            if nop.target_transfer_tag != RESERVED_TAG:
                if nop.target_transfer_tag == self._ping_ttt:
                    self._ping_ttt = None       # the answer to our keepalive ping
            if not nop.immediate:
                self._ordered(raw, nop.cmd_sn, lambda: None, None)
            return
        if nop.target_transfer_tag != RESERVED_TAG:
            self._refuse(raw, RejectReason.INVALID_PDU_FIELD, "NOP-Out with both ITT and TTT set")
            return
        nop = P.NopOut(nop.immediate, nop.lun, nop.initiator_task_tag, nop.target_transfer_tag, nop.cmd_sn,
                       nop.exp_stat_sn, bytes(nop.data))
        if nop.immediate:
            self._nop_out_in_order(nop)
        else:
            self._ordered(raw, nop.cmd_sn, lambda: self._nop_out_in_order(nop), self._retain(raw))

    def _nop_out_in_order(self, nop: P.NopOut) -> None:
        if nop.initiator_task_tag == RESERVED_TAG:
            return
        # RFC 7143 11.19: the ping answer echoes the data and the LUN.
        self._emit(P.NopIn(lun=nop.lun, initiator_task_tag=nop.initiator_task_tag, target_transfer_tag=RESERVED_TAG,
                           stat_sn=self._next_stat_sn(), exp_cmd_sn=self._exp_cmd_sn(),
                           max_cmd_sn=self._max_cmd_sn(), data=bytes(nop.data)))

    def _on_snack(self, raw: P.RawPdu) -> None:
        # RFC 7143 11.16 / 7.1: SNACK needs ErrorRecoveryLevel > 0; we negotiate 0.
        self._refuse(raw, RejectReason.PROTOCOL_ERROR, "SNACK at ErrorRecoveryLevel 0")

    # ------------------------------------------------------------------ SCSI commands
    def _on_scsi_command(self, raw: P.RawPdu) -> None:
        """SCSI Command (RFC 7143 11.3). The common case runs here without a task object: the
        command is the next in CmdSN order, nothing is held, and it needs no more data."""
        b0, flags, _, _, lun_field, itt, edtl, cmd_sn, _, cdb = _SCSI_COMMAND_UNPACK(raw.bhs)
        window = self.window
        if (cmd_sn == window.exp_cmd_sn and not b0 & 0x40 and not self.order.holding and not raw.ahs
                and not raw.data_digest_error and self._normal and not self.tasks.in_use(itt)
                and window.occupied < window.depth):
            data = raw.data
            attribute = TASK_ATTRIBUTES[flags & 7]
            if flags & 0x60 == 0x40 and not data:
                window.advance()
                self._execute(itt, lun_field, _lun_of(lun_field), cdb, attribute, True, edtl, b"", 0, numbered=True)
                return
            if (flags & 0xE0 == 0xA0 and len(data) == edtl and self.immediate_data
                    and edtl <= self.first_burst):
                if raw.borrowed:
                    data = bytes(data)    # the write outlives the receive buffer it arrived in
                window.advance()
                self._execute(itt, lun_field, _lun_of(lun_field), cdb, attribute, False, edtl, data, 0, numbered=True)
                return
            if flags & 0x60 == 0 and not data:
                window.advance()
                self._execute(itt, lun_field, _lun_of(lun_field), cdb, attribute, False, edtl, b"", 0, numbered=True)
                return
        self._on_scsi_command_general(raw)

    def _on_scsi_command_general(self, raw: P.RawPdu) -> None:
        if self._is_discovery():
            self._refuse(raw, RejectReason.PROTOCOL_ERROR, "SCSI command in a discovery session")
            return
        if raw.data_digest_error:
            # Non-data PDU rule of RFC 7143 7.8: discard, Reject; the CmdSN is not consumed.
            self._refuse(raw, RejectReason.DATA_DIGEST_ERROR, "SCSI Command immediate data digest error")
            return
        bhs = raw.bhs
        b0, flags, _, word4, lun_field, itt, edtl, cmd_sn, _exp_stat_sn, cdb = _SCSI_COMMAND_UNPACK(bhs)
        immediate = bool(b0 & 0x40)
        if raw.ahs:
            try:
                command = P.ScsiCommandPdu.unpack(bhs, b"", raw.ahs)
            except (ValueError, struct.error):
                self._refuse(raw, RejectReason.INVALID_PDU_FIELD, "malformed AHS")
                return
            cdb = command.cdb
            bidi = command.bidirectional_read_length is not None
        else:
            bidi = False
        read = bool(flags & 0x40)
        write = bool(flags & 0x20)
        data = raw.data
        if self.tasks.in_use(itt):
            self._refuse(raw, RejectReason.TASK_IN_PROGRESS, f"ITT {itt:#x} is already in use")
            return
        if data:
            problem = None
            if not write:
                problem = "immediate data on a command without the W bit"
            elif not self.immediate_data:
                problem = "immediate data but ImmediateData=No"
            elif len(data) > min(self.first_burst, edtl):
                problem = "immediate data longer than FirstBurstLength or the expected transfer length"
            if problem:
                self._refuse(raw, RejectReason.PROTOCOL_ERROR, problem)
                if not immediate:
                    self._ordered(raw, cmd_sn, lambda: None, None)   # the CmdSN is consumed all the same
                return
        if immediate and len(self.tasks) >= self.limits.max_tasks_per_connection:
            self._refuse(raw, RejectReason.IMMEDIATE_COMMAND_REJECT,
                         f"{len(self.tasks)} tasks held (max_tasks_per_connection)")
            return
        lun = P.decode_lun(lun_field)
        task = ScsiTask(itt, cmd_sn, immediate, bytes(lun_field), lun, bytes(cdb), TASK_ATTRIBUTES[flags & 7], read,
                        write, edtl)
        placement = Placement.RUN_NOW if immediate else self.order.place(cmd_sn, task)
        if placement is Placement.OUTSIDE:
            log.warning("%s: ignoring SCSI command ITT %#x with CmdSN %d outside the window [%d, %d]",
                        self._who(), itt, cmd_sn, self.window.exp_cmd_sn, self.window.max_cmd_sn)
            return
        if placement is Placement.CONSUMED:
            self._aborted_tags.add(itt)        # an ABORT TASK took its CmdSN (RFC 7143 11.5.1 b)
            return
        if placement is Placement.DUPLICATE:
            self._refuse(raw, RejectReason.PROTOCOL_ERROR, f"CmdSN {cmd_sn} used twice")
            return
        if not immediate and len(self.tasks) >= self.limits.max_tasks_per_connection:
            # SAM-5 5.3.3: the task set cannot take another task; the CmdSN is consumed all the same.
            log.warning("%s: TASK SET FULL for ITT %#x: %d tasks held (max_tasks_per_connection)", self._who(),
                        itt, len(self.tasks))
            task.refusal_status = Status.TASK_SET_FULL
        if read and write or bidi:
            task.failure_sense = _iscsi_condition(INVALID_FIELD_IN_CDB, SenseKey.ILLEGAL_REQUEST)
            log.warning("%s: bidirectional command refused (opcode %#04x)", self._who(), cdb[0])
        if write and edtl:
            self._prepare_write(task, data, bool(flags & 0x80))
        self.tasks.waiting[itt] = task
        if placement is Placement.RUN_NOW:
            task.ordered = True
            self._count_in_window(task)
            self._after_data(task)
            if not immediate:
                self._release_held()

    def _prepare_write(self, task: ScsiTask, immediate_data, final: bool) -> None:
        """Size the task's Data-Out from its CDB, not from the initiator's EDTL alone."""
        edtl = task.expected_data_transfer_length
        wanted = 0
        if task.failure_sense is None and task.refusal_status is None:
            wanted = min(edtl, self.session.scsi_target.solicited_data_out(task.cdb, task.lun))
        task.solicit_end = wanted
        task.buffer = DataOutBuffer(wanted)
        received = len(immediate_data)
        task.buffer.write(0, immediate_data)
        task.unsolicited_received = received
        # RFC 7143 13.13/13.14: with InitialR2T=No the initiator may send up to FirstBurstLength
        # unsolicited (immediate data included); the F bit on the command says none follow.
        if not self.initial_r2t and not final:
            task.unsolicited_limit = min(self.first_burst, edtl)
            task.unsolicited_done = received >= task.unsolicited_limit
        else:
            task.unsolicited_limit = received
            task.unsolicited_done = True
        task.next_r2t_offset = received if task.unsolicited_done else task.unsolicited_limit
        self._budget.reserve(task, min(task.unsolicited_limit, wanted))

    def _after_data(self, task: ScsiTask) -> None:
        """Solicit more data if the task is in order and needs it, or run it when it is complete."""
        if not task.ordered:
            return
        if task.wants_r2t and not self._send_r2ts(task):
            self._budget.wait(task)
        if task.data_complete:
            self._complete_task(task)

    def _send_r2ts(self, task: ScsiTask) -> bool:
        """RFC 7143 11.8: at most MaxOutstandingR2T, each for at most MaxBurstLength bytes, once the
        task's whole buffer fits the connection's Data-Out budget (``DataOutBudget``; a task may
        always go when no other has bursts outstanding). False when the budget held it back."""
        end = task.solicit_end
        buffer = task.buffer
        if not buffer.allocated:
            # The whole buffer is reserved and made at once, before the first R2T.
            need = buffer.capacity - task.reserved
            if need > 0 and not self._budget.fits(need, bool(self._r2t_owner)):
                return False
            self._budget.reserve(task, max(0, need))
            buffer.allocate()
        while len(task.r2ts) < self.max_outstanding_r2t and task.next_r2t_offset < end:
            offset = task.next_r2t_offset
            length = min(self.max_burst, end - offset)
            ttt = self._allocate_ttt()
            r2t = R2tState(ttt, task.next_r2t_sn, offset, length)
            task.next_r2t_sn += 1
            task.next_r2t_offset = offset + length
            task.r2ts[ttt] = r2t
            self._r2t_owner[ttt] = (task, r2t)
            self._emit_raw(_R2T(_OPCODE_R2T, 0x80, 0, 0, task.lun_field, task.initiator_task_tag, ttt,
                                self.stat_sn, self.window.exp_cmd_sn, self.window.max_cmd_sn, r2t.r2t_sn,
                                offset, length))
        return True

    def _grant_r2ts(self) -> None:
        """Budget came free: solicit data for waiting tasks, oldest first."""
        waiting = self._budget.waiting
        while waiting:
            task = waiting[0]
            if self.tasks.waiting.get(task.initiator_task_tag) is not task or not task.wants_r2t:
                waiting.popleft()
                continue
            if not self._send_r2ts(task):
                return
            waiting.popleft()

    def _on_data_out(self, raw: P.RawPdu) -> None:
        if self._is_discovery():
            self._refuse(raw, RejectReason.PROTOCOL_ERROR, "Data-Out in a discovery session")
            return
        out = P.DataOut.unpack(raw.bhs, raw.data)
        ttt = out.target_transfer_tag
        itt = out.initiator_task_tag
        length = len(raw.data) if not raw.data_digest_error else (_U32.unpack_from(raw.bhs, 4)[0] & 0xFFFFFF)
        if ttt == RESERVED_TAG:
            task = self.tasks.waiting.get(itt)
            if task is None:
                if itt in self._aborted_tags:
                    return
                self._refuse(raw, RejectReason.INVALID_PDU_FIELD, f"unsolicited Data-Out for unknown ITT {itt:#x}")
                return
            if task.unsolicited_done or task.buffer is None:
                raise _ConnectionFailure(f"unexpected unsolicited Data-Out for ITT {itt:#x}")
            if out.buffer_offset + length > task.unsolicited_limit:
                raise _ConnectionFailure(f"unsolicited Data-Out beyond FirstBurstLength (offset {out.buffer_offset},"
                                         f" {length} bytes)")
            expected = task.unsolicited_next_data_sn
            task.unsolicited_next_data_sn = (out.data_sn + 1) % _SERIAL_MOD
            if out.data_sn != expected:
                self._data_sequence_error(task, out.data_sn, expected)
            else:
                self._accept_data(task, raw, out.buffer_offset, length)
            task.unsolicited_received += length
            if out.final:
                if task.unsolicited_received != task.unsolicited_limit and task.failure_sense is None:
                    task.failure_sense = _iscsi_condition(INCORRECT_AMOUNT_OF_DATA)
                task.unsolicited_done = True
                if task.failure_sense is not None:
                    task.solicit_end = 0
                self._after_data(task)
            return
        owner = self._r2t_owner.get(ttt)
        if owner is None or owner[0].initiator_task_tag != itt:
            if itt in self._aborted_tags:
                return
            self._refuse(raw, RejectReason.INVALID_PDU_FIELD, f"Data-Out with unknown TTT {ttt:#x} (ITT {itt:#x})")
            return
        task, r2t = owner
        if out.buffer_offset < r2t.buffer_offset or out.buffer_offset + length > r2t.buffer_offset + r2t.length:
            raise _ConnectionFailure(f"Data-Out offset {out.buffer_offset}+{length} outside R2T "
                                     f"{r2t.buffer_offset}+{r2t.length}")
        expected = r2t.next_data_sn
        r2t.next_data_sn = (out.data_sn + 1) % _SERIAL_MOD
        r2t.received += length
        if out.data_sn != expected:
            self._data_sequence_error(task, out.data_sn, expected)
        else:
            self._accept_data(task, raw, out.buffer_offset, length)
        if out.final:
            if r2t.received != r2t.length and task.failure_sense is None:
                task.failure_sense = _iscsi_condition(INCORRECT_AMOUNT_OF_DATA)
            del task.r2ts[ttt]
            del self._r2t_owner[ttt]
            if task.failure_sense is not None:
                task.solicit_end = min(task.solicit_end, task.next_r2t_offset)
            self._after_data(task)
            self._grant_r2ts()

    def _data_sequence_error(self, task: ScsiTask, data_sn: int, expected: int) -> None:
        """RFC 7143 7.9: an out-of-order DataSN means an earlier Data-Out was lost to a digest
        error; at ERL 0 the task ends with PROTOCOL SERVICE CRC ERROR once its data is in (7.8 b),
        and the session lives on."""
        log.warning("%s: Data-Out DataSN %d, expected %d (ITT %#x): the task will fail", self._who(), data_sn,
                    expected, task.initiator_task_tag)
        if task.failure_sense is None:
            task.failure_sense = _iscsi_condition(PROTOCOL_SERVICE_CRC_ERROR)

    def _accept_data(self, task: ScsiTask, raw: P.RawPdu, offset: int, length: int) -> None:
        if raw.data_digest_error:
            # RFC 7143 7.8 (b): Reject, then end the task with PROTOCOL SERVICE CRC ERROR once all
            # data is in. We cannot ask for it again (recovery R2T needs ERL 1).
            self._refuse(raw, RejectReason.DATA_DIGEST_ERROR, f"Data-Out data digest error (ITT "
                         f"{task.initiator_task_tag:#x})")
            if task.failure_sense is None:
                task.failure_sense = _iscsi_condition(PROTOCOL_SERVICE_CRC_ERROR)
            return
        task.buffer.write(offset, raw.data)

    def drop_waiting(self, task: ScsiTask) -> None:
        """Abort a task that is still collecting data or waiting for its turn (``TaskTable``):
        it gets no SCSI Response (RFC 7143 4.2.3.3), its later Data-Outs are dropped quietly."""
        self.tasks.waiting.pop(task.initiator_task_tag, None)
        self._budget.release(task)
        self._aborted_tags.add(task.initiator_task_tag)
        if len(self._aborted_tags) > 4096:
            self._aborted_tags.clear()
            self._aborted_tags.add(task.initiator_task_tag)
        for ttt in task.r2ts:
            self._r2t_owner.pop(ttt, None)
        task.r2ts.clear()
        if not task.ordered and self.order is not None:
            self.order.empty_slot(task.cmd_sn, task)   # keep the CmdSN: the window must still move past it
        self._leave_window(task.in_window)
        task.in_window = False

    # ------------------------------------------------------------------ execution and answers
    def _complete_task(self, task: ScsiTask) -> None:
        self.tasks.waiting.pop(task.initiator_task_tag, None)
        self._budget.release(task)
        if task.failure_sense is not None:
            self._leave_window(task.in_window)
            self._send_scsi_response(task.initiator_task_tag, Status.CHECK_CONDITION, task.failure_sense, 0, False,
                                     False, task.next_r2t_sn)
        elif task.refusal_status is not None:
            self._leave_window(task.in_window)
            self._send_scsi_response(task.initiator_task_tag, task.refusal_status, b"", 0, False, False,
                                     task.next_r2t_sn)
        else:
            self._execute(task.initiator_task_tag, task.lun_field, task.lun, task.cdb, task.task_attribute,
                          task.read, task.expected_data_transfer_length,
                          task.buffer.contents() if task.buffer is not None else b"", task.next_r2t_sn,
                          numbered=not task.immediate, in_window=task.in_window)
        if self._budget.waiting:
            self._grant_r2ts()

    def _execute(self, itt: int, lun_field: bytes, lun: int, cdb: bytes, attribute: int, read: bool, edtl: int,
                 data_out, r2ts_sent: int, *, numbered: bool, in_window: bool = False) -> None:
        """Run one command in the core: answer it now, or once its storage work is done."""
        session = self.session
        outcome = session.scsi_target.execute(ScsiCommand(cdb, session.nexus, lun, data_out, edtl, itt, attribute,
                                                             session.write_protected))
        if outcome.__class__ is not Pending:
            self._leave_window(in_window)      # its answer already advertises the freed place
            self._respond(itt, lun_field, read, edtl, r2ts_sent, outcome)
            return
        if numbered and not in_window:
            in_window = True
            self.window.occupied += 1
        self.tasks.start(RunningCommand(itt, lun_field, lun, read, edtl, r2ts_sent, outcome, in_window=in_window),
                         self._command_ended)

    def _command_ended(self, command: RunningCommand, result: ScsiResult | None) -> None:
        """A command's storage work is over (on the loop, in any order): answer it unless it
        was aborted or the connection is gone."""
        self.tasks.ended(command)
        self._leave_window(command.in_window)
        if result is not None and not command.aborted and self.state is ConnectionState.FULL_FEATURE:
            self._respond(command.initiator_task_tag, command.lun_field, command.read,
                          command.expected_data_transfer_length, command.r2ts_sent, result)
        self._output_ready()

    def _respond(self, itt: int, lun_field: bytes, read: bool, edtl: int, r2ts_sent: int, result: ScsiResult) -> None:
        """Send a command's Data-In and status (the READ/WRITE hot path)."""
        wanted = result.transfer_length
        status = result.status
        sense = result.sense
        data_in = result.data_in
        # Residuals (RFC 7143 11.4.5): what the command wanted versus what the initiator expected;
        # the Residual Count field has 32 bits, so a CDB asking for more says so saturated.
        if wanted > edtl:
            overflow, underflow, residual = True, False, min(wanted - edtl, _MAX_RESIDUAL)
        elif wanted < edtl:
            overflow, underflow, residual = False, True, edtl - wanted
        else:
            overflow = underflow = False
            residual = 0
        if read and data_in and edtl:
            length = len(data_in)
            if length > edtl:
                length = edtl
            window = self.window
            if not sense and status == _GOOD:
                _, size = frame_data_in(
                    self._out, initiator_task_tag=itt, lun_field=lun_field, data_in=data_in, length=length,
                    max_xmit=self.max_xmit, max_burst=self.max_burst, header_digest=self.header_digest,
                    data_digest=self.data_digest, exp_cmd_sn=window.exp_cmd_sn, max_cmd_sn=window.max_cmd_sn,
                    status=status, stat_sn=self._next_stat_sn(), overflow=overflow, underflow=underflow,
                    residual=residual)
                self._out_bytes += size
                return
            r2ts_sent, size = frame_data_in(
                self._out, initiator_task_tag=itt, lun_field=lun_field, data_in=data_in, length=length,
                max_xmit=self.max_xmit, max_burst=self.max_burst, header_digest=self.header_digest,
                data_digest=self.data_digest, exp_cmd_sn=window.exp_cmd_sn, max_cmd_sn=window.max_cmd_sn)
            self._out_bytes += size
        self._send_scsi_response(itt, status, sense, residual, overflow, underflow, r2ts_sent)

    def _send_scsi_response(self, itt: int, status: int, sense: bytes, residual: int, overflow: bool,
                            underflow: bool, exp_data_sn: int) -> None:
        """RFC 7143 11.4; ExpDataSN counts the R2Ts (write) or Data-Ins (read) sent for the task."""
        data = P.sense_segment(sense) if sense else b""
        flags = 0x80 | (0x04 if overflow else 0) | (0x02 if underflow else 0)
        window = self.window
        header = _SCSI_RESPONSE(_OPCODE_SCSI_RESPONSE, flags, 0, status, len(data), itt, 0, self._next_stat_sn(),
                                window.exp_cmd_sn, window.max_cmd_sn, exp_data_sn, 0, residual)
        self._queue(P.frame_pdu(header, data, self.header_digest, self.data_digest and bool(data)))

    # ------------------------------------------------------------------ task management
    def _on_task_management(self, raw: P.RawPdu) -> None:
        if self._is_discovery():
            self._refuse(raw, RejectReason.PROTOCOL_ERROR, "task management in a discovery session")
            return
        request = P.TaskManagementRequest.unpack(raw.bhs)
        self._numbered(raw, lambda: self._tmf_in_order(request))

    def _tmf_in_order(self, request: P.TaskManagementRequest) -> None:
        """Carry out a TMF; answer once every task it aborted has stopped (``task_table``)."""
        barrier = AbortBarrier()
        response, after = perform_task_management(self, request, barrier)

        def answer() -> None:
            if self.state is not ConnectionState.FULL_FEATURE:
                return
            self._emit(P.TaskManagementResponse(response=response, initiator_task_tag=request.initiator_task_tag,
                                                stat_sn=self._next_stat_sn(), exp_cmd_sn=self._exp_cmd_sn(),
                                                max_cmd_sn=self._max_cmd_sn()))
            if after is not None:
                after()
            self._output_ready()

        barrier.when_open(answer)

    def consider_received(self, cmd_sn: int) -> None:
        """RFC 7143 11.5.1 ABORT TASK rule b): a never-received RefCmdSN counts as received."""
        self.order.consume(cmd_sn)
        self._release_held()

    # ------------------------------------------------------------------ text
    def _on_text_request(self, raw: P.RawPdu) -> None:
        if raw.data_digest_error:
            self._refuse(raw, RejectReason.DATA_DIGEST_ERROR, "Text Request data digest error")
            return
        request = P.TextRequest.unpack(raw.bhs, bytes(raw.data))
        self._numbered(raw, lambda: self._text_in_order(request))

    def _text_in_order(self, request: P.TextRequest) -> None:
        action = self._text.receive(request)
        if action.kind is TextActionKind.REJECT:
            log.warning("%s: Reject %s (%02Xh): %s", self._who(), RejectReason(action.reject_reason).name,
                        action.reject_reason, action.why)
            self._send_reject(action.reject_reason, request.pack())
            return
        self._emit(P.TextResponse(final=action.final, cont=action.cont, lun=request.lun,
                                  initiator_task_tag=request.initiator_task_tag,
                                  target_transfer_tag=action.target_transfer_tag, stat_sn=self._next_stat_sn(),
                                  exp_cmd_sn=self._exp_cmd_sn(), max_cmd_sn=self._max_cmd_sn(), data=action.data))

    def _answer_text(self, text: bytes) -> bytes | None:
        """Full-feature negotiation (SendTargets, MaxRecvDataSegmentLength, ...); None if malformed."""
        session = self.session
        directory: TargetDirectory = self.registry
        if self.local_address is not None and self.local_port is not None:
            directory = PortalDirectory(self.registry, self.local_address, self.local_port)
        info = TextSessionInfo(session_type=session.session_type, initiator_name=session.initiator_name,
                               target_name=session.target_name, local_address=self.local_address,
                               portal_group_tag_for=self._portal_group_tag_for)
        try:
            answer = negotiate_text_request(session.parameters, text, directory, info)
        except TextFormatError:
            return None
        self.max_xmit = int(session.parameters.max_xmit_data_segment_length)
        return answer

    def _portal_group_tag_for(self, target_name: str) -> int:
        return self.registry.portal_group_tag(target_name, self.portal_group_tag)

    # ------------------------------------------------------------------ logout
    def _on_logout(self, raw: P.RawPdu) -> None:
        request = P.LogoutRequest.unpack(raw.bhs)
        self._numbered(raw, lambda: self._logout_in_order(request))

    def _logout_in_order(self, request: P.LogoutRequest) -> None:
        reason = request.reason
        response = P.LogoutResponseCode.CLOSED_SUCCESSFULLY
        if reason == P.LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            response = P.LogoutResponseCode.RECOVERY_NOT_SUPPORTED
        elif reason == P.LogoutReason.CLOSE_CONNECTION and request.cid != self.cid:
            response = P.LogoutResponseCode.CID_NOT_FOUND
        elif reason not in (P.LogoutReason.CLOSE_SESSION, P.LogoutReason.CLOSE_CONNECTION):
            self._send_reject(RejectReason.INVALID_PDU_FIELD, request.pack())
            log.warning("%s: Reject INVALID_PDU_FIELD: logout reason %d", self._who(), reason)
            return
        if response != P.LogoutResponseCode.CLOSED_SUCCESSFULLY:
            self._answer_logout(request, response)
            return
        # Closing the only connection closes the session (MaxConnections=1): its tasks end with
        # it, and the Logout Response goes out once none of them is still touching storage.
        barrier = AbortBarrier()
        self.tasks.abort(lambda task: True, barrier)
        barrier.when_open(lambda: self._logged_out(request))

    def _logged_out(self, request: P.LogoutRequest) -> None:
        if self.state is not ConnectionState.FULL_FEATURE:
            return
        self._answer_logout(request, P.LogoutResponseCode.CLOSED_SUCCESSFULLY)
        self._forget_tasks()
        self.state = ConnectionState.LOGGED_OUT
        self.close_requested = True
        if self.session is not None:
            self.registry.close(self.session, logged_out=True, reason="logout")
        self._output_ready()

    def _answer_logout(self, request: P.LogoutRequest, response: int) -> None:
        params = self.session.parameters if self.session else None
        self._emit(P.LogoutResponse(response=response, initiator_task_tag=request.initiator_task_tag,
                                    stat_sn=self._next_stat_sn(), exp_cmd_sn=self._exp_cmd_sn(),
                                    max_cmd_sn=self._max_cmd_sn(),
                                    time2wait=params.default_time2wait if params is not None else 0, time2retain=0))
