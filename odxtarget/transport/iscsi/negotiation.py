"""The RFC 7143 section 13 key table and how the target answers each key.

Theory of operation: every key the protocol defines has one ``KeySpec`` row in ``KEY_TABLE``:
its value type, default, scope (session- or connection-wide), the stages in which an
initiator may send it (security, operational, full feature), whether only the leading
connection may carry it (LO), who may send it, and the result function that turns the
initiator's offer and our preference (``NegotiationPolicy``) into the answer (RFC 7143 6.2:
Minimum, Maximum, AND, OR, first acceptable of a list, or a declaration that needs no
answer). The login state machine (``login.py``) decides *whether* a key may appear; this
module decides *what* we answer and records the outcome in ``SessionParameters``.

A malformed or out-of-range value of a negotiable key is answered ``Reject`` and the key
keeps its default (RFC 7143 6.2.2); keys nobody defined, including X- and X# extension keys,
are answered ``NotUnderstood`` (RFC 7143 6.2).

``negotiate_text_request`` is the full-feature-phase entry point (Text Request, RFC 7143
11.10): only keys usable in full feature phase (MaxRecvDataSegmentLength, the aliases,
SendTargets) are honoured there; any other known key is answered ``Reject``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from odxtarget.transport.iscsi.discovery import (SESSION_TYPE_DISCOVERY, TargetDirectory, send_targets,
                                                 send_targets_value_valid)
from odxtarget.transport.iscsi.text import (
    ANSWER_TOKENS,
    IRRELEVANT,
    ISCSI_NAME_MAX,
    LARGE_VALUE_MAX,
    NOT_UNDERSTOOD,
    REJECT,
    TEXT_VALUE_MAX,
    TextFormatError,
    encode_text,
    format_boolean,
    parse_boolean,
    parse_list,
    parse_numerical,
    parse_text,
)


class Stage(enum.IntEnum):
    """CSG/NSG values of Login PDUs (RFC 7143 11.12.3); 2 is reserved."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class ValueType(enum.Enum):
    BOOLEAN = "boolean"
    NUMERICAL = "numerical"
    LIST = "list-of-values"
    TEXT = "text"
    ISCSI_NAME = "iSCSI-name"
    LARGE_BINARY = "large-binary"


class ResultFunction(enum.Enum):
    MINIMUM = "Minimum"
    MAXIMUM = "Maximum"
    AND = "AND"
    OR = "OR"
    FIRST_ACCEPTABLE = "first acceptable in list"
    DECLARATIVE = "declarative"
    AUTHENTICATION = "authentication exchange"   # AuthMethod and CHAP_*: the login machine answers
    SEND_TARGETS = "SendTargets"                 # answered by discovery.py
    OBSOLETE = "obsolete, fixed answer"          # RFC 7143 13.25 marker keys


class Scope(enum.Enum):
    SESSION = "SW"
    CONNECTION = "CO"


class Sender(enum.Flag):
    INITIATOR = enum.auto()
    TARGET = enum.auto()
    BOTH = INITIATOR | TARGET


SECURITY_ONLY = frozenset({Stage.SECURITY})
OPERATIONAL_ONLY = frozenset({Stage.OPERATIONAL})
LOGIN_DECLARATION = frozenset({Stage.SECURITY, Stage.OPERATIONAL})
ANY_STAGE = frozenset({Stage.SECURITY, Stage.OPERATIONAL, Stage.FULL_FEATURE})
OPERATIONAL_AND_FULL_FEATURE = frozenset({Stage.OPERATIONAL, Stage.FULL_FEATURE})
FULL_FEATURE_ONLY = frozenset({Stage.FULL_FEATURE})

# RFC 7143 13.12-13.14: 512 to 2**24 - 1 bytes.
DATA_LENGTH_MIN = 512
DATA_LENGTH_MAX = (1 << 24) - 1
TIME2_MAX = 3600
COUNT_MAX = 65535

DIGEST_CRC32C = "CRC32C"
DIGEST_NONE = "None"
AUTH_CHAP = "CHAP"
AUTH_NONE = "None"
TASK_REPORTING_RFC3720 = "RFC3720"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One RFC 7143 section 13 key.

    ``stages`` lists where an *initiator* may send the key; ``preference`` names the
    ``NegotiationPolicy`` field holding our side of the negotiation and ``attribute`` the
    ``SessionParameters`` field that receives the outcome.
    """

    name: str
    value_type: ValueType
    result: ResultFunction
    default: str | None
    scope: Scope
    stages: frozenset[Stage]
    senders: Sender
    leading_only: bool = False
    irrelevant_in_discovery: bool = False
    minimum: int = 0
    maximum: int = 0
    preference: str | None = None
    attribute: str | None = None
    fixed_answer: str | None = None
    max_length: int = TEXT_VALUE_MAX
    rfc: str = ""


def _spec(name: str, value_type: ValueType, result: ResultFunction, default: str | None, scope: Scope,
          stages: frozenset[Stage], senders: Sender, **kw: Any) -> KeySpec:
    return KeySpec(name, value_type, result, default, scope, stages, senders, **kw)


_N, _B, _L, _T = ValueType.NUMERICAL, ValueType.BOOLEAN, ValueType.LIST, ValueType.TEXT
_SW, _CO = Scope.SESSION, Scope.CONNECTION
_I, _TG, _IT = Sender.INITIATOR, Sender.TARGET, Sender.BOTH
_R = ResultFunction

KEY_TABLE: dict[str, KeySpec] = {spec.name: spec for spec in (
    # --- security (RFC 7143 12) ---------------------------------------------------------
    _spec("AuthMethod", _L, _R.AUTHENTICATION, AUTH_NONE, _CO, SECURITY_ONLY, _IT, rfc="12.1"),
    _spec("CHAP_A", _L, _R.AUTHENTICATION, None, _CO, SECURITY_ONLY, _IT, rfc="12.1.3"),
    _spec("CHAP_I", _N, _R.AUTHENTICATION, None, _CO, SECURITY_ONLY, _IT, rfc="12.1.3"),
    _spec("CHAP_C", ValueType.LARGE_BINARY, _R.AUTHENTICATION, None, _CO, SECURITY_ONLY, _IT,
          max_length=LARGE_VALUE_MAX, rfc="12.1.3"),
    _spec("CHAP_N", _T, _R.AUTHENTICATION, None, _CO, SECURITY_ONLY, _IT, rfc="12.1.3"),
    _spec("CHAP_R", ValueType.LARGE_BINARY, _R.AUTHENTICATION, None, _CO, SECURITY_ONLY, _IT,
          max_length=LARGE_VALUE_MAX, rfc="12.1.3"),
    # --- declarations of the login (RFC 7143 13.4-13.9, 13.21) ---------------------------
    _spec("SendTargets", _T, _R.SEND_TARGETS, None, _SW, FULL_FEATURE_ONLY, _I, rfc="13.3"),
    _spec("TargetName", ValueType.ISCSI_NAME, _R.DECLARATIVE, None, _SW, LOGIN_DECLARATION, _IT,
          max_length=ISCSI_NAME_MAX, rfc="13.4"),
    _spec("InitiatorName", ValueType.ISCSI_NAME, _R.DECLARATIVE, None, _SW, LOGIN_DECLARATION, _I,
          max_length=ISCSI_NAME_MAX, rfc="13.5"),
    _spec("TargetAlias", _T, _R.DECLARATIVE, None, _SW, ANY_STAGE, _TG, rfc="13.6"),
    _spec("InitiatorAlias", _T, _R.DECLARATIVE, None, _SW, ANY_STAGE, _I, rfc="13.7"),
    _spec("TargetAddress", _T, _R.DECLARATIVE, None, _SW, ANY_STAGE, _TG, rfc="13.8"),
    _spec("TargetPortalGroupTag", _N, _R.DECLARATIVE, None, _SW, LOGIN_DECLARATION, _TG,
          maximum=COUNT_MAX, rfc="13.9"),
    _spec("SessionType", _T, _R.DECLARATIVE, "Normal", _SW, LOGIN_DECLARATION, _I, leading_only=True,
          rfc="13.21"),
    # --- operational (RFC 7143 13.1-13.24) -------------------------------------------------
    _spec("HeaderDigest", _L, _R.FIRST_ACCEPTABLE, DIGEST_NONE, _CO, OPERATIONAL_ONLY, _IT,
          preference="digests", attribute="header_digest", rfc="13.1"),
    _spec("DataDigest", _L, _R.FIRST_ACCEPTABLE, DIGEST_NONE, _CO, OPERATIONAL_ONLY, _IT,
          preference="digests", attribute="data_digest", rfc="13.1"),
    _spec("MaxConnections", _N, _R.MINIMUM, "1", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, minimum=1, maximum=COUNT_MAX, preference="max_connections",
          attribute="max_connections", rfc="13.2"),
    _spec("InitialR2T", _B, _R.OR, "Yes", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, preference="initial_r2t", attribute="initial_r2t", rfc="13.10"),
    _spec("ImmediateData", _B, _R.AND, "Yes", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, preference="immediate_data", attribute="immediate_data", rfc="13.11"),
    _spec("MaxRecvDataSegmentLength", _N, _R.DECLARATIVE, "8192", _CO, OPERATIONAL_AND_FULL_FEATURE, _IT,
          minimum=DATA_LENGTH_MIN, maximum=DATA_LENGTH_MAX, attribute="max_xmit_data_segment_length",
          rfc="13.12"),
    _spec("MaxBurstLength", _N, _R.MINIMUM, "262144", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, minimum=DATA_LENGTH_MIN, maximum=DATA_LENGTH_MAX,
          preference="max_burst_length", attribute="max_burst_length", rfc="13.13"),
    _spec("FirstBurstLength", _N, _R.MINIMUM, "65536", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, minimum=DATA_LENGTH_MIN, maximum=DATA_LENGTH_MAX,
          preference="first_burst_length", attribute="first_burst_length", rfc="13.14"),
    _spec("DefaultTime2Wait", _N, _R.MAXIMUM, "2", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          maximum=TIME2_MAX, preference="default_time2wait", attribute="default_time2wait", rfc="13.15"),
    _spec("DefaultTime2Retain", _N, _R.MINIMUM, "20", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          maximum=TIME2_MAX, preference="default_time2retain", attribute="default_time2retain", rfc="13.16"),
    _spec("MaxOutstandingR2T", _N, _R.MINIMUM, "1", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, minimum=1, maximum=COUNT_MAX, preference="max_outstanding_r2t",
          attribute="max_outstanding_r2t", rfc="13.17"),
    _spec("DataPDUInOrder", _B, _R.OR, "Yes", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, preference="data_pdu_in_order", attribute="data_pdu_in_order",
          rfc="13.18"),
    _spec("DataSequenceInOrder", _B, _R.OR, "Yes", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, preference="data_sequence_in_order",
          attribute="data_sequence_in_order", rfc="13.19"),
    _spec("ErrorRecoveryLevel", _N, _R.MINIMUM, "0", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          maximum=2, preference="error_recovery_level", attribute="error_recovery_level", rfc="13.20"),
    _spec("TaskReporting", _L, _R.FIRST_ACCEPTABLE, TASK_REPORTING_RFC3720, _SW, OPERATIONAL_ONLY, _IT,
          leading_only=True, irrelevant_in_discovery=True, preference="task_reporting", rfc="13.23"),
    # RFC 7144 (updates 7143 13.24): level 1 is RFC 7143, level 2 adds RFC 7144 features we lack.
    _spec("iSCSIProtocolLevel", _N, _R.MINIMUM, "1", _SW, OPERATIONAL_ONLY, _IT, leading_only=True,
          irrelevant_in_discovery=True, maximum=31, preference="iscsi_protocol_level", rfc="7144 2.1"),
    # --- obsoleted by RFC 7143 13.25: markers are gone; answer as the RFC prescribes ---------
    _spec("IFMarker", _B, _R.OBSOLETE, "No", _CO, OPERATIONAL_ONLY, _IT, fixed_answer="No", rfc="13.25"),
    _spec("OFMarker", _B, _R.OBSOLETE, "No", _CO, OPERATIONAL_ONLY, _IT, fixed_answer="No", rfc="13.25"),
    _spec("IFMarkInt", _T, _R.OBSOLETE, None, _CO, OPERATIONAL_ONLY, _IT, fixed_answer=REJECT, rfc="13.25"),
    _spec("OFMarkInt", _T, _R.OBSOLETE, None, _CO, OPERATIONAL_ONLY, _IT, fixed_answer=REJECT, rfc="13.25"),
)}


def value_limit(key: str) -> int:
    """Maximum value length in bytes for ``text.parse_text``: per key type, generous for unknown keys."""
    spec = KEY_TABLE.get(key)
    return LARGE_VALUE_MAX if spec is None else spec.max_length


@dataclass(slots=True)
class NegotiationPolicy:
    """The target's side of every negotiation (what we would choose if asked alone)."""

    max_recv_data_segment_length: int = 262144   # declared to the initiator
    max_burst_length: int = DATA_LENGTH_MAX      # "up to 16 MiB"
    first_burst_length: int = 262144             # "up to 256 KiB"
    max_outstanding_r2t: int = 8
    max_connections: int = 1
    error_recovery_level: int = 0
    default_time2wait: int = 2
    default_time2retain: int = 20
    # OR keys: "No" leaves the initiator's choice standing (we handle both orders and unsolicited data).
    initial_r2t: bool = False
    data_pdu_in_order: bool = False
    data_sequence_in_order: bool = False
    immediate_data: bool = True                  # AND key: "Yes" leaves the initiator's choice standing
    digests: tuple[str, ...] = (DIGEST_CRC32C, DIGEST_NONE)
    task_reporting: tuple[str, ...] = (TASK_REPORTING_RFC3720,)
    iscsi_protocol_level: int = 1


@dataclass(slots=True)
class SessionParameters:
    """Outcome of the negotiation that the full-feature code obeys (defaults: RFC 7143 13)."""

    header_digest: bool = False          # CRC32C negotiated
    data_digest: bool = False
    max_recv_data_segment_length: int = 8192   # what WE accept per PDU (we declare it)
    max_xmit_data_segment_length: int = 8192   # what the INITIATOR accepts (its declaration): our send limit
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    immediate_data: bool = True
    initial_r2t: bool = True
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 2
    default_time2retain: int = 20
    error_recovery_level: int = 0
    max_connections: int = 1
    ifmarker: bool = False  # always No
    ofmarker: bool = False


def answer_offer(spec: KeySpec, offered: str, policy: NegotiationPolicy, params: SessionParameters,
                 *, discovery: bool) -> str | None:
    """Our answer to one offered operational key, recording the outcome in ``params``.

    Returns None for a declaration (no answer is due). AUTHENTICATION and SEND_TARGETS keys
    are not handled here.
    """
    if discovery and spec.irrelevant_in_discovery:
        return IRRELEVANT
    result = spec.result
    if result is ResultFunction.OBSOLETE:
        return spec.fixed_answer
    try:
        if result is ResultFunction.DECLARATIVE:
            _record_declaration(spec, offered, params)
            return None
        if spec.value_type is ValueType.BOOLEAN:
            theirs = parse_boolean(offered)
            ours = getattr(policy, spec.preference)
            outcome = (theirs or ours) if result is ResultFunction.OR else (theirs and ours)
            _store(spec, params, outcome)
            return format_boolean(outcome)
        if spec.value_type is ValueType.NUMERICAL:
            theirs = parse_numerical(offered, spec.minimum, spec.maximum)
            ours = getattr(policy, spec.preference)
            outcome = min(theirs, ours) if result is ResultFunction.MINIMUM else max(theirs, ours)
            _store(spec, params, outcome)
            return str(outcome)
        if result is ResultFunction.FIRST_ACCEPTABLE:
            acceptable = getattr(policy, spec.preference)
            chosen = next((value for value in parse_list(offered) if value in acceptable), None)
            if chosen is None:
                return REJECT
            _store(spec, params, chosen)
            return chosen
    except TextFormatError:
        return REJECT
    raise AssertionError(f"no negotiation rule for {spec.name} ({result})")


def reconcile(params: SessionParameters) -> None:
    """Cross-key rules applied when a negotiation round ends.

    RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
    """
    if params.first_burst_length > params.max_burst_length:
        params.first_burst_length = params.max_burst_length


def _record_declaration(spec: KeySpec, offered: str, params: SessionParameters) -> None:
    if spec.value_type is ValueType.NUMERICAL:
        number = parse_numerical(offered, spec.minimum, spec.maximum)
        _store(spec, params, number)


def _store(spec: KeySpec, params: SessionParameters, outcome: object) -> None:
    if spec.attribute is None:
        return
    if spec.value_type is ValueType.LIST and spec.preference == "digests":
        outcome = outcome == DIGEST_CRC32C
    setattr(params, spec.attribute, outcome)


# --- full feature phase: Text Request negotiation ----------------------------------------


@dataclass(slots=True)
class TextSessionInfo:
    """What a full-feature Text Request answer depends on besides the parameters."""

    session_type: str                     # "Normal" or "Discovery"
    initiator_name: str
    target_name: str | None               # None in a discovery session
    local_address: str | None = None      # the IP the connection arrived on (for wildcard portals)
    portal_group_tag_for: Callable[[str], int] | None = None


def negotiate_text_request(params: SessionParameters, data: bytes, directory: TargetDirectory,
                           session_info: TextSessionInfo) -> bytes:
    """Answer the text of a full-feature Text Request (all its C-bit PDUs concatenated).

    Honours SendTargets (via discovery.py), a new MaxRecvDataSegmentLength declaration (updates
    ``params.max_xmit_data_segment_length``) and InitiatorAlias; answers ``Reject`` to every other
    known key (not negotiable in full feature phase, RFC 7143 13) and ``NotUnderstood`` to unknown
    keys, also those outside the key-name grammar (keys are case-sensitive). A value that is
    malformed, out of range or too long for its key is answered ``Reject`` (RFC 7143 6.2), and
    so is a SendTargets value that is neither ``All`` nor an iSCSI name (RFC 7143 13.3).
    Returns the answer text (possibly empty); the caller splits it over Text Response PDUs.

    Raises:
        TextFormatError: malformed text; the caller answers with a Reject PDU (reason 04h,
            protocol error).
    """
    answers: list[tuple[str, str]] = []
    for key, value in parse_text(data):
        if value in ANSWER_TOKENS:
            continue  # an answer to nothing we offered: nothing to negotiate
        spec = KEY_TABLE.get(key)
        if spec is None:
            answers.append((key, NOT_UNDERSTOOD))
        elif (Stage.FULL_FEATURE not in spec.stages or Sender.INITIATOR not in spec.senders
              or len(value.encode("utf-8")) > spec.max_length):
            answers.append((key, REJECT))
        elif spec.result is ResultFunction.SEND_TARGETS:
            if not send_targets_value_valid(value):
                answers.append((key, REJECT))
                continue
            answers.extend(send_targets(
                value, initiator_name=session_info.initiator_name, session_type=session_info.session_type,
                session_target=None if session_info.session_type == SESSION_TYPE_DISCOVERY else session_info.target_name,
                directory=directory, local_address=session_info.local_address,
                portal_group_tag_for=session_info.portal_group_tag_for))
        else:
            try:
                _record_declaration(spec, value, params)
            except TextFormatError:
                answers.append((key, REJECT))
    return encode_text(answers)
