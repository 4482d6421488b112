"""One daemon-wide store of ROD tokens, shared by every logical unit (so copies cross LUNs).

The tokens of logical units stored in RBD images live in the cluster instead
(``odxtarget.copy.cluster_tokens``), so that every gateway can use them.

Theory of operation
-------------------
Tokens are indexed by their 8-byte COPY MANAGER ROD TOKEN IDENTIFIER; a presented token is
accepted only if all 512 bytes equal the issued ones (``hmac.compare_digest``: constant
time). Each live token is a ``TokenEntry`` that says where its data is:

* a **snapshot** token (``rod_file`` set) owns a ROD file in ``<state_dir>/.rod/`` holding
  reflinked copies of the source ranges; writes to the source cannot change it;
* a **live** token refers to its creator LU's ranges; any write, unmap, write same or
  compare-and-write that touches them cancels it (``source_written``, which the copy manager
  calls from the logical unit's change listeners, SPC-4 5.16.6.3), and so does a change of
  the LU's capacity (checked when the token is used).

Quotas: besides the daemon-wide caps (``max_tokens``, ``max_rod_bytes``), each initiator (by
name, ``ItNexus.initiator_name``) may hold at most ``max_tokens_per_initiator`` tokens and
``max_rod_bytes_per_initiator`` bytes of snapshot tokens, so one host cannot take every token
or all ROD space from the others. An entry counts against its owner until it is dropped.

Visibility: ``resolve`` takes the caller's ``visible(creator)`` test (can the presenting I_T
nexus read the token's source LU?) and answers TOKEN UNKNOWN for a token it fails, before
telling anything else about it: a token one may not use is indistinguishable from one that
does not exist (docs/odx.md, "Access control").

Lifetime (SPC-4 5.16.6.3): the inactivity timer restarts whenever a command that uses the
token completes; an entry in use by a running copy never expires. An invalidated token
leaves a tombstone (kept twice its inactivity timeout, bounded in number) so its next use
says EXPIRED/CANCELLED/DELETED/REVOKED rather than UNKNOWN. ROD files are removed when their
token dies, or at the end of the copy that was still using it: the store hands them to its
``discard`` callable, which removes them off the core's thread.

Time is injected (``now`` arguments); nothing here sleeps, reads a clock or touches a file.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from odxtarget.copy import errors
from odxtarget.copy.constants import ROD_TOKEN_LENGTH, RodType
from odxtarget.copy.token import creator_designator_of, rod_type_of, token_id_of, token_length_of

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

#: Tombstones kept per live-token capacity slot.
TOMBSTONES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class RodSegment:
    """Bytes ``[rod_offset, rod_offset+length)`` of the ROD stored at ``file_offset``."""

    rod_offset: int
    length: int
    file_offset: int


@dataclass(slots=True)
class RodFile:
    path: str
    segments: tuple[RodSegment, ...]
    size: int


@dataclass(eq=False, slots=True)
class TokenEntry:
    token: bytes
    token_id: int
    rod_type: int
    creator: "LogicalUnit"                # whose data the token represents
    ranges: tuple[tuple[int, int], ...]   # (lba, blocks) on the creator, in ROD order
    block_size: int
    creator_block_count: int
    bytes_represented: int
    inactivity_timeout: float
    last_active: float
    rod_file: RodFile | None = None
    in_use: int = 0
    invalid: type[errors.TokenError] | None = None
    owner: str = ""                        # the initiator name whose quota the token counts against
    created: float = 0.0                   # monotonic seconds of POPULATE TOKEN, for the admin shell

    @property
    def snapshot(self) -> bool:
        return self.rod_file is not None

    def byte_spans(self) -> list[tuple[int, int]]:
        return [(lba * self.block_size, (lba + blocks) * self.block_size) for lba, blocks in self.ranges]


@dataclass(slots=True)
class _Tombstone:
    token: bytes
    reason: type[errors.TokenError]
    forget_at: float
    creator: object


def _everyone(creator: object) -> bool:
    return True


def _keep(rod_file: RodFile) -> None:
    """The default ``discard``: a store without ROD files has nothing to remove."""


class TokenStore:
    """See the module docstring. ``discard(rod_file)`` is called once for the ROD file of
    every snapshot token that is dropped, to remove it."""

    def __init__(self, max_tokens: int, max_rod_bytes: int,
                 discard: Callable[[RodFile], None] = _keep, *,
                 max_tokens_per_initiator: int | None = None, max_rod_bytes_per_initiator: int | None = None):
        self.max_tokens = max_tokens
        self.max_rod_bytes = max_rod_bytes
        self.max_tokens_per_initiator = max_tokens if max_tokens_per_initiator is None else max_tokens_per_initiator
        self.max_rod_bytes_per_initiator = (max_rod_bytes if max_rod_bytes_per_initiator is None
                                            else max_rod_bytes_per_initiator)
        self._tokens_of: Counter[str] = Counter()
        self._rod_bytes_of: Counter[str] = Counter()
        self._entries: dict[int, TokenEntry] = {}
        self._tombstones: OrderedDict[int, _Tombstone] = OrderedDict()
        self._live_by_lu: dict[int, list[TokenEntry]] = {}
        self._designators: set[bytes] = set()
        self._next_id = secrets.randbits(62) | 1
        self._discard = discard
        self.rod_bytes = 0

    # -- creation ---------------------------------------------------------------------------

    def next_token_id(self) -> int:
        token_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFF_FFFF_FFFF_FFFF or 1
        return token_id

    def register_designator(self, designator: bytes) -> None:
        """An LU of this copy manager: tokens naming any other creator are remote."""
        self._designators.add(bytes(designator))

    def tokens_of(self, owner: str) -> int:
        """Entries (live, or dead but still in use) counted against ``owner``."""
        return self._tokens_of[owner]

    def rod_bytes_of(self, owner: str) -> int:
        return self._rod_bytes_of[owner]

    def check_room(self, owner: str, rod_bytes: int = 0) -> None:
        """Raise INSUFFICIENT RESOURCES TO CREATE ROD unless one more token of ``owner``, with
        ``rod_bytes`` of snapshot data, fits the daemon-wide caps and ``owner``'s quotas."""
        if len(self._entries) >= self.max_tokens:
            raise errors.InsufficientResourcesToCreateRod("too many ROD tokens")
        if self._tokens_of[owner] >= self.max_tokens_per_initiator:
            raise errors.InsufficientResourcesToCreateRod(f"initiator {owner!r} holds its quota of ROD tokens")
        if rod_bytes and self.rod_bytes + rod_bytes > self.max_rod_bytes:
            raise errors.InsufficientResourcesToCreateRod("ROD space cap reached")
        if rod_bytes and self._rod_bytes_of[owner] + rod_bytes > self.max_rod_bytes_per_initiator:
            raise errors.InsufficientResourcesToCreateRod(f"initiator {owner!r} holds its quota of ROD space")

    def add(self, entry: TokenEntry) -> None:
        self.check_room(entry.owner, entry.bytes_represented if entry.rod_file is not None else 0)
        self._entries[entry.token_id] = entry
        self._tokens_of[entry.owner] += 1
        if entry.rod_file is not None:
            self.rod_bytes += entry.bytes_represented
            self._rod_bytes_of[entry.owner] += entry.bytes_represented
        else:
            self._live_by_lu.setdefault(id(entry.creator), []).append(entry)

    # -- lookup -----------------------------------------------------------------------------

    def resolve(self, token: bytes, now: float,
                visible: Callable[[object], bool] = _everyone) -> TokenEntry:
        """The live entry for a presented token, or the token error that applies.

        ``visible(creator)`` says whether the presenter may read the token's source LU; a
        token whose creator it is not is TOKEN UNKNOWN, whatever else is true of it.
        """
        length = token_length_of(token)
        if length != ROD_TOKEN_LENGTH:
            raise errors.InvalidTokenLength(length)
        rod_type = rod_type_of(token)
        if rod_type not in (RodType.PIT_DEFAULT, RodType.PIT_CHANGE_VULNERABLE):
            raise errors.UnsupportedTokenType(rod_type)
        token_id = token_id_of(token)
        entry = self._entries.get(token_id)
        if entry is not None:
            if not visible(entry.creator):
                raise errors.TokenUnknown()
            if not hmac.compare_digest(entry.token, bytes(token)):
                raise errors.TokenCorrupt("token does not match the one issued under its identifier")
            if entry.invalid is None and self._expired(entry, now):
                self.invalidate(entry, errors.TokenExpired, now)
            if entry.invalid is not None:
                raise entry.invalid()
            if entry.rod_file is None and entry.creator.block_count != entry.creator_block_count:
                self.invalidate(entry, errors.TokenCancelled, now)
                raise errors.TokenCancelled()
            return entry
        tombstone = self._tombstones.get(token_id)
        if tombstone is not None and hmac.compare_digest(tombstone.token, bytes(token)):
            if not visible(tombstone.creator):
                raise errors.TokenUnknown()
            raise tombstone.reason()
        if creator_designator_of(token) not in self._designators:
            raise errors.RemoteTokenUsageNotSupported()
        raise errors.TokenUnknown()

    def _expired(self, entry: TokenEntry, now: float) -> bool:
        return entry.in_use == 0 and now >= entry.last_active + entry.inactivity_timeout

    def acquire(self, entry: TokenEntry) -> None:
        entry.in_use += 1

    def release(self, entry: TokenEntry, now: float, delete: bool = False) -> None:
        """A command that used the token completed: restart its inactivity timer (SPC-4
        5.16.6.3), delete it if DEL_TKN asked for that, and drop a dead token's ROD file."""
        entry.in_use -= 1
        entry.last_active = now
        if delete and entry.invalid is None:
            self.invalidate(entry, errors.TokenDeleted, now)
        elif entry.invalid is not None and entry.in_use == 0:
            self._drop(entry)

    def touch(self, entry: TokenEntry, now: float) -> None:
        entry.last_active = now

    # -- invalidation -----------------------------------------------------------------------

    def invalidate(self, entry: TokenEntry, reason: type[errors.TokenError], now: float) -> None:
        if entry.invalid is None:
            entry.invalid = reason
            log.debug("token %016x invalid: %s", entry.token_id, reason.__name__)
            self._forget_live(entry)
            forget_at = now + 2 * entry.inactivity_timeout
            self._tombstones[entry.token_id] = _Tombstone(entry.token, reason, forget_at, entry.creator)
            self._tombstones.move_to_end(entry.token_id)
            while len(self._tombstones) > TOMBSTONES_PER_TOKEN * self.max_tokens:
                self._tombstones.popitem(last=False)
        if entry.in_use == 0:
            self._drop(entry)

    def _forget_live(self, entry: TokenEntry) -> None:
        if entry.rod_file is not None:
            return
        live = self._live_by_lu.get(id(entry.creator))
        if live and entry in live:
            live.remove(entry)
            if not live:
                del self._live_by_lu[id(entry.creator)]

    def _drop(self, entry: TokenEntry) -> None:
        if self._entries.get(entry.token_id) is not entry:
            return
        del self._entries[entry.token_id]
        _decrement(self._tokens_of, entry.owner, 1)
        if entry.rod_file is not None:
            self.rod_bytes -= entry.bytes_represented
            _decrement(self._rod_bytes_of, entry.owner, entry.bytes_represented)
            self._discard(entry.rod_file)

    def watches(self, lu: "LogicalUnit") -> bool:
        """``lu`` has live tokens that a change of its data would cancel."""
        return id(lu) in self._live_by_lu

    def source_written(self, lu: "LogicalUnit", offset: int, length: int, now: float,
                       spare: TokenEntry | None = None) -> bool:
        """Bytes ``[offset, offset+length)`` of ``lu`` are changing: cancel the live tokens
        whose ranges they touch, except ``spare`` (the token of the copy making the change,
        which cancels it once it is done with it). Returns whether ``spare`` was touched."""
        live = self._live_by_lu.get(id(lu))
        if not live:
            return False
        end = offset + length
        hit = [entry for entry in live
               if any(start < end and offset < stop for start, stop in entry.byte_spans())]
        for entry in hit:
            if entry is not spare:
                self.invalidate(entry, errors.TokenCancelled, now)
        return spare is not None and spare in hit

    def creator_gone(self, lu, now: float) -> None:
        """An LU is detached: every token it created is revoked."""
        for entry in list(self._entries.values()):
            if entry.creator is lu and entry.invalid is None:
                self.invalidate(entry, errors.TokenRevoked, now)

    def creator_storage_replaced(self, lu, now: float) -> int:
        """``lu``'s storage is being swapped (admin change of its extents, size or flags): its
        live tokens name ranges of storage that goes away, so they are cancelled. Snapshot
        tokens keep their own ROD files. Returns how many were cancelled."""
        live = [entry for entry in self._entries.values()
                if entry.creator is lu and entry.rod_file is None and entry.invalid is None]
        for entry in live:
            self.invalidate(entry, errors.TokenCancelled, now)
        return len(live)

    def revoke(self, token_id: int, now: float) -> bool:
        """Administrative revoke (23h/06h on next use)."""
        entry = self._entries.get(token_id)
        if entry is None or entry.invalid is not None:
            return False
        self.invalidate(entry, errors.TokenRevoked, now)
        return True

    def expire(self, now: float) -> int:
        """Invalidate idle tokens past their inactivity timeout; forget old tombstones."""
        expired = [entry for entry in self._entries.values()
                   if entry.invalid is None and self._expired(entry, now)]
        for entry in expired:
            self.invalidate(entry, errors.TokenExpired, now)
        while self._tombstones:
            token_id, tombstone = next(iter(self._tombstones.items()))
            if tombstone.forget_at > now:
                break
            del self._tombstones[token_id]
        return len(expired)

    def next_expiry(self) -> float | None:
        deadlines = [entry.last_active + entry.inactivity_timeout for entry in self._entries.values()
                     if entry.invalid is None and entry.in_use == 0]
        return min(deadlines, default=None)

    def active(self) -> list[TokenEntry]:
        return [entry for entry in self._entries.values() if entry.invalid is None]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Daemon shutdown: every token goes (the copy manager removes the ROD files)."""
        self._entries.clear()
        self._live_by_lu.clear()
        self._tokens_of.clear()
        self._rod_bytes_of.clear()
        self.rod_bytes = 0


def _decrement(counter: Counter[str], key: str, amount: int) -> None:
    counter[key] -= amount
    if counter[key] <= 0:
        del counter[key]
