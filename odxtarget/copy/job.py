"""A copy job: an ordered list of byte moves that advances in bounded steps.

Theory of operation
-------------------
Planning (``plan_copy``, pure) maps destination ranges onto the ROD byte stream:
destination byte ``d`` of the i-th destination range receives ROD byte ``r``, where ROD
bytes are counted from OFFSET INTO ROD through the source segments in order. The result is a
list of work items in destination order:

* ``Move``     -- source segment slice -> destination slice, same length;
* ``Zero``     -- destination slice that must read as zeros (the zero token);
* ``Assemble`` -- the one destination block that straddles the end of the ROD: the source
  bytes that remain, zero-filled to a whole block, written with one write (SBC-4 5.x: "zero-
  fill any part of a written block that lies beyond the ROD end").

``CopyJob.step(budget_bytes)`` executes items in order, splitting big ones, and stops near the
budget at a destination block boundary, so ``transferred_blocks`` is always the count of
whole destination blocks written contiguously from the start (SBC-4 5.25 TRANSFER COUNT).
A synchronous command steps until done or until its time budget runs out; a background one
is stepped by the copy manager's ``run_background``. File I/O is delegated to
``storage.copy_strategies``; a source or destination that is not a file (a test's
``MemoryBackend``) goes through the backend's ``read_into``/``write``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from odxtarget.storage import copy_strategies as strategies
from odxtarget.storage.copy_strategies import CopyMethod
from odxtarget.storage.extents import deallocate_file_range


@dataclass(frozen=True, slots=True)
class Place:
    """Where bytes live: an open file (``fd``) or, failing that, a backend at ``offset``."""

    fd: int | None
    offset: int
    backend: object | None = None
    device: int | None = None

    def shifted(self, delta: int) -> "Place":
        return Place(self.fd, self.offset + delta, self.backend, self.device)


@dataclass(frozen=True, slots=True)
class SourceSegment:
    rod_offset: int
    length: int
    place: Place


@dataclass(slots=True)
class Move:
    source: Place
    destination: Place
    length: int


@dataclass(slots=True)
class Zero:
    destination: Place
    length: int


@dataclass(slots=True)
class Assemble:
    destination: list[tuple[Place, int]]   # one destination block (split only across files)
    length: int
    parts: list[tuple[Place, int]]         # source pieces, in order; the rest is zeros


def places_of(backend, offset: int, length: int) -> list[tuple[Place, int]]:
    """The places storing ``[offset, offset+length)`` of a backend, as (place, length)."""
    extents_for = getattr(backend, "extents_for", None)
    if extents_for is None:
        return [(Place(None, offset, backend), length)]
    return [(Place(piece.fd, piece.file_offset, None, _device(piece.fd)), piece.length)
            for piece in extents_for(offset, length)]


def _device(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_dev
    except OSError:
        return None


def live_source(backend, ranges, block_size: int) -> list[SourceSegment]:
    """The ROD stream of a live token: its creator's ranges, read where they are stored."""
    segments = []
    rod_offset = 0
    for lba, blocks in ranges:
        for place, length in places_of(backend, lba * block_size, blocks * block_size):
            segments.append(SourceSegment(rod_offset, length, place))
            rod_offset += length
    return segments


def _storage_identity(place: Place) -> tuple:
    """What storage a place names: the same file through two fds is the same storage."""
    if place.fd is None:
        return ("backend", id(place.backend))
    status = os.fstat(place.fd)
    return ("file", status.st_dev, status.st_ino)


STAGING_CHUNK = 1 << 20


def stage_overlapping_sources(source: list[SourceSegment], destination_backend, ranges, block_size: int,
                              owned_fds: list[int], stage_dir: str | None = None) -> list[SourceSegment]:
    """Copy aside the live source segments that the destination ranges overwrite.

    WRITE USING TOKEN from a live token into ranges that overlap the token's own source must
    copy what the source held when the command started, whatever order the moves run in (a
    plain forward copy would read blocks it has just overwritten). The rare overlapping
    segments are copied once into an unlinked private file first; the rest still move by
    reflink or copy_file_range. The staging fd is appended to ``owned_fds``.

    Raises OSError (reading the source, or writing the staging file: ENOSPC) having closed
    the staging file, so neither its fd nor its space outlives the failure.
    """
    written: dict[tuple, list[tuple[int, int]]] = {}
    for lba, count in ranges:
        for place, length in places_of(destination_backend, lba * block_size, count * block_size):
            written.setdefault(_storage_identity(place), []).append((place.offset, place.offset + length))
    staged: list[SourceSegment] = []
    stage_fd: int | None = None
    stage_end = 0
    try:
        for segment in source:
            start, end = segment.place.offset, segment.place.offset + segment.length
            spans = written.get(_storage_identity(segment.place), ())
            if not any(a < end and start < b for a, b in spans):
                staged.append(segment)
                continue
            if stage_fd is None:
                stage_fd = _private_file(stage_dir)
                owned_fds.append(stage_fd)
            buffer = memoryview(bytearray(min(STAGING_CHUNK, segment.length)))
            done = 0
            while done < segment.length:
                view = buffer[:min(len(buffer), segment.length - done)]
                _read(segment.place.shifted(done), view)
                _write(Place(stage_fd, stage_end + done), view)
                done += len(view)
            staged.append(SourceSegment(segment.rod_offset, segment.length,
                                        Place(stage_fd, stage_end, None, _device(stage_fd))))
            stage_end += segment.length
    except BaseException:
        if stage_fd is not None:
            owned_fds.remove(stage_fd)
            os.close(stage_fd)     # unlinked already: closing frees its space
        raise
    return staged


def _private_file(directory: str | None) -> int:
    """An open, already unlinked temporary file: its space goes with its last fd."""
    fd, path = tempfile.mkstemp(prefix=".wut-stage-", dir=directory)
    try:
        os.unlink(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def rod_file_source(fd: int, rod_segments) -> list[SourceSegment]:
    device = _device(fd)
    return [SourceSegment(segment.rod_offset, segment.length, Place(fd, segment.file_offset, None, device))
            for segment in rod_segments]


def plan_copy(source: list[SourceSegment], rod_offset: int, destination_backend, ranges,
              block_size: int) -> tuple[list, int]:
    """Work items copying the ROD from ``rod_offset`` into the destination ranges.

    Returns ``(items, blocks)``: ``blocks`` is how many destination blocks will be written
    (fewer than requested when the ROD runs out; the last may be zero-filled).
    """
    available = sum(segment.length for segment in source) - rod_offset
    items: list = []
    blocks_planned = 0
    cursor = rod_offset
    index = _segment_index(source, cursor)
    for lba, count in ranges:
        if available <= 0:
            break
        want = count * block_size
        whole = min(want, available // block_size * block_size)
        if whole:
            index = _moves(items, source, index, cursor, destination_backend, lba * block_size, whole)
            cursor += whole
            available -= whole
            blocks_planned += whole // block_size
        if whole < want and available > 0:
            destination = places_of(destination_backend, lba * block_size + whole, block_size)
            items.append(Assemble(destination, block_size, _source_parts(source, index, cursor, available)))
            cursor += available
            available = 0
            blocks_planned += 1
    return items, blocks_planned


def _segment_index(source, rod_offset: int) -> int:
    for index, segment in enumerate(source):
        if rod_offset < segment.rod_offset + segment.length:
            return index
    return len(source)


def _moves(items, source, index, cursor, backend, offset, length) -> int:
    for place, piece_length in places_of(backend, offset, length):
        done = 0
        while done < piece_length:
            segment = source[index]
            inside = cursor - segment.rod_offset
            take = min(piece_length - done, segment.length - inside)
            items.append(Move(segment.place.shifted(inside), place.shifted(done), take))
            done += take
            cursor += take
            if cursor >= segment.rod_offset + segment.length:
                index += 1
    return index


def _source_parts(source, index, cursor, length):
    parts = []
    while length > 0 and index < len(source):
        segment = source[index]
        inside = cursor - segment.rod_offset
        take = min(length, segment.length - inside)
        parts.append((segment.place.shifted(inside), take))
        cursor += take
        length -= take
        index += 1
    return parts


def plan_zero(destination_backend, ranges, block_size: int) -> tuple[list, int]:
    items = []
    blocks = 0
    for lba, count in ranges:
        for place, length in places_of(destination_backend, lba * block_size, count * block_size):
            items.append(Zero(place, length))
        blocks += count
    return items, blocks


@dataclass(eq=False)
class CopyJob:
    """Executes planned work items in bounded steps; see the module docstring."""

    items: list
    block_size: int
    planned_blocks: int
    requested_blocks: int
    reflink_alignment: int | None = None      # None: never try FICLONERANGE
    owned_fds: list[int] = field(default_factory=list)
    bytes_done: int = 0
    moved: dict = field(default_factory=dict)
    error: OSError | None = None
    aborted: bool = False
    _index: int = 0
    _item_done: int = 0

    @property
    def total_bytes(self) -> int:
        return self.planned_blocks * self.block_size

    @property
    def done(self) -> bool:
        return self.aborted or self.error is not None or self._index >= len(self.items)

    @property
    def finished_all(self) -> bool:
        return self._index >= len(self.items) and self.error is None and not self.aborted

    @property
    def transferred_blocks(self) -> int:
        return self.bytes_done // self.block_size

    def abort(self) -> None:
        self.aborted = True

    def step(self, budget_bytes: int) -> int:
        """Move about ``budget_bytes`` (at least one unit), ending on a block boundary."""
        moved_now = 0
        while not self.done and (moved_now < budget_bytes or self.bytes_done % self.block_size):
            item = self.items[self._index]
            remaining = item.length - self._item_done
            take = remaining
            unit = self._unit(item)
            if remaining > budget_bytes - moved_now:
                take = min(remaining, max(unit, (budget_bytes - moved_now) // unit * unit))
            try:
                self._execute(item, self._item_done, take)
            except OSError as error:
                self.error = error
                break
            self._item_done += take
            self.bytes_done += take
            moved_now += take
            if self._item_done >= item.length:
                self._index += 1
                self._item_done = 0
        return moved_now

    def run(self, budget_bytes: int = 1 << 62) -> None:
        while not self.done:
            self.step(budget_bytes)

    def close(self) -> None:
        fds, self.owned_fds = self.owned_fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- execution ------------------------------------------------------------------------

    def _unit(self, item) -> int:
        if isinstance(item, Move) and self.reflink_alignment:
            return max(self.block_size, self.reflink_alignment)
        return self.block_size

    def _account(self, method: CopyMethod, count: int) -> None:
        self.moved[method] = self.moved.get(method, 0) + count

    def _execute(self, item, start: int, length: int) -> None:
        if isinstance(item, Move):
            self._move(item.source.shifted(start), item.destination.shifted(start), length)
        elif isinstance(item, Zero):
            self._zero(item.destination.shifted(start), length)
        else:
            self._assemble(item)

    def _move(self, source: Place, destination: Place, length: int) -> None:
        if source.fd is not None and destination.fd is not None:
            if (self.reflink_alignment and source.device is not None
                    and source.device == destination.device):
                try:
                    for method, count in strategies.clone_or_copy(
                            source.fd, source.offset, destination.fd, destination.offset, length,
                            self.reflink_alignment).items():
                        self._account(method, count)
                    return
                except strategies.ReflinkUnsupported:
                    self.reflink_alignment = None
            method = strategies.copy_range(source.fd, source.offset, destination.fd, destination.offset, length)
            self._account(method, length)
            return
        buffer = bytearray(length)
        _read(source, memoryview(buffer))
        _write(destination, memoryview(buffer))
        self._account(CopyMethod.READ_WRITE, length)

    def _zero(self, destination: Place, length: int) -> None:
        if destination.fd is not None:
            deallocate_file_range(destination.fd, destination.offset, length)
        else:
            destination.backend.deallocate(destination.offset, length)
        self._account(CopyMethod.ZERO, length)

    def _assemble(self, item: Assemble) -> None:
        buffer = bytearray(item.length)
        view = memoryview(buffer)
        filled = 0
        for place, length in item.parts:
            _read(place, view[filled:filled + length])
            filled += length
        written = 0
        for place, length in item.destination:
            _write(place, view[written:written + length])
            written += length
        self._account(CopyMethod.READ_WRITE, item.length)


def _read(place: Place, view: memoryview) -> None:
    if place.fd is None:
        place.backend.read_into(place.offset, view)
        return
    got = 0
    while got < len(view):
        count = os.preadv(place.fd, [view[got:]], place.offset + got)
        if count == 0:
            view[got:] = bytes(len(view) - got)
            return
        got += count


def _write(place: Place, view: memoryview) -> None:
    if place.fd is None:
        place.backend.write(place.offset, view)
        return
    written = 0
    while written < len(view):
        written += os.pwritev(place.fd, [view[written:]], place.offset + written)
