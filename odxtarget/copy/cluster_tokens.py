"""ROD tokens every gateway of a Ceph cluster can use: RBD snapshots with records in RADOS.

Theory of operation
-------------------
On a logical unit stored in an RBD image (a ``RadosBacked`` backend), POPULATE TOKEN takes
an RBD snapshot of the image and records the token in RADOS
(``odxtarget.copy.token_record``, ``odxtarget.storage.rbd_snapshots``; docs/rbd.md, "ROD
tokens across gateways"). The token is a true point-in-time copy (ROD type 00800000h): a write
to the source never cancels it. Such a token is not kept in the daemon's ``TokenStore``: the
record is its one state, so every gateway, the one that made it included, resolves it by
reading the record (``acquire``), and any gateway's answer is the same.

* **Use.** ``acquire`` reads the record, checks the token bytes against its digest, its
  state and its expiry, and the image's size, then takes a lease for the copy with a
  conditional write. The copy reads the snapshot through a ``SnapshotEndpoint`` that renews
  the lease before a step once a third of it has passed (``CopyLease``). When the command
  ends, ``finish`` drops the lease and restarts the inactivity timer, or, for DEL_TKN, marks
  the token deleted and removes the snapshot.
* **Garbage collection.** Every gateway's housekeeping runs ``sweep`` every
  ``SWEEP_SECONDS``: a live record past its expiry by more than ``CLOCK_SKEW_SECONDS`` is
  claimed (marked expired with a conditional write, so one gateway wins) and its snapshot
  removed; a dead record is removed once its tombstone time has passed; and a snapshot named
  ``odx-rod-<id>`` of an image this gateway serves whose record is missing or dead is removed
  (a gateway that crashed between marking a record and removing its snapshot). So a gateway
  killed with tokens outstanding leaves nothing behind for longer than the tokens' inactivity
  timeout plus the skew allowance plus one sweep.
* **Invalidation.** An admin change of the source LU's storage on any gateway cancels the
  image's live tokens (23h/08h); an image found smaller than the LU was at POPULATE TOKEN
  cancels the token at its next use. Deleting the storage object on one gateway leaves the
  tokens to the gateways that still serve the image.

The blocking work runs on workers (``StorageCall``); the rest on the core's thread. Tokens
issued here are also remembered locally (``issued``), for the per-initiator quotas and for
REPORT ALL ROD TOKENS; that memory is advisory, the record decides.
"""

from __future__ import annotations

import errno
import logging
import platform
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from odxtarget.copy import errors
from odxtarget.copy.job import SourceSegment
from odxtarget.copy.token import token_id_of
from odxtarget.copy.token_record import (
    MAX_RECORD_BYTES, RECORD_NAMESPACE, RecordError, TokenRecord, TokenState, record_name, token_id_of_record,
    token_id_of_snapshot,
)
from odxtarget.storage import rbd_snapshots
from odxtarget.storage.copy_work import Place
from odxtarget.storage.rbd_snapshots import RadosBacked, RecordChanged, RecordStore, SnapshotEndpoint
from odxtarget.storage.work import StorageCall, StorageWork

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

#: Seconds a copy's lease on a snapshot lasts; renewed before a step once a third has passed.
LEASE_SECONDS = 30.0
#: Seconds gateways' clocks may differ: a live record is collected only this long after it expired.
CLOCK_SKEW_SECONDS = 5.0
#: Seconds between two garbage collection sweeps of one gateway.
SWEEP_SECONDS = 5.0
#: Conditional updates tried before giving up on a record other gateways keep changing.
UPDATE_ATTEMPTS = 16


@dataclass(slots=True)
class IssuedToken:
    """A cluster token this gateway made, remembered for quotas and REPORT ALL ROD TOKENS."""

    token: bytes
    creator: "LogicalUnit"
    owner: str
    deadline: float           # monotonic: when it expires unless used here again
    timeout: float


def rados_backend(lu: "LogicalUnit") -> RadosBacked | None:
    """``lu``'s backend, when it is an RBD image whose tokens are cluster tokens."""
    backend = lu.backend
    return backend if isinstance(backend, RadosBacked) else None


def _store(backend: RadosBacked, pool: str) -> RecordStore:
    return RecordStore(backend, pool, RECORD_NAMESPACE, MAX_RECORD_BYTES)


class CopyLease:
    """One copy's hold on a token's snapshot, renewed on the copy's workers (``renew``)."""

    def __init__(self, tokens: "ClusterTokens", backend: RadosBacked, record: TokenRecord, holder: str):
        self.tokens = tokens
        self.backend = backend
        self.record = record
        self.holder = holder
        self.renewed_at = tokens.wall_clock()

    def renew(self) -> None:
        """Extend the lease once a third of it has passed; ``OSError`` (ESTALE) if the token
        died meanwhile (deleted through another gateway), which ends the copy."""
        now = self.tokens.wall_clock()
        if now < self.renewed_at + LEASE_SECONDS / 3:
            return
        record = self.tokens.update(self.backend, self.record.pool, self.record.token_id,
                                    lambda found: found.leased(self.holder, now, LEASE_SECONDS)
                                    if found.state is TokenState.LIVE else None)
        if record is None:
            raise OSError(errno.ESTALE, f"ROD token {self.record.token_id:016x} is no longer valid")
        self.record, self.renewed_at = record, now


class ClusterTokens:
    """See the module docstring. ``clock`` is monotonic (local bookkeeping), ``wall_clock``
    the POSIX time records hold; ``gateway`` names this daemon in the records it writes (host
    name and a random tag by default, for the log)."""

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float] = time.time,
                 gateway: str | None = None):
        self.gateway = gateway or f"{platform.node()}:{secrets.token_hex(4)}"
        self.clock = clock
        self.wall_clock = wall_clock
        self.issued: dict[int, IssuedToken] = {}
        self._next_sweep = 0.0
        self._sweeping = False

    # -- core thread: bookkeeping ---------------------------------------------------------------

    @staticmethod
    def new_token_id() -> int:
        """A random identifier: gateways draw from one space (the record's exclusive create
        refuses a duplicate, and POPULATE TOKEN draws again)."""
        return secrets.randbits(64) or 1

    def held_by(self, owner: str) -> int:
        return sum(1 for issued in self.issued.values() if issued.owner == owner)

    def remember(self, token_id: int, token: bytes, creator: "LogicalUnit", owner: str, timeout: float) -> None:
        self.issued[token_id] = IssuedToken(token, creator, owner, self.clock() + timeout, timeout)

    def used_here(self, token: bytes, deleted: bool) -> None:
        issued = self.issued.get(token_id_of(token))
        if issued is None:
            return
        if deleted:
            del self.issued[token_id_of(token)]
        else:
            issued.deadline = self.clock() + issued.timeout

    def forget_creator(self, lu: "LogicalUnit") -> None:
        for token_id in [token_id for token_id, issued in self.issued.items() if issued.creator is lu]:
            del self.issued[token_id]

    def housekeeping(self, backends: Iterable[RadosBacked]) -> StorageWork | None:
        """Forget expired issued tokens; every ``SWEEP_SECONDS``, the sweep to run on a worker."""
        now = self.clock()
        for token_id in [token_id for token_id, issued in self.issued.items() if issued.deadline <= now]:
            del self.issued[token_id]
        if self._sweeping or now < self._next_sweep:
            return None
        backends = list({id(backend): backend for backend in backends}.values())
        if not backends:
            return None
        self._next_sweep = now + SWEEP_SECONDS
        self._sweeping = True
        return StorageCall(backends[0].lane, self._sweep, (backends,))

    # -- worker: records ------------------------------------------------------------------------

    def issue(self, backend: RadosBacked, record: TokenRecord) -> StorageWork:
        """Write the record, then take the snapshot. ``FileExistsError`` when the identifier
        is taken (draw another); any other ``OSError`` leaves no record behind."""
        return StorageCall(backend.lane, self._issue, (backend, record))

    def _issue(self, backend: RadosBacked, record: TokenRecord) -> None:
        store = _store(backend, record.pool)
        name = record_name(record.token_id)
        store.create(name, record.encode())
        try:
            rbd_snapshots.create_snapshot(backend, record.pool, record.image, record.snapshot)
        except OSError:
            found = store.read(name)
            if found is not None:
                try:
                    store.remove(name, found[1])
                except OSError as error:
                    log.warning("token record %s: %s (the sweep removes it)", name, error)
            raise

    def acquire(self, backend: RadosBacked, pool: str, token: bytes, holder: str) -> StorageWork:
        """The token's record with a lease for ``holder`` taken, or the ``TokenError`` that
        applies, raised (docs/odx.md, "Token semantics")."""
        return StorageCall(backend.lane, self._acquire, (backend, pool, bytes(token), holder))

    def _acquire(self, backend: RadosBacked, pool: str, token: bytes, holder: str) -> TokenRecord:
        store = _store(backend, pool)
        name = record_name(token_id_of(token))
        for _ in range(UPDATE_ATTEMPTS):
            found = store.read(name)
            if found is None:
                raise errors.TokenUnknown()
            raw, version = found
            try:
                record = TokenRecord.decode(raw)
            except RecordError as error:
                log.warning("token record %s/%s: %s", pool, name, error)
                raise errors.TokenUnknown() from None
            if not record.matches(token):
                raise errors.TokenCorrupt("token does not match the one issued under its identifier")
            if record.state is not TokenState.LIVE:
                raise record.state.error()()
            now = self.wall_clock()
            if record.expired(now):
                raise errors.TokenExpired()
            if rbd_snapshots.image_size(backend, record.pool, record.image) < record.image_bytes:
                self._kill(backend, store, name, TokenState.CANCELLED)
                raise errors.TokenCancelled()
            leased = record.leased(holder, now, LEASE_SECONDS)
            try:
                store.replace(name, leased.encode(), version)
            except RecordChanged:
                continue
            return leased
        raise OSError(errno.EAGAIN, f"token record {name}: changed {UPDATE_ATTEMPTS} times while read")

    def update(self, backend: RadosBacked, pool: str, token_id: int,
               change: Callable[[TokenRecord], TokenRecord | None]) -> TokenRecord | None:
        """Apply ``change`` to the record with a conditional write, reading again while other
        gateways change it; None when the record is gone or ``change`` returns None."""
        store = _store(backend, pool)
        name = record_name(token_id)
        for _ in range(UPDATE_ATTEMPTS):
            found = store.read(name)
            if found is None:
                return None
            record = TokenRecord.decode(found[0])
            changed = change(record)
            if changed is None:
                return None
            try:
                store.replace(name, changed.encode(), found[1])
            except RecordChanged:
                continue
            return changed
        raise OSError(errno.EAGAIN, f"token record {name}: changed {UPDATE_ATTEMPTS} times while read")

    def finish(self, backend: RadosBacked, record: TokenRecord, holder: str, delete: bool) -> StorageWork:
        """The command that used the token ended: drop ``holder``'s lease and restart the
        inactivity timer, or, for DEL_TKN, delete the token and remove its snapshot."""
        return StorageCall(backend.lane, self._finish, (backend, record, holder, delete))

    def _finish(self, backend: RadosBacked, record: TokenRecord, holder: str, delete: bool) -> None:
        now = self.wall_clock()
        if delete:
            self._kill(backend, _store(backend, record.pool), record_name(record.token_id), TokenState.DELETED)
            return
        self.update(backend, record.pool, record.token_id,
                    lambda found: found.released(holder, now) if found.state is TokenState.LIVE else None)

    def _kill(self, backend: RadosBacked, store: RecordStore, name: str, state: TokenState) -> bool:
        """Mark the record dead (if it is live), then remove its snapshot; whether this call
        was the one that killed it."""
        token_id = token_id_of_record(name)
        assert token_id is not None
        now = self.wall_clock()
        record = self.update(backend, store.pool, token_id,
                             lambda found: found.invalidated(state, now) if found.state is TokenState.LIVE else None)
        if record is None:
            return False
        rbd_snapshots.remove_snapshot(backend, record.pool, record.image, record.snapshot)
        log.info("ROD token %016x of %s/%s %s; snapshot %s removed", token_id, record.pool, record.image,
                 state.value, record.snapshot)
        return True

    def invalidate_image(self, backend: Callable[[], RadosBacked | None], pool: str, image: str,
                         state: TokenState) -> StorageWork:
        """Every live token of ``pool/image`` dies for ``state`` (an admin change of the LU's
        storage). ``backend`` is called on the worker: the connection to use by then."""
        fallback = backend()
        assert fallback is not None
        return StorageCall(fallback.lane, self._invalidate_image, (backend, fallback, pool, image, state))

    def _invalidate_image(self, backend: Callable[[], RadosBacked | None], fallback: RadosBacked, pool: str,
                          image: str, state: TokenState) -> int:
        current = backend() or fallback
        store = _store(current, pool)
        killed = 0
        for name in store.names():
            found = store.read(name) if token_id_of_record(name) is not None else None
            if found is None:
                continue
            try:
                record = TokenRecord.decode(found[0])
            except RecordError:
                continue
            if record.image == image and record.state is TokenState.LIVE:
                killed += self._kill(current, store, name, state)
        return killed

    # -- worker: garbage collection -------------------------------------------------------------

    def _sweep(self, backends: list[RadosBacked]) -> None:
        try:
            pools = {(backend.spec.conf, backend.spec.pool): backend for backend in backends}
            for backend in pools.values():
                self._sweep_records(backend, backend.spec.pool)
            images = {(backend.spec.conf, backend.spec.pool, backend.spec.image): backend for backend in backends}
            for backend in images.values():
                self._sweep_snapshots(backend, backend.spec.pool, backend.spec.image)
        finally:
            self._sweeping = False

    def _sweep_records(self, backend: RadosBacked, pool: str) -> None:
        store = _store(backend, pool)
        try:
            names = store.names()
        except OSError as error:
            log.warning("ROD token sweep of pool %s: %s", pool, error)
            return
        for name in names:
            if token_id_of_record(name) is None:
                continue
            try:
                found = store.read(name)
                if found is None:
                    continue
                record = TokenRecord.decode(found[0])
                now = self.wall_clock()
                if record.abandoned(now, CLOCK_SKEW_SECONDS):
                    self._kill(backend, store, name, TokenState.EXPIRED)
                elif record.forgettable(now):
                    store.remove(name, found[1])
            except RecordChanged:
                continue                    # another gateway got there first
            except (OSError, RecordError) as error:
                log.warning("ROD token sweep: record %s/%s: %s", pool, name, error)

    def _sweep_snapshots(self, backend: RadosBacked, pool: str, image: str) -> None:
        """Snapshots odxtarget took whose record is missing or dead: left by a gateway that
        died between the two (the record is always written first and killed first)."""
        store = _store(backend, pool)
        try:
            names = rbd_snapshots.snapshot_names(backend, pool, image)
        except OSError as error:
            log.warning("ROD token sweep of image %s/%s: %s", pool, image, error)
            return
        for snapshot in names:
            token_id = token_id_of_snapshot(snapshot)
            if token_id is None:
                continue
            try:
                found = store.read(record_name(token_id))
                if found is not None and TokenRecord.decode(found[0]).state is TokenState.LIVE:
                    continue
                if rbd_snapshots.remove_snapshot(backend, pool, image, snapshot):
                    log.info("removed snapshot %s/%s@%s: its ROD token is gone", pool, image, snapshot)
            except (OSError, RecordError) as error:
                log.warning("ROD token sweep: snapshot %s/%s@%s: %s", pool, image, snapshot, error)


def snapshot_source(tokens: ClusterTokens, backend: RadosBacked, record: TokenRecord,
                    holder: str) -> list[SourceSegment]:
    """The ROD stream of a cluster token: its ranges of the snapshot, read under ``holder``'s
    lease (``job.plan_copy`` takes it as it takes a ROD file's segments)."""
    lease = CopyLease(tokens, backend, record, holder)
    endpoint = SnapshotEndpoint(backend, record.pool, record.image, record.snapshot, lease.renew)
    segments = []
    rod_offset = 0
    for lba, blocks in record.ranges:
        length = blocks * record.block_size
        segments.append(SourceSegment(rod_offset, length, Place(endpoint, lba * record.block_size)))
        rod_offset += length
    return segments
