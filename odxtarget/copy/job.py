"""Planning a copy, and cutting the plan into bounded steps of storage work.

Theory of operation
-------------------
Planning (``plan_copy``) maps destination ranges onto the ROD byte stream: destination byte
``d`` of the i-th destination range receives ROD byte ``r``, where ROD bytes are counted from
OFFSET INTO ROD through the source segments in order (SBC-4 5.39, WRITE USING TOKEN). The
result is a list of items in destination order (``storage.copy_work``):

* ``Move``     -- source segment slice -> destination slice, same length;
* ``Zero``     -- destination slice that must read as zeros (the zero token, SBC-4 4.28.4);
* ``Assemble`` -- the one destination block that straddles the end of the ROD: the source
  bytes that remain, zero-filled to a whole block, written with one write (SBC-4 4.28.2).

Places are logical unit byte offsets (or ROD file offsets): which files hold them is the
storage's business, resolved by each step under the backend's lease.

``CopyJob.next_step(budget_bytes)`` cuts the next slice of about ``budget_bytes``, ending at a
destination block boundary, as a ``CopyStep`` for a worker; ``advanced`` takes its outcome.
So ``transferred_blocks`` is always the count of whole destination blocks written contiguously
from the start (SBC-4 5.25 TRANSFER COUNT). Nothing here touches storage: a job is advanced by
the copy manager on the core's thread, and its steps run on workers (docs/odx.md, "How copies
run").
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from odxtarget.copy.token_store import RodFile
from odxtarget.storage.backend import Backend, FileBacked
from odxtarget.storage.copy_strategies import CopyMethod
from odxtarget.storage.copy_work import (Assemble, BackendEndpoint, CopyItem, CopyStep, FindOverlaps, Move, Place,
                                         RodFileEndpoint, StagingFile, StepOutcome, Zero)

Ranges = tuple[tuple[int, int], ...] | list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """ROD bytes ``[rod_offset, rod_offset + length)``, stored at ``place``."""

    rod_offset: int
    length: int
    place: Place


def live_source(backend: Backend, ranges: Ranges, block_size: int) -> list[SourceSegment]:
    """The ROD stream of a live token (or an EXTENDED COPY segment): ranges of a logical unit."""
    endpoint = BackendEndpoint(backend)
    segments = []
    rod_offset = 0
    for lba, blocks in ranges:
        length = blocks * block_size
        segments.append(SourceSegment(rod_offset, length, Place(endpoint, lba * block_size)))
        rod_offset += length
    return segments


def rod_file_source(rod_file: RodFile) -> list[SourceSegment]:
    """The ROD stream of a snapshot token: its ROD file's segments."""
    endpoint = RodFileEndpoint(rod_file.path)
    return [SourceSegment(segment.rod_offset, segment.length, Place(endpoint, segment.file_offset))
            for segment in rod_file.segments]


def overlaps_for(source: list[SourceSegment], destination: Backend, ranges: Ranges, block_size: int) -> FindOverlaps:
    """The storage work that finds the segments of ``source`` the copy would overwrite."""
    endpoint = BackendEndpoint(destination)
    written = tuple((Place(endpoint, lba * block_size), blocks * block_size) for lba, blocks in ranges)
    return FindOverlaps(tuple((segment.place, segment.length) for segment in source), written, destination.lane)


def set_aside(source: list[SourceSegment], overlapping: tuple[int, ...], staging: StagingFile, block_size: int,
              lane: Hashable) -> tuple["CopyJob", list[SourceSegment]]:
    """A job copying the ``overlapping`` segments into ``staging``, and the ROD stream read
    from there once it is done. ``block_size`` is the source's (segments are whole blocks)."""
    items: list[CopyItem] = []
    staged: list[SourceSegment] = []
    offset = 0
    for index, segment in enumerate(source):
        if index not in overlapping:
            staged.append(segment)
            continue
        place = Place(staging, offset)
        items.append(Move(segment.place, place, segment.length))
        staged.append(SourceSegment(segment.rod_offset, segment.length, place))
        offset += segment.length
    blocks = offset // block_size
    return CopyJob(items, block_size, blocks, blocks, lane), staged


def may_overlap(source_backend: Backend, destination: Backend) -> bool:
    """Whether a live source could share storage with the destination: the same backend, or
    two backends whose files could be the same (staging then checks the files)."""
    if source_backend is destination:
        return True
    return isinstance(source_backend, FileBacked) and isinstance(destination, FileBacked)


def plan_copy(source: list[SourceSegment], rod_offset: int, destination: Backend, ranges: Ranges,
              block_size: int) -> tuple[list[CopyItem], int]:
    """Items copying the ROD from ``rod_offset`` into the destination ranges.

    Returns ``(items, blocks)``: ``blocks`` is how many destination blocks will be written
    (fewer than requested when the ROD runs out; the last may be zero-filled).
    """
    endpoint = BackendEndpoint(destination)
    available = sum(segment.length for segment in source) - rod_offset
    items: list[CopyItem] = []
    blocks_planned = 0
    cursor = rod_offset
    index = _segment_index(source, cursor)
    for lba, count in ranges:
        if available <= 0:
            break
        want = count * block_size
        whole = min(want, available // block_size * block_size)
        if whole:
            index = _moves(items, source, index, cursor, Place(endpoint, lba * block_size), whole)
            cursor += whole
            available -= whole
            blocks_planned += whole // block_size
        if whole < want and available > 0:
            parts = _source_parts(source, index, cursor, available)
            items.append(Assemble(Place(endpoint, lba * block_size + whole), block_size, parts))
            cursor += available
            available = 0
            blocks_planned += 1
    return items, blocks_planned


def _segment_index(source: list[SourceSegment], rod_offset: int) -> int:
    for index, segment in enumerate(source):
        if rod_offset < segment.rod_offset + segment.length:
            return index
    return len(source)


def _moves(items: list[CopyItem], source: list[SourceSegment], index: int, cursor: int, destination: Place,
           length: int) -> int:
    done = 0
    while done < length:
        segment = source[index]
        inside = cursor - segment.rod_offset
        take = min(length - done, segment.length - inside)
        items.append(Move(segment.place.shifted(inside), destination.shifted(done), take))
        done += take
        cursor += take
        if cursor >= segment.rod_offset + segment.length:
            index += 1
    return index


def _source_parts(source: list[SourceSegment], index: int, cursor: int, length: int) -> tuple[tuple[Place, int], ...]:
    parts = []
    while length > 0 and index < len(source):
        segment = source[index]
        inside = cursor - segment.rod_offset
        take = min(length, segment.length - inside)
        parts.append((segment.place.shifted(inside), take))
        cursor += take
        length -= take
        index += 1
    return tuple(parts)


def plan_zero(destination: Backend, ranges: Ranges, block_size: int) -> tuple[list[CopyItem], int]:
    """Items making the destination ranges read as zeros (the block device zero token)."""
    endpoint = BackendEndpoint(destination)
    items: list[CopyItem] = [Zero(endpoint, lba * block_size, count * block_size) for lba, count in ranges]
    return items, sum(count for _, count in ranges)


@dataclass(eq=False)
class CopyJob:
    """A planned copy advanced one bounded step at a time; see the module docstring."""

    items: list[CopyItem]
    block_size: int
    planned_blocks: int
    requested_blocks: int
    #: Where the steps run: the destination's worker lane.
    lane: Hashable
    #: The filesystem block size reflinks are aligned to; None: never try FICLONERANGE.
    reflink_alignment: int | None = None
    #: Staging files the job reads from; released when it ends.
    owned: list[StagingFile] = field(default_factory=list)
    bytes_done: int = 0
    moved: dict[CopyMethod, int] = field(default_factory=dict)
    error: OSError | None = None
    _index: int = 0
    _item_done: int = 0
    _after_step: tuple[int, int] | None = None

    @property
    def total_bytes(self) -> int:
        return self.planned_blocks * self.block_size

    @property
    def all_items_done(self) -> bool:
        return self._index >= len(self.items)

    @property
    def done(self) -> bool:
        return self.error is not None or self.all_items_done

    @property
    def finished_all(self) -> bool:
        return self.all_items_done and self.error is None

    @property
    def transferred_blocks(self) -> int:
        return self.bytes_done // self.block_size

    def fail(self, error: OSError) -> None:
        self.error = self.error or error

    def next_step(self, budget_bytes: int) -> CopyStep:
        """The next slice of about ``budget_bytes`` (at least one unit), ending on a
        destination block boundary; ``advanced`` must follow before the next call."""
        if self.done:
            raise RuntimeError("the copy job is done")
        pieces: list[CopyItem] = []
        planned = 0
        index, item_done = self._index, self._item_done
        while index < len(self.items) and (planned < budget_bytes or (self.bytes_done + planned) % self.block_size):
            item = self.items[index]
            remaining = item.length - item_done
            take = remaining
            unit = self._unit(item)
            if remaining > budget_bytes - planned:
                take = min(remaining, max(unit, (budget_bytes - planned) // unit * unit))
            pieces.append(item.part(item_done, take) if (item_done, take) != (0, item.length) else item)
            planned += take
            item_done += take
            if item_done >= item.length:
                index += 1
                item_done = 0
        self._after_step = (index, item_done)
        return CopyStep(tuple(pieces), self.lane, self.reflink_alignment)

    def advanced(self, step: CopyStep, outcome: StepOutcome) -> None:
        """Take the outcome of the step ``next_step`` returned."""
        after, self._after_step = self._after_step, None
        for method, count in outcome.moved.items():
            self.moved[method] = self.moved.get(method, 0) + count
        if outcome.reflink_refused:
            self.reflink_alignment = None
        if outcome.error is not None:
            self.bytes_done += outcome.completed
            self.fail(outcome.error)
            return
        if after is not None:
            self._index, self._item_done = after
        self.bytes_done += step.length

    def take_owned(self) -> tuple[StagingFile, ...]:
        """The staging files to release now that the job reads them no more."""
        owned, self.owned = tuple(self.owned), []
        return owned

    @staticmethod
    def destination_spans(step: CopyStep) -> list[tuple[int, int]]:
        """(offset, length) of the destination bytes ``step`` changes, for change listeners."""
        return [(item.destination.offset, item.length) for item in step.items]

    def _unit(self, item: CopyItem) -> int:
        if isinstance(item, Move) and self.reflink_alignment:
            return max(self.block_size, self.reflink_alignment)
        return self.block_size
