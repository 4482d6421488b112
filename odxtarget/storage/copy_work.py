"""The storage work of a copy: what the copy manager's plans turn into on a worker thread.

Theory of operation
-------------------
The copy manager (odxtarget/copy/) plans on the core's thread and never touches a file; this
module runs its plans as ``StorageWork`` (odxtarget/storage/work.py) on the front end's or
the daemon's workers (docs/odx.md, "How copies run"). A plan names bytes by ``Place``: an
offset into a ``CopyEndpoint``, which is

* ``BackendEndpoint``: a logical unit's backend, at LUN byte offsets. When the backend has the
  ``FileBacked`` copy capability, a step resolves the offsets to file ranges itself, under the
  backend's lease, so an administrator replacing the storage never closes a descriptor under
  it (and a step that starts after the replacement fails with EBADF instead of using it); a
  block device's ranges (``FileRange.regular`` False) move by pread/pwrite alone;
  any other backend is read and written through the plain ``Backend`` calls;
* ``RodFileEndpoint``: a snapshot token's ROD file, opened by each step that reads it;
* ``StagingFile``: a private, already unlinked file holding source data a WRITE USING TOKEN
  overwrites (``FindOverlaps``); the job that reads it releases it (``ReleaseFiles``).

``CopyStep`` runs a bounded slice of a plan: ``Move`` (reflink, copy_file_range or
pread/pwrite, cheapest first, ``storage.copy_strategies``), ``Zero`` (the backend's own
deallocation, as UNMAP) and ``Assemble`` (the one block that straddles the end of a ROD,
SBC-4 4.28.2). It reports what it moved rather than raising, so a failed slice still tells
how many bytes before the failure are in place (the transfer count, SBC-4 5.25).

``SettledWork`` remembers a piece of work's outcome, so a command can wait for a copy step
it did not start (COPY OPERATION ABORT, SPC-4 6.4).
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import stat
import tempfile
import threading
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from odxtarget.storage import copy_strategies as strategies
from odxtarget.storage.backend import Backend, FileBacked, FileRange
from odxtarget.storage.copy_strategies import CopyMethod
from odxtarget.storage.work import StorageCall, StorageWork, read_fully, write_fully

#: Bytes read and written at once when data moves through user space.
#: Buffered moves (``_buffered``): pieces in flight at once, and the size of each (one RBD
#: object by default, so each piece is one request to one OSD).
BUFFERED_STREAMS = 4
BUFFERED_PIECE_BYTES = 4 * 1024 * 1024


class CopyEndpoint(Protocol):
    """Bytes a copy reads or writes; see the module docstring. Used on worker threads, by one
    step of a copy at a time."""

    def opened(self) -> AbstractContextManager[None]:
        """Make the endpoint usable for one step (hold the backend's lease, open the file)."""

    def file_ranges(self, offset: int, length: int) -> list[FileRange] | None:
        """The file ranges holding ``[offset, offset + length)``; None when the bytes are not
        in files (then ``read`` and ``write`` move them)."""

    def read(self, offset: int, view: memoryview) -> None: ...

    def write(self, offset: int, view: memoryview) -> None: ...

    def writing(self, offset: int, length: int) -> AbstractContextManager[None]:
        """Hold the range as a write does while a step writes it through ``file_ranges``."""

    def identity(self) -> Hashable:
        """What storage the endpoint is, for endpoints not in files (see ``FindOverlaps``)."""


class BackendEndpoint:
    """A logical unit's backend, at LUN byte offsets."""

    __slots__ = ("backend", "files")

    def __init__(self, backend: Backend):
        self.backend = backend
        #: The copy capability, when the backend has it.
        self.files: FileBacked | None = backend if isinstance(backend, FileBacked) else None

    def opened(self) -> AbstractContextManager[None]:
        return self.files.lease() if self.files is not None else nullcontext()

    def file_ranges(self, offset: int, length: int) -> list[FileRange] | None:
        return self.files.extents_for(offset, length) if self.files is not None else None

    def read(self, offset: int, view: memoryview) -> None:
        self.backend.read_into(offset, view)

    def write(self, offset: int, view: memoryview) -> None:
        self.backend.write(offset, view)

    def deallocate(self, offset: int, length: int) -> None:
        self.backend.deallocate(offset, length)

    def writing(self, offset: int, length: int) -> AbstractContextManager[None]:
        return self.files.writing(offset, length) if self.files is not None else nullcontext()

    def identity(self) -> Hashable:
        return ("backend", id(self.backend))


class _OneFile:
    """An endpoint that is one regular file at file offsets."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int = -1):
        self.path = path
        self.fd = fd

    def file_ranges(self, offset: int, length: int) -> list[FileRange] | None:
        return [FileRange(self.fd, self.path, offset, length)]

    def read(self, offset: int, view: memoryview) -> None:
        read_fully(self.fd, offset, view)

    def write(self, offset: int, view: memoryview) -> None:
        write_fully(self.fd, offset, view)

    def writing(self, offset: int, length: int) -> AbstractContextManager[None]:
        return nullcontext()

    def identity(self) -> Hashable:
        return ("file", self.path, self.fd)


class RodFileEndpoint(_OneFile):
    """A snapshot token's ROD file. Each step opens it; the token stays in use (so its file
    stays) while a copy reads it."""

    __slots__ = ()

    @contextmanager
    def opened(self) -> Iterator[None]:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield
        finally:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def write(self, offset: int, view: memoryview) -> None:
        raise OSError(errno.EBADF, "a ROD file is never written by a copy", self.path)


class StagingFile(_OneFile):
    """A private, already unlinked file: its space goes with its descriptor (``release``)."""

    __slots__ = ()

    def opened(self) -> AbstractContextManager[None]:
        return nullcontext()

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    @classmethod
    def create(cls, directory: str | None) -> "StagingFile":
        fd, path = tempfile.mkstemp(prefix=".wut-stage-", dir=directory)
        try:
            os.unlink(path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)


@dataclass(frozen=True, slots=True)
class Place:
    """Bytes at ``offset`` of ``endpoint``."""

    endpoint: CopyEndpoint
    offset: int

    def shifted(self, delta: int) -> "Place":
        return Place(self.endpoint, self.offset + delta)


@dataclass(frozen=True, slots=True)
class Move:
    """``length`` bytes from ``source`` to ``destination``."""

    source: Place
    destination: Place
    length: int

    def part(self, start: int, length: int) -> "Move":
        return Move(self.source.shifted(start), self.destination.shifted(start), length)


@dataclass(frozen=True, slots=True)
class Zero:
    """``length`` bytes of a logical unit, from ``offset`` on, that must read as zeros (the
    zero ROD token): deallocated as UNMAP deallocates them."""

    backend: BackendEndpoint
    offset: int
    length: int

    @property
    def destination(self) -> Place:
        return Place(self.backend, self.offset)

    def part(self, start: int, length: int) -> "Zero":
        return Zero(self.backend, self.offset + start, length)


@dataclass(frozen=True, slots=True)
class Assemble:
    """One destination block past the end of a ROD: the source bytes that remain, then zeros,
    written with one write (SBC-4 4.28.2)."""

    destination: Place
    length: int
    parts: tuple[tuple[Place, int], ...]

    def part(self, start: int, length: int) -> "Assemble":
        return self            # a block is never split


CopyItem = Move | Zero | Assemble


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one ``CopyStep`` did: bytes per method, how many bytes of its items completed in
    order before ``error`` (all of them without one), and whether reflink was refused."""

    moved: dict[CopyMethod, int]
    completed: int
    error: OSError | None = None
    reflink_refused: bool = False


@dataclass(frozen=True, slots=True)
class CopyStep:
    """A bounded slice of a copy plan, run by one worker (see the module docstring)."""

    items: tuple[CopyItem, ...]
    lane: Hashable
    #: The filesystem block size reflinks are aligned to; None: never try FICLONERANGE.
    reflink_alignment: int | None = None

    @property
    def length(self) -> int:
        return sum(item.length for item in self.items)

    def run(self) -> StepOutcome:
        run = _StepRun(self.reflink_alignment)
        try:
            with ExitStack() as stack:
                for endpoint in _endpoints(self.items):
                    stack.enter_context(endpoint.opened())
                for item in self.items:
                    run.execute(item)
                    run.completed += item.length
        except OSError as error:
            return StepOutcome(run.moved, run.completed, error, run.reflink_refused)
        return StepOutcome(run.moved, run.completed, None, run.reflink_refused)


@dataclass(slots=True)
class _StepRun:
    alignment: int | None
    moved: dict[CopyMethod, int] = field(default_factory=dict)
    completed: int = 0
    reflink_refused: bool = False
    devices: dict[int, int] = field(default_factory=dict)

    def account(self, method: CopyMethod, count: int) -> None:
        if count:
            self.moved[method] = self.moved.get(method, 0) + count

    def execute(self, item: CopyItem) -> None:
        if isinstance(item, Move):
            self._move(item)
        elif isinstance(item, Zero):
            item.backend.deallocate(item.offset, item.length)
            self.account(CopyMethod.ZERO, item.length)
        else:
            self._assemble(item)

    def _move(self, item: Move) -> None:
        source, destination, length = item.source, item.destination, item.length
        source_files = source.endpoint.file_ranges(source.offset, length)
        destination_files = destination.endpoint.file_ranges(destination.offset, length)
        if source_files is None or destination_files is None:
            _buffered(source, destination, length)
            self.account(CopyMethod.READ_WRITE, length)
            return
        with destination.endpoint.writing(destination.offset, length):
            for source_piece, destination_piece in _paired(source_files, destination_files):
                self._move_piece(source_piece, destination_piece)

    def _move_piece(self, source: FileRange, destination: FileRange) -> None:
        if not (source.regular and destination.regular):  # a block device: no kernel copy
            strategies.read_write(source.fd, source.file_offset, destination.fd, destination.file_offset,
                                  source.length)
            self.account(CopyMethod.READ_WRITE, source.length)
            return
        if self.alignment and self._device(source.fd) == self._device(destination.fd):
            try:
                for method, count in strategies.clone_or_copy(
                        source.fd, source.file_offset, destination.fd, destination.file_offset, source.length,
                        self.alignment).items():
                    self.account(method, count)
                return
            except strategies.ReflinkUnsupported:
                self.alignment = None
                self.reflink_refused = True
        method = strategies.copy_range(source.fd, source.file_offset, destination.fd, destination.file_offset,
                                       source.length)
        self.account(method, source.length)

    def _device(self, fd: int) -> int:
        device = self.devices.get(fd)
        if device is None:
            device = self.devices[fd] = os.fstat(fd).st_dev
        return device

    def _assemble(self, item: Assemble) -> None:
        buffer = memoryview(bytearray(item.length))
        filled = 0
        for place, length in item.parts:
            place.endpoint.read(place.offset, buffer[filled:filled + length])
            filled += length
        item.destination.endpoint.write(item.destination.offset, buffer)
        self.account(CopyMethod.READ_WRITE, item.length)


def _endpoints(items) -> list[CopyEndpoint]:
    """Every endpoint the items use, once each, in first-use order."""
    seen: dict[int, CopyEndpoint] = {}
    for item in items:
        places = [item.destination]
        if isinstance(item, Move):
            places.append(item.source)
        elif isinstance(item, Assemble):
            places.extend(place for place, _ in item.parts)
        for place in places:
            seen.setdefault(id(place.endpoint), place.endpoint)
    return list(seen.values())


def _paired(sources: list[FileRange], destinations: list[FileRange]) -> Iterator[tuple[FileRange, FileRange]]:
    """The two lists of file ranges (equally long in total) cut at each other's boundaries."""
    source_index = destination_index = 0
    source_done = destination_done = 0
    while source_index < len(sources) and destination_index < len(destinations):
        source, destination = sources[source_index], destinations[destination_index]
        take = min(source.length - source_done, destination.length - destination_done)
        yield (source._replace(file_offset=source.file_offset + source_done, length=take),
               destination._replace(file_offset=destination.file_offset + destination_done, length=take))
        source_done += take
        destination_done += take
        if source_done == source.length:
            source_index, source_done = source_index + 1, 0
        if destination_done == destination.length:
            destination_index, destination_done = destination_index + 1, 0


def _buffered(source: Place, destination: Place, length: int) -> None:
    """Move bytes through bounded buffers, for endpoints that are not in files (RBD images):
    up to ``BUFFERED_STREAMS`` pieces at once, each read then written, so a cluster's
    latency per request is paid once per round rather than once per piece."""
    piece = max(1, min(BUFFERED_PIECE_BYTES, length))
    starts = range(0, length, piece)
    if len(starts) == 1:
        _buffered_piece(source, destination, 0, length)
        return
    with concurrent.futures.ThreadPoolExecutor(min(BUFFERED_STREAMS, len(starts)),
                                               thread_name_prefix="odx-copy-piece") as pool:
        pieces = [pool.submit(_buffered_piece, source, destination, start, min(piece, length - start))
                  for start in starts]
        for done in pieces:
            done.result()                # the first failure is the step's failure


def _buffered_piece(source: Place, destination: Place, start: int, length: int) -> None:
    view = memoryview(bytearray(length))
    source.endpoint.read(source.offset + start, view)
    destination.endpoint.write(destination.offset + start, view)


# -- staging the sources a WRITE USING TOKEN overwrites -----------------------------------------

@dataclass(frozen=True, slots=True)
class FindOverlaps:
    """Which source pieces the destination pieces overwrite (storage work; returns their indices).

    WRITE USING TOKEN from a live token into ranges that overlap the token's own source must
    copy what the source held when the command started, whatever order the moves run in (a
    plain forward copy would read blocks it has just overwritten). Overlap is decided on the
    storage itself: the same file through two LUs, or two descriptors, is the same storage.
    The copy manager then copies the overlapping pieces aside into a ``StagingFile`` with
    ordinary ``CopyStep``s; the rest still move by reflink or copy_file_range.
    """

    source: tuple[tuple[Place, int], ...]
    destination: tuple[tuple[Place, int], ...]
    lane: Hashable

    def run(self) -> tuple[int, ...]:
        with ExitStack() as stack:
            for endpoint in {id(place.endpoint): place.endpoint
                             for place, _ in (*self.source, *self.destination)}.values():
                stack.enter_context(endpoint.opened())
            identities: dict[int, tuple] = {}
            written: dict[Hashable, list[tuple[int, int]]] = {}
            for place, length in self.destination:
                for storage, start, end in _stored_at(place, length, identities):
                    written.setdefault(storage, []).append((start, end))
            return tuple(index for index, (place, length) in enumerate(self.source)
                         if any(any(a < end and start < b for a, b in written.get(storage, ()))
                                for storage, start, end in _stored_at(place, length, identities)))


def _stored_at(place: Place, length: int, identities: dict[int, tuple]) -> list[tuple[Hashable, int, int]]:
    """(storage, start, end) spans that hold ``length`` bytes at ``place``."""
    ranges = place.endpoint.file_ranges(place.offset, length)
    if ranges is None:
        return [(place.endpoint.identity(), place.offset, place.offset + length)]
    spans = []
    for piece in ranges:
        identity = identities.get(piece.fd)
        if identity is None:
            status = os.fstat(piece.fd)
            identity = identities[piece.fd] = (("block", status.st_rdev) if stat.S_ISBLK(status.st_mode)
                                               else ("file", status.st_dev, status.st_ino))
        spans.append((identity, piece.file_offset, piece.file_offset + piece.length))
    return spans


@dataclass(frozen=True, slots=True)
class CreateStagingFile:
    """A new ``StagingFile`` in ``directory`` (None: the system's temporary directory)."""

    directory: str | None
    lane: Hashable

    def run(self) -> StagingFile:
        return StagingFile.create(self.directory)


@dataclass(frozen=True, slots=True)
class ReleaseFiles:
    """Close a finished job's staging files: the last close of an unlinked file frees its
    blocks, which is storage work like any other."""

    files: tuple[StagingFile, ...]
    lane: Hashable

    def run(self) -> None:
        for staging in self.files:
            staging.release()


# -- waiting for work another command started ---------------------------------------------------

class SettledWork:
    """Runs ``work`` and remembers its outcome, so a command that did not start it can wait
    until it has finished (``waiter``) and then read ``value`` or ``error``."""

    __slots__ = ("work", "value", "error", "_finished")

    def __init__(self, work: StorageWork):
        self.work = work
        self.value: object = None
        self.error: BaseException | None = None
        self._finished = threading.Event()

    @property
    def lane(self) -> Hashable:
        return self.work.lane

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def run(self) -> object:
        try:
            self.value = self.work.run()
            return self.value
        except BaseException as error:
            self.error = error
            raise
        finally:
            self._finished.set()

    def waiter(self) -> StorageWork:
        """Storage work that returns once ``work`` has finished."""
        return StorageCall(self.lane, self._finished.wait)
