"""The record of a cluster ROD token: what any gateway needs to use a token another made.

Theory of operation
-------------------
A POPULATE TOKEN on a logical unit stored in an RBD image takes an RBD snapshot of the image
and writes one record object into RADOS (docs/rbd.md, "ROD tokens across gateways"). Any
gateway that serves the image can then resolve the token by its COPY MANAGER ROD TOKEN
IDENTIFIER (SPC-4 5.16.6.2, token bytes 8-15): the record names the object, the snapshot and
the ranges the token represents, and holds the SHA-256 digest of all 512 token bytes, so a
token is accepted only if every byte matches the one issued (a forged or altered token
cannot match) while the record itself never holds a usable token.

Lifetime is wall-clock time, the one clock gateways share. A token dies ``inactivity_timeout``
seconds after ``last_used``: POPULATE TOKEN, or the end of the last command that used it
(SPC-4 5.16.6.3, ``released``). A copy that reads the snapshot holds a lease on it
(``leased``: one entry in ``leases`` per copy, renewed while it reads), and the token does not
expire while any lease runs (``expires``), so no gateway's garbage collection removes a
snapshot that a copy on another gateway is reading. A dead token
keeps its record, in a dead ``state``, until ``forget_at``, so its next use answers why it
died rather than TOKEN UNKNOWN, as a local tombstone does (docs/odx.md, "Token semantics").

This module is pure: encoding, decoding and decisions. RADOS calls live in
``odxtarget.storage.rbd_snapshots``; their orchestration in ``odxtarget.copy.cluster_tokens``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass, replace

from odxtarget.copy import errors

#: Format of the record; a record of another format is refused (``RecordError``).
RECORD_FORMAT = 1
#: RADOS namespace, in the image's pool, that holds the records (and nothing else).
RECORD_NAMESPACE = "odxtarget.rod"
#: Names of the records and of the snapshots odxtarget takes, by token identifier.
RECORD_PREFIX = "rod."
SNAPSHOT_PREFIX = "odx-rod-"
#: Largest record a gateway reads (a record lists at most the POPULATE TOKEN range limit).
MAX_RECORD_BYTES = 1 << 20

_SNAPSHOT_NAME = re.compile(re.escape(SNAPSHOT_PREFIX) + r"([0-9a-f]{16})\Z")


class TokenState(str, enum.Enum):
    """Whether the token may be used, and if not, why (the sense its next use answers)."""

    LIVE = "live"
    EXPIRED = "expired"
    DELETED = "deleted"
    CANCELLED = "cancelled"
    REVOKED = "revoked"

    def error(self) -> type[errors.TokenError]:
        return _STATE_ERRORS[self]


_STATE_ERRORS: dict[TokenState, type[errors.TokenError]] = {
    TokenState.EXPIRED: errors.TokenExpired,
    TokenState.DELETED: errors.TokenDeleted,
    TokenState.CANCELLED: errors.TokenCancelled,
    TokenState.REVOKED: errors.TokenRevoked,
}


class RecordError(ValueError):
    """Bytes that are not a token record this version understands."""


def record_name(token_id: int) -> str:
    return f"{RECORD_PREFIX}{token_id:016x}"


def snapshot_name(token_id: int) -> str:
    return f"{SNAPSHOT_PREFIX}{token_id:016x}"


def token_id_of_record(name: str) -> int | None:
    """The token identifier a record object's name carries, or None for any other name."""
    if not name.startswith(RECORD_PREFIX):
        return None
    return _hex_id(name[len(RECORD_PREFIX):])


def token_id_of_snapshot(name: str) -> int | None:
    """The token identifier of a snapshot odxtarget took, or None for anyone else's snapshot."""
    match = _SNAPSHOT_NAME.match(name)
    return int(match.group(1), 16) if match else None


def _hex_id(text: str) -> int | None:
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        return None
    return int(text, 16)


def token_digest(token: bytes) -> str:
    return hashlib.sha256(bytes(token)).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One cluster token; see the module docstring. Times are POSIX seconds."""

    token_id: int
    digest: str                               # SHA-256 of the 512 token bytes, hex
    rod_type: int
    pool: str
    image: str
    snapshot: str
    designator: bytes                         # the creator LU's NAA designator (token bytes 24-)
    ranges: tuple[tuple[int, int], ...]       # (lba, blocks) of the source, in ROD order
    block_size: int
    image_bytes: int                          # the image's size at POPULATE TOKEN
    bytes_represented: int
    owner: str                                # the creating initiator's name
    gateway: str                              # the creating gateway, for the log
    created: float
    inactivity_timeout: float
    last_used: float
    leases: tuple[tuple[str, float], ...] = ()    # (holder, until) of the copies reading it
    state: TokenState = TokenState.LIVE
    forget_at: float = 0.0

    # -- encoding -------------------------------------------------------------------------------

    def encode(self) -> bytes:
        fields = asdict(self)
        fields["designator"] = self.designator.hex()
        fields["ranges"] = [list(pair) for pair in self.ranges]
        fields["leases"] = dict(self.leases)
        fields["state"] = self.state.value
        fields["format"] = RECORD_FORMAT
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "TokenRecord":
        try:
            fields = json.loads(raw)
            if not isinstance(fields, dict) or fields.pop("format", None) != RECORD_FORMAT:
                raise RecordError("not a token record of format 1")
            record = cls(
                token_id=_integer(fields, "token_id"), digest=_text(fields, "digest"),
                rod_type=_integer(fields, "rod_type"), pool=_text(fields, "pool"),
                image=_text(fields, "image"), snapshot=_text(fields, "snapshot"),
                designator=bytes.fromhex(_text(fields, "designator")),
                ranges=tuple((_natural(lba), _natural(blocks)) for lba, blocks in fields["ranges"]),
                block_size=_integer(fields, "block_size"), image_bytes=_integer(fields, "image_bytes"),
                bytes_represented=_integer(fields, "bytes_represented"), owner=_text(fields, "owner"),
                gateway=_text(fields, "gateway"), created=_number(fields, "created"),
                inactivity_timeout=_number(fields, "inactivity_timeout"), last_used=_number(fields, "last_used"),
                leases=tuple(sorted((_holder(holder), _number(fields["leases"], holder))
                                    for holder in fields["leases"])),
                state=TokenState(fields["state"]), forget_at=_number(fields, "forget_at"))
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise RecordError(f"malformed token record: {error}") from None
        if (len(record.digest) != 64 or record.block_size <= 0 or not 0 < record.token_id < 1 << 64
                or min(record.image_bytes, record.bytes_represented) < 0):
            raise RecordError("malformed token record: digest, identifier, block size or sizes")
        return record

    # -- decisions ------------------------------------------------------------------------------

    def matches(self, token: bytes) -> bool:
        """All 512 bytes are the issued token's (compared in constant time)."""
        return hmac.compare_digest(self.digest, token_digest(token))

    @property
    def expires(self) -> float:
        """When the token dies unless used again: its inactivity timeout after its last use,
        or when the last lease runs out, whichever is later."""
        return max((self.last_used + self.inactivity_timeout, *(until for _, until in self.leases)))

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def abandoned(self, now: float, skew: float) -> bool:
        """Live, but past its expiry by more than ``skew`` (the clock difference allowed
        between gateways): any gateway's garbage collection may claim it."""
        return self.state is TokenState.LIVE and now >= self.expires + skew

    def forgettable(self, now: float) -> bool:
        return self.state is not TokenState.LIVE and now >= self.forget_at

    def leased(self, holder: str, now: float, seconds: float) -> "TokenRecord":
        """``holder`` (one copy) reads the snapshot for up to ``seconds`` more. Leases that
        ran out (a copy whose gateway died) are dropped."""
        kept = tuple((other, until) for other, until in self.leases if other != holder and until > now)
        return replace(self, leases=tuple(sorted((*kept, (holder, now + seconds)))))

    def released(self, holder: str, now: float) -> "TokenRecord":
        """The command of ``holder`` completed: its lease goes and the inactivity timer
        restarts (SPC-4 5.16.6.3)."""
        return replace(self, last_used=max(self.last_used, now),
                       leases=tuple((other, until) for other, until in self.leases if other != holder))

    def invalidated(self, state: TokenState, now: float) -> "TokenRecord":
        """Dead for ``state``; the record stays, to say so, for twice the inactivity timeout."""
        return replace(self, state=state, leases=(), forget_at=now + 2 * self.inactivity_timeout)


def _integer(fields: dict, key: str) -> int:
    value = fields[key]
    if type(value) is not int:
        raise TypeError(f"{key} is not an integer")
    return value


def _holder(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a lease holder is not a string")
    return value


def _natural(value: object) -> int:
    if type(value) is not int or value < 0:
        raise TypeError("range values must be non-negative integers")
    return value


def _number(fields: dict, key: str) -> float:
    value = fields[key]
    if type(value) not in (int, float):
        raise TypeError(f"{key} is not a number")
    return float(value)


def _text(fields: dict, key: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value
