"""CHAP authentication, target side (RFC 1994; RFC 7143 12.1.3).

Theory of operation: once AuthMethod=CHAP is agreed, the exchange is three legs:

    initiator: CHAP_A=<A1,A2,...>
    target:    CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
    initiator: CHAP_N=<N> CHAP_R=<R>                 (one-way)
           or: CHAP_N=<N> CHAP_R=<R> CHAP_I=<I> CHAP_C=<C>   (mutual)
    target:    CHAP_N=<N> CHAP_R=<R>                 (mutual only)

R = MD5(I as one octet || secret || C). ``ChapAuthenticator`` is a small table-driven
machine over the three legs; it raises ``ChapFailure`` (login status 02/01) for every
refusal, and never looks at the clock or the network. Randomness comes from an injectable
``token_bytes`` (``secrets.token_bytes`` by default) so tests can fix the challenge.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping

from odxtarget.config import ChapConfig
from odxtarget.transport.iscsi.text import (
    LARGE_BINARY_MAX_BYTES,
    TextFormatError,
    format_hex,
    parse_binary,
    parse_list,
    parse_numerical,
)

# RFC 7143 12.1.3 / RFC 1994: algorithm 5 is CHAP with MD5, the only one we offer.
CHAP_ALGORITHM_MD5 = 5
MD5_DIGEST_LENGTH = 16
# Our challenge: twice the MD5 output. libiscsi 1.19.0 accepts up to 1024 bytes (2048 hex digits).
CHALLENGE_LENGTH = 32
CHAP_IDENTIFIER_MAX = 255

CHAP_KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})


class ChapFailure(Exception):
    """Authentication failed; the login ends with status 02/01 and this text as the reason."""


class ChapState(enum.Enum):
    AWAIT_ALGORITHM = "await CHAP_A"
    AWAIT_RESPONSE = "await CHAP_N/CHAP_R"
    AUTHENTICATED = "authenticated"


def chap_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 4.1: MD5 over the identifier octet, the secret and the challenge."""
    return hashlib.md5(bytes((identifier,)) + secret + challenge).digest()


class ChapAuthenticator:
    """The target half of one CHAP exchange for one login.

    Args:
        credentials: what the initiator must prove (userid/password) and, for mutual CHAP,
            how the target proves itself (mutual_userid/mutual_password).
        token_bytes: source of random bytes (identifier and challenge).
    """

    def __init__(self, credentials: ChapConfig, *,
                 token_bytes: Callable[[int], bytes] = secrets.token_bytes):
        self._credentials = credentials
        self._token_bytes = token_bytes
        self.state = ChapState.AWAIT_ALGORITHM
        self.mutual = False
        self._identifier: int | None = None
        self._challenge: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.state is ChapState.AUTHENTICATED

    def receive(self, keys: Mapping[str, str]) -> list[tuple[str, str]]:
        """Consume the CHAP_* keys of one login request; return the CHAP_* keys to answer.

        Raises:
            ChapFailure: wrong leg, malformed value, no common algorithm, bad response,
                reflected challenge, or mutual CHAP asked without target credentials.
        """
        present = CHAP_KEYS.intersection(keys)
        if not present:
            return []
        handler = _LEG_HANDLERS.get(self.state)
        if handler is None:
            raise ChapFailure(f"CHAP keys {sorted(present)} after authentication completed")
        try:
            return handler(self, keys, present)
        except TextFormatError as exc:
            raise ChapFailure(f"malformed CHAP value: {exc}") from None

    # --- legs ------------------------------------------------------------------------------

    def _select_algorithm(self, keys: Mapping[str, str], present: frozenset[str] | set[str]):
        if present != {"CHAP_A"}:
            raise ChapFailure(f"expected only CHAP_A, got {sorted(present)}")
        offered = parse_list(keys["CHAP_A"])
        if str(CHAP_ALGORITHM_MD5) not in offered:
            raise ChapFailure(f"no common CHAP algorithm in CHAP_A={keys['CHAP_A']} (we offer MD5=5 only)")
        self._identifier = self._token_bytes(1)[0]
        self._challenge = self._token_bytes(CHALLENGE_LENGTH)
        self.state = ChapState.AWAIT_RESPONSE
        return [("CHAP_A", str(CHAP_ALGORITHM_MD5)),
                ("CHAP_I", str(self._identifier)),
                ("CHAP_C", format_hex(self._challenge))]

    def _check_response(self, keys: Mapping[str, str], present: frozenset[str] | set[str]):
        if "CHAP_A" in present:
            raise ChapFailure("CHAP_A sent twice")
        if not {"CHAP_N", "CHAP_R"} <= present:
            raise ChapFailure(f"CHAP_N and CHAP_R must come together, got {sorted(present)}")
        mutual_keys = present & {"CHAP_I", "CHAP_C"}
        if mutual_keys and mutual_keys != {"CHAP_I", "CHAP_C"}:
            raise ChapFailure("mutual CHAP needs both CHAP_I and CHAP_C")
        assert self._identifier is not None and self._challenge is not None
        credentials = self._credentials
        name_ok = hmac.compare_digest(keys["CHAP_N"].encode("utf-8"), credentials.userid.encode("utf-8"))
        response = parse_binary(keys["CHAP_R"], LARGE_BINARY_MAX_BYTES)
        expected = chap_response(self._identifier, credentials.password.encode("utf-8"), self._challenge)
        response_ok = hmac.compare_digest(response, expected)
        if not (name_ok and response_ok):
            raise ChapFailure("CHAP_N/CHAP_R do not match the configured credentials"
                              + ("" if name_ok else f" (unknown CHAP_N {keys['CHAP_N']!r})"))
        answers: list[tuple[str, str]] = []
        if mutual_keys:
            answers = self._answer_mutual(keys["CHAP_I"], keys["CHAP_C"])
        self.state = ChapState.AUTHENTICATED
        return answers

    def _answer_mutual(self, identifier_text: str, challenge_text: str) -> list[tuple[str, str]]:
        credentials = self._credentials
        if not credentials.mutual_userid or credentials.mutual_password is None:
            raise ChapFailure("initiator asked for mutual CHAP but no mutual credentials are configured")
        # RFC 7143 12.1.3: a secret used to authenticate initiators MUST NOT also authenticate
        # the target; answering with it would turn us into an oracle for the initiator secret.
        if hmac.compare_digest(credentials.mutual_password.encode("utf-8"), credentials.password.encode("utf-8")):
            raise ChapFailure("mutual CHAP secret equals the initiator secret (RFC 7143 12.1.3)")
        identifier = parse_numerical(identifier_text, 0, CHAP_IDENTIFIER_MAX)
        challenge = parse_binary(challenge_text, LARGE_BINARY_MAX_BYTES)
        assert self._challenge is not None
        # Reflection attack: the initiator hands our own challenge back to have us answer it.
        if hmac.compare_digest(challenge, self._challenge):
            raise ChapFailure("initiator reflected the target's CHAP challenge")
        response = chap_response(identifier, credentials.mutual_password.encode("utf-8"), challenge)
        return [("CHAP_N", credentials.mutual_userid), ("CHAP_R", format_hex(response))]


# The exchange as a table: which leg handles a request in each state (h11 style). A state
# missing here (AUTHENTICATED) accepts no more CHAP keys.
_LEG_HANDLERS: dict[ChapState, Callable[..., list[tuple[str, str]]]] = {
    ChapState.AWAIT_ALGORITHM: ChapAuthenticator._select_algorithm,
    ChapState.AWAIT_RESPONSE: ChapAuthenticator._check_response,
}
