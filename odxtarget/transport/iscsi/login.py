"""The iSCSI login phase, target side, as a sans-IO state machine (RFC 7143 6.3, 11.12, 11.13).

Theory of operation (h11 style: everything that changes login state lives in this file):

* The caller (the connection code) decodes each Login Request BHS into a ``LoginRequestInfo``
  and hands it to ``LoginStateMachine.receive``; it gets one ``LoginReply`` back to encode and
  send. No sockets, no clocks; randomness (CHAP challenges) only through ``token_bytes``.
* Stage sequencing is data: ``REQUEST_STAGES[(state, CSG)]`` says in which stage a request
  negotiates, ``STAGE_TRANSITIONS[(CSG, NSG)]`` which stage a T=1 request may move to. A pair
  missing from a table refuses the login; nothing else decides it.
* Key handling: ``negotiation.KEY_TABLE`` says which stage and sender each key belongs to;
  security keys (AuthMethod, CHAP_*) go to ``chap.ChapAuthenticator``, operational keys to
  ``negotiation.answer_offer``.
* Every refusal is a ``LoginRefused(status, reason)`` raised inside and turned into a final
  reply (``failed=True``) at the single entry point, ``receive``; ``failure_reason`` keeps the
  one-line reason for the log. ``receive`` never raises on peer input: an unexpected internal
  exception becomes 03/00 (target error). The only exception it raises is ``LoginUsageError``,
  when called again after the login already finished or failed (a caller bug).
* C bit: a request with C=1 is buffered and answered with an empty reply; a reply longer than
  ``MAX_REPLY_SEGMENT`` goes out in pieces with C=1, each fetched by an empty request, and the
  stage transition is applied only with the last piece (RFC 7143 11.12.2, 11.13.2).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from odxtarget.config import ChapConfig, TargetConfig
from odxtarget.transport.iscsi.chap import CHAP_KEYS, ChapAuthenticator, ChapFailure
from odxtarget.transport.iscsi.limits import DEFAULT_LIMITS
from odxtarget.transport.iscsi.discovery import (
    SESSION_TYPE_DISCOVERY,
    SESSION_TYPE_NORMAL,
    TargetDirectory,
    matching_acl,
)
from odxtarget.transport.iscsi.negotiation import (
    AUTH_CHAP,
    AUTH_NONE,
    KEY_TABLE,
    NegotiationPolicy,
    ResultFunction,
    Sender,
    SessionParameters,
    Stage,
    answer_offer,
    reconcile,
    value_limit,
)
from odxtarget.transport.iscsi.text import (
    ANSWER_TOKENS,
    NOT_UNDERSTOOD,
    TextFormatError,
    encode_text,
    parse_list,
    parse_text,
)

__all__ = [
    "LoginReply",
    "LoginRequestInfo",
    "LoginState",
    "LoginStateMachine",
    "LoginStatus",
    "LoginUsageError",
    "TargetDirectory",
    "refusal_reply",
]

ISCSI_VERSION = 0                  # RFC 7143 (and 3720) are version 0x00
MAX_REPLY_SEGMENT = 8192           # per login reply; longer answers use the C bit
ISID_LENGTH = 6
ISCSI_NAME_PREFIXES = ("iqn.", "eui.", "naa.")   # RFC 7143 4.2.7.1
# Declarations libiscsi 1.19.0 repeats, with the same value, in its operational-stage request
# when CHAP was offered but the target chose AuthMethod=None. Repeating a declaration with the
# same value changes nothing, so it is tolerated; a different value is still refused.
REPEATABLE_DECLARATIONS = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias"})


@dataclass(slots=True)
class LoginRequestInfo:
    transit: bool
    cont: bool
    csg: int            # 0 security, 1 operational
    nsg: int            # 1 operational, 3 full feature
    version_max: int
    version_min: int
    isid: bytes         # 6 bytes
    tsih: int
    initiator_task_tag: int
    cid: int
    cmd_sn: int
    exp_stat_sn: int
    data: bytes         # the text data segment of this PDU


@dataclass(slots=True)
class LoginReply:
    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_active: int
    status_class: int   # RFC 7143 11.13.5: 0 success, 1 redirection, 2 initiator error, 3 target error
    status_detail: int
    data: bytes         # at most MAX_REPLY_SEGMENT bytes; the C bit carries the rest
    finished: bool      # True: after this reply is sent the connection is in full feature phase
    failed: bool        # True: close the connection after sending this reply


class LoginStatus(enum.Enum):
    """Status-Class and Status-Detail of a Login Response (RFC 7143 11.13.5)."""

    SUCCESS = (0x00, 0x00)
    TARGET_MOVED_TEMPORARILY = (0x01, 0x01)
    TARGET_MOVED_PERMANENTLY = (0x01, 0x02)
    INITIATOR_ERROR = (0x02, 0x00)
    AUTHENTICATION_FAILURE = (0x02, 0x01)
    AUTHORIZATION_FAILURE = (0x02, 0x02)
    NOT_FOUND = (0x02, 0x03)
    TARGET_REMOVED = (0x02, 0x04)
    UNSUPPORTED_VERSION = (0x02, 0x05)
    TOO_MANY_CONNECTIONS = (0x02, 0x06)
    MISSING_PARAMETER = (0x02, 0x07)
    CANT_INCLUDE_IN_SESSION = (0x02, 0x08)
    SESSION_TYPE_NOT_SUPPORTED = (0x02, 0x09)
    SESSION_DOES_NOT_EXIST = (0x02, 0x0A)
    INVALID_DURING_LOGIN = (0x02, 0x0B)
    TARGET_ERROR = (0x03, 0x00)
    SERVICE_UNAVAILABLE = (0x03, 0x01)
    OUT_OF_RESOURCES = (0x03, 0x02)

    @property
    def status_class(self) -> int:
        return self.value[0]

    @property
    def status_detail(self) -> int:
        return self.value[1]

    @classmethod
    def name_of(cls, status_class: int, status_detail: int) -> str:
        """The lower-case name of a refusal's status pair ("authentication_failure"); pairs
        RFC 7143 does not name, or that are no refusal, go by their class ("target_error" for
        class 3, else "initiator_error")."""
        try:
            status = cls((status_class, status_detail))
        except ValueError:
            status = None
        if status is not None and status.status_class >= cls.INITIATOR_ERROR.status_class:
            return status.name.lower()
        return "target_error" if status_class == cls.TARGET_ERROR.status_class else "initiator_error"


class LoginRefused(Exception):
    """Internal: the login ends with ``status``; ``reason`` goes to the log."""

    def __init__(self, status: LoginStatus, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LoginUsageError(RuntimeError):
    """``receive`` was called after the login had already finished or failed."""


class LoginState(enum.Enum):
    INITIAL = "initial"
    SECURITY = "security negotiation"
    OPERATIONAL = "operational negotiation"
    FULL_FEATURE = "full feature phase"
    FAILED = "failed"


class AuthProgress(enum.Enum):
    NOT_STARTED = "no AuthMethod agreed yet"
    NONE_AGREED = "AuthMethod=None agreed"
    CHAP_RUNNING = "CHAP exchange running"


# (machine state, CSG of the request) -> the stage the request negotiates in.
REQUEST_STAGES: dict[tuple[LoginState, int], LoginState] = {
    (LoginState.INITIAL, Stage.SECURITY): LoginState.SECURITY,
    (LoginState.INITIAL, Stage.OPERATIONAL): LoginState.OPERATIONAL,   # no security stage wanted
    (LoginState.SECURITY, Stage.SECURITY): LoginState.SECURITY,
    (LoginState.OPERATIONAL, Stage.OPERATIONAL): LoginState.OPERATIONAL,
}

# (CSG, NSG) of a request with T=1 -> the state we enter when we agree to transit.
STAGE_TRANSITIONS: dict[tuple[int, int], LoginState] = {
    (Stage.SECURITY, Stage.OPERATIONAL): LoginState.OPERATIONAL,
    (Stage.SECURITY, Stage.FULL_FEATURE): LoginState.FULL_FEATURE,
    (Stage.OPERATIONAL, Stage.FULL_FEATURE): LoginState.FULL_FEATURE,
}

_STAGE_OF_STATE = {LoginState.SECURITY: Stage.SECURITY, LoginState.OPERATIONAL: Stage.OPERATIONAL}


def refusal_reply(status: LoginStatus, *, csg: int = Stage.SECURITY) -> LoginReply:
    """A final Login Response refusing the login (also for refusals the connection code decides,
    such as 02/0A session does not exist or 02/0B a non-login PDU during login)."""
    return LoginReply(transit=False, cont=False, csg=csg, nsg=0, version_active=ISCSI_VERSION,
                      status_class=status.status_class, status_detail=status.status_detail,
                      data=b"", finished=False, failed=True)


@dataclass(slots=True)
class _Decision:
    """What to do once the (last piece of the) reply is out."""

    transit: bool
    next_state: LoginState | None


class LoginStateMachine:
    """One connection's login, from the first Login Request to full feature phase or refusal.

    Args:
        directory: the configured targets (lookup by name, list for ACL checks).
        portal_group_tag_for: TPGT per target name; default ``TargetConfig.tpgt``.
        target_mrdsl: the MaxRecvDataSegmentLength we declare.
        policy: our side of every negotiation (default ``NegotiationPolicy()``).
        token_bytes: random source for CHAP (``secrets.token_bytes``; injectable for tests).
        max_text_bytes: the most request text one login collects over its C-bit PDUs; past
            it the login fails with 03/02 OUT OF RESOURCES (docs/security.md).
    """

    def __init__(self, directory: TargetDirectory, *, portal_group_tag_for: Callable[[str], int] | None = None,
                 target_mrdsl: int = 262144, policy: NegotiationPolicy | None = None,
                 token_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 max_text_bytes: int = DEFAULT_LIMITS.max_text_bytes):
        self._directory = directory
        self.max_text_bytes = max_text_bytes
        self._portal_group_tag_for = portal_group_tag_for
        self._policy = replace(policy if policy is not None else NegotiationPolicy(),
                               max_recv_data_segment_length=target_mrdsl)
        self._token_bytes = token_bytes

        self.state = LoginState.INITIAL
        self.session_type: str = SESSION_TYPE_NORMAL
        self.initiator_name: str = ""
        self.initiator_alias: str | None = None
        self.target_name: str | None = None
        self.target: TargetConfig | None = None
        self.isid: bytes = b""
        self.tsih: int = 0
        self.cid: int = 0
        self.parameters = SessionParameters()
        self.failure_reason: str | None = None

        self._started = False                   # the first complete request text was processed
        self._identity_known = False
        self._received: dict[str, str] = {}     # every key of this login (RFC 7143 6.2: no repeats)
        self._incoming = bytearray()            # C=1 request text
        self._incoming_csg: int | None = None
        self._outgoing: list[bytes] = []        # remaining pieces of a C=1 reply
        self._pending: _Decision | None = None
        self._chap_credentials: ChapConfig | None = None
        self._auth = AuthProgress.NOT_STARTED
        self._authenticator: ChapAuthenticator | None = None
        self._declared_operational = False

    # --- entry point -------------------------------------------------------------------------

    def receive(self, request: LoginRequestInfo) -> LoginReply:
        """Process one Login Request and return the Login Response to send.

        Raises:
            LoginUsageError: the login already finished or failed.
        """
        if self.state in (LoginState.FULL_FEATURE, LoginState.FAILED):
            raise LoginUsageError(f"login request received in state {self.state.value}")
        try:
            return self._receive(request)
        except LoginRefused as refusal:
            return self._fail(request, refusal.status, refusal.reason)
        except Exception as exc:  # a bug must not kill the daemon: answer 03/00 and log it
            return self._fail(request, LoginStatus.TARGET_ERROR,
                              f"internal error during login: {type(exc).__name__}: {exc}")

    @property
    def finished(self) -> bool:
        return self.state is LoginState.FULL_FEATURE

    # --- one request ---------------------------------------------------------------------

    def _receive(self, request: LoginRequestInfo) -> LoginReply:
        self._check_identity(request)
        stage_state = REQUEST_STAGES.get((self.state, request.csg))
        if stage_state is None:
            raise LoginRefused(LoginStatus.INVALID_DURING_LOGIN,
                               f"CSG={request.csg} is not valid in state '{self.state.value}'")
        if request.transit and request.cont:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, "login request with both T and C set (RFC 7143 11.12.2)")
        if request.transit and (request.csg, request.nsg) not in STAGE_TRANSITIONS:
            raise LoginRefused(LoginStatus.INVALID_DURING_LOGIN,
                               f"transit from CSG={request.csg} to NSG={request.nsg} is not allowed")
        if self._outgoing:
            return self._next_piece(request)
        if self._incoming_csg is not None and self._incoming_csg != request.csg:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, "CSG changed within a C-bit text sequence")
        if len(self._incoming) + len(request.data) > self.max_text_bytes:
            raise LoginRefused(LoginStatus.OUT_OF_RESOURCES, f"login text exceeds {self.max_text_bytes} bytes")
        if request.cont:
            self._incoming += request.data
            self._incoming_csg = request.csg
            return self._reply(request, b"", transit=False, cont=False)
        text = bytes(self._incoming) + request.data
        self._incoming.clear()
        self._incoming_csg = None

        try:
            pairs = parse_text(text, value_limit=value_limit)
        except TextFormatError as exc:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"malformed login text: {exc}") from None
        pairs = self._drop_repeats(pairs)
        self.state = stage_state
        answers: list[tuple[str, str]] = []
        if not self._started:
            self._start_session(dict(pairs), answers)
        answers += self._negotiate(pairs, _STAGE_OF_STATE[stage_state])
        decision = self._decide(request, stage_state, answers)
        return self._emit(request, encode_text(answers), decision)

    def _check_identity(self, request: LoginRequestInfo) -> None:
        """Version once; ISID, TSIH and CID must stay the same across the login (RFC 7143 6.3)."""
        if not self._identity_known:
            if request.version_min > ISCSI_VERSION or request.version_max < request.version_min:
                self.isid, self.tsih, self.cid = request.isid, request.tsih, request.cid
                raise LoginRefused(LoginStatus.UNSUPPORTED_VERSION,
                                   f"version range {request.version_min}..{request.version_max} excludes {ISCSI_VERSION}")
            if len(request.isid) != ISID_LENGTH:
                raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"ISID of {len(request.isid)} bytes")
            self.isid, self.tsih, self.cid = request.isid, request.tsih, request.cid
            self._identity_known = True
        elif (request.isid, request.tsih, request.cid) != (self.isid, self.tsih, self.cid):
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, "ISID, TSIH or CID changed during the login")

    def _drop_repeats(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        kept = []
        for key, value in pairs:
            previous = self._received.get(key)
            if previous is not None:
                if key in REPEATABLE_DECLARATIONS and previous == value:
                    continue
                raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"key {key} sent twice in one login (RFC 7143 6.2)")
            self._received[key] = value
            kept.append((key, value))
        return kept

    # --- the first request: who is logging in to what --------------------------------------

    def _start_session(self, keys: dict[str, str], answers: list[tuple[str, str]]) -> None:
        self._started = True
        initiator_name = keys.get("InitiatorName")
        if not initiator_name:
            raise LoginRefused(LoginStatus.MISSING_PARAMETER, "InitiatorName missing from the first login request")
        if not _is_iscsi_name(initiator_name):
            raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"InitiatorName {initiator_name!r} is not an iSCSI name")
        self.initiator_name = initiator_name
        self.initiator_alias = keys.get("InitiatorAlias")
        session_type = keys.get("SessionType", SESSION_TYPE_NORMAL)
        if session_type not in (SESSION_TYPE_NORMAL, SESSION_TYPE_DISCOVERY):
            raise LoginRefused(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType={session_type}")
        self.session_type = session_type
        if session_type == SESSION_TYPE_DISCOVERY:
            return  # discovery: no target, no per-target CHAP (discovery authentication is off)
        target_name = keys.get("TargetName")
        if not target_name:
            raise LoginRefused(LoginStatus.MISSING_PARAMETER, "TargetName missing from a normal session login")
        target = self._directory.lookup(target_name)
        if target is None:
            raise LoginRefused(LoginStatus.NOT_FOUND, f"no target named {target_name}")
        acl = matching_acl(target, initiator_name)
        if not target.demo_mode and acl is None:
            raise LoginRefused(LoginStatus.AUTHORIZATION_FAILURE,
                               f"initiator {initiator_name} is not in the ACL of {target.iqn}")
        self.target_name = target.iqn
        self.target = target
        self._chap_credentials = acl.chap if acl is not None and acl.chap is not None else target.chap
        # RFC 7143 13.9: the target reports its portal group tag in the first login response.
        answers.append(("TargetPortalGroupTag", str(self._portal_group_tag(target))))

    def _portal_group_tag(self, target: TargetConfig) -> int:
        if self._portal_group_tag_for is not None:
            return self._portal_group_tag_for(target.iqn)
        return target.tpgt

    # --- keys ------------------------------------------------------------------------------

    def _negotiate(self, pairs: list[tuple[str, str]], stage: Stage) -> list[tuple[str, str]]:
        answers: list[tuple[str, str]] = []
        security_keys: dict[str, str] = {}
        discovery = self.session_type == SESSION_TYPE_DISCOVERY
        for key, value in pairs:
            spec = KEY_TABLE.get(key)
            if spec is None:
                answers.append((key, NOT_UNDERSTOOD))
                continue
            if Sender.INITIATOR not in spec.senders:
                raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"{key} may only be sent by a target")
            if stage not in spec.stages:
                raise LoginRefused(LoginStatus.INITIATOR_ERROR,
                                   f"{key} may not be sent in the {_stage_name(stage)} stage")
            # A declaration changes nothing negotiable, so only negotiated LO keys are refused.
            if spec.leading_only and self.tsih != 0 and spec.result is not ResultFunction.DECLARATIVE:
                raise LoginRefused(LoginStatus.INITIATOR_ERROR,
                                   f"{key} may only be sent on the leading connection (TSIH is {self.tsih})")
            if value in ANSWER_TOKENS:
                continue  # an answer to a key we never offered
            if spec.result is ResultFunction.AUTHENTICATION:
                security_keys[key] = value
            elif spec.result is ResultFunction.DECLARATIVE:
                if key == "MaxRecvDataSegmentLength":
                    # RFC 7143 13.12: declarative, so an invalid value cannot be negotiated away.
                    if answer_offer(spec, value, self._policy, self.parameters, discovery=discovery) is not None:
                        raise LoginRefused(LoginStatus.INITIATOR_ERROR, f"invalid MaxRecvDataSegmentLength={value}")
                elif key == "InitiatorAlias":
                    self.initiator_alias = value
                # InitiatorName, TargetName, SessionType: read from the first request in _start_session
            else:
                answers.append((key, answer_offer(spec, value, self._policy, self.parameters, discovery=discovery)))
        if stage is Stage.SECURITY:
            answers += self._authenticate(security_keys)
        elif not self._declared_operational:
            answers += self._operational_declarations()
        return answers

    def _operational_declarations(self) -> list[tuple[str, str]]:
        """Declarations the initiator did not ask for but needs (first operational response)."""
        self._declared_operational = True
        mrdsl = self._policy.max_recv_data_segment_length
        self.parameters.max_recv_data_segment_length = mrdsl
        declarations = [("MaxRecvDataSegmentLength", str(mrdsl))]
        if self.target is not None and self.target.alias:
            declarations.append(("TargetAlias", self.target.alias))
        return declarations

    # --- security stage ----------------------------------------------------------------------

    @property
    def _chap_required(self) -> bool:
        return self._chap_credentials is not None

    @property
    def _authenticated(self) -> bool:
        if self._chap_required:
            return self._authenticator is not None and self._authenticator.authenticated
        return True

    def _authenticate(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        answers: list[tuple[str, str]] = []
        if "AuthMethod" in keys:
            answers.append(("AuthMethod", self._choose_auth_method(keys["AuthMethod"])))
        chap_keys = {key: value for key, value in keys.items() if key in CHAP_KEYS}
        if chap_keys:
            if self._authenticator is None:
                raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE,
                                   f"{sorted(chap_keys)} sent without AuthMethod=CHAP agreed")
            try:
                answers += self._authenticator.receive(chap_keys)
            except ChapFailure as failure:
                raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE, f"CHAP: {failure}") from None
        return answers

    def _choose_auth_method(self, offered_text: str) -> str:
        try:
            offered = parse_list(offered_text)
        except TextFormatError as exc:
            raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE, f"AuthMethod: {exc}") from None
        acceptable = AUTH_CHAP if self._chap_required else AUTH_NONE
        if acceptable not in offered:
            if self._chap_required:
                reason = f"target requires CHAP, initiator offers AuthMethod={offered_text}"
            else:
                reason = f"no CHAP credentials configured, initiator offers only AuthMethod={offered_text}"
            raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE, reason)
        if acceptable == AUTH_CHAP:
            assert self._chap_credentials is not None
            self._authenticator = ChapAuthenticator(self._chap_credentials, token_bytes=self._token_bytes)
            self._auth = AuthProgress.CHAP_RUNNING
        else:
            self._auth = AuthProgress.NONE_AGREED
        return acceptable

    # --- transit -------------------------------------------------------------------------

    def _decide(self, request: LoginRequestInfo, stage_state: LoginState,
                answers: list[tuple[str, str]]) -> _Decision:
        if stage_state is LoginState.OPERATIONAL and not self._authenticated:
            raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE, "target requires CHAP; security stage skipped")
        if not request.transit:
            return _Decision(False, None)
        if stage_state is LoginState.SECURITY and not self._authenticated:
            if self._auth is AuthProgress.CHAP_RUNNING:
                return _Decision(False, None)   # CHAP still running: stay in the security stage
            raise LoginRefused(LoginStatus.AUTHENTICATION_FAILURE,
                               "initiator leaves the security stage without authenticating; target requires CHAP")
        return _Decision(True, STAGE_TRANSITIONS[(request.csg, request.nsg)])

    def _emit(self, request: LoginRequestInfo, data: bytes, decision: _Decision) -> LoginReply:
        if len(data) > MAX_REPLY_SEGMENT:
            pieces = [data[offset:offset + MAX_REPLY_SEGMENT] for offset in range(0, len(data), MAX_REPLY_SEGMENT)]
            self._outgoing = pieces[1:]
            self._pending = decision
            return self._reply(request, pieces[0], transit=False, cont=True)
        return self._apply(request, data, decision)

    def _next_piece(self, request: LoginRequestInfo) -> LoginReply:
        if request.data or request.cont:
            raise LoginRefused(LoginStatus.INITIATOR_ERROR,
                               "login request carries text while the target's answer is still being sent")
        piece = self._outgoing.pop(0)
        if self._outgoing:
            return self._reply(request, piece, transit=False, cont=True)
        decision, self._pending = self._pending, None
        assert decision is not None
        # The T bit may only answer a request that asked for it.
        return self._apply(request, piece, _Decision(decision.transit and request.transit, decision.next_state))

    def _apply(self, request: LoginRequestInfo, data: bytes, decision: _Decision) -> LoginReply:
        if not decision.transit:
            return self._reply(request, data, transit=False, cont=False)
        next_state = decision.next_state
        assert next_state is not None
        if next_state is LoginState.FULL_FEATURE:
            self._enter_full_feature()
        self.state = next_state
        return self._reply(request, data, transit=True, cont=False, finished=next_state is LoginState.FULL_FEATURE)

    def _enter_full_feature(self) -> None:
        reconcile(self.parameters)
        if self.session_type == SESSION_TYPE_NORMAL and self.target_name is not None:
            if self._directory.lookup(self.target_name) is None:
                raise LoginRefused(LoginStatus.TARGET_REMOVED, f"target {self.target_name} was removed during login")

    # --- replies ---------------------------------------------------------------------------

    def _reply(self, request: LoginRequestInfo, data: bytes, *, transit: bool, cont: bool,
               finished: bool = False) -> LoginReply:
        return LoginReply(transit=transit, cont=cont, csg=request.csg, nsg=request.nsg if transit else 0,
                          version_active=ISCSI_VERSION, status_class=0, status_detail=0, data=data,
                          finished=finished, failed=False)

    def _fail(self, request: LoginRequestInfo, status: LoginStatus, reason: str) -> LoginReply:
        self.state = LoginState.FAILED
        self.failure_reason = f"{status.name} ({status.status_class:02X}/{status.status_detail:02X}): {reason}"
        csg = request.csg if request.csg in (Stage.SECURITY, Stage.OPERATIONAL) else Stage.SECURITY
        return refusal_reply(status, csg=csg)


def _is_iscsi_name(name: str) -> bool:
    return name.lower().startswith(ISCSI_NAME_PREFIXES) and len(name) > len("iqn.")


def _stage_name(stage: Stage) -> str:
    return {Stage.SECURITY: "security", Stage.OPERATIONAL: "operational",
            Stage.FULL_FEATURE: "full feature"}[stage]
