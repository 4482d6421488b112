"""ROD files: reflinked snapshots of a token's source ranges, in ``<state_dir>/.rod/``.

A snapshot costs no data copy where the filesystem can reflink: the aligned middle of every
source piece is shared with the ROD file (FICLONERANGE) and only unaligned heads and tails
(under one filesystem block each) are copied. Later writes to the source go to new blocks
(copy on write), so the ROD keeps the data as of POPULATE TOKEN (SBC-4 4.28.3, point in time).

Layout: the ROD is the concatenation of the source pieces; piece *i* is stored at a file
offset congruent to its source file offset modulo the filesystem block size, so its middle
is reflinkable whatever the source's alignment. The gaps between pieces are holes.

This is the one module of the copy manager that touches files: ``RodDirectory`` prepares the
directory when the daemon starts and empties it when it stops; ``Snapshot`` and ``RemoveRodFile``
are storage work (odxtarget/storage/work.py) that workers run, never the core's thread.
Nothing here survives a restart: tokens live in memory, so ``startup_cleanup`` deletes every
ROD file a previous (possibly crashed) run left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from dataclasses import dataclass

from odxtarget.copy.token_store import RodFile, RodSegment
from odxtarget.storage import copy_strategies as strategies
from odxtarget.storage.backend import FileBacked

log = logging.getLogger(__name__)

ROD_DIRECTORY = ".rod"
ROD_SUFFIX = ".rod"


class RodDirectory:
    """The ROD files of one copy manager; see the module docstring."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(os.path.abspath(state_dir), ROD_DIRECTORY)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.device = os.stat(self.path).st_dev
        self.alignment = strategies.filesystem_block_size(self.path)
        self.reflink_capable = strategies.probe_reflink(self.path)
        log.info("ROD files in %s: reflink %s (block %d)", self.path,
                 "available" if self.reflink_capable else "unavailable", self.alignment)

    @property
    def lane(self) -> Hashable:
        """The worker lane of the device holding the ROD files (as a backend's ``lane``)."""
        return ("device", self.device)

    def startup_cleanup(self) -> int:
        """Remove every ROD file (and probe and staging leftovers) of a previous run."""
        removed = 0
        for name in os.listdir(self.path):
            if name.endswith(ROD_SUFFIX) or name.startswith((".reflink-probe-", ".wut-stage-")):
                remove_quietly(os.path.join(self.path, name))
                removed += 1
        if removed:
            log.info("removed %d stale ROD files from %s", removed, self.path)
        return removed

    def snapshot(self, token_id: int, source: FileBacked, lane: Hashable,
                 spans: list[tuple[int, int]]) -> "Snapshot":
        """The storage work that snapshots ``spans`` ((offset, length) of ``source``, in ROD
        order) into the ROD file of token ``token_id``."""
        return Snapshot(self.path, self.device, self.alignment, token_id, source, lane, tuple(spans))

    def removal(self, rod_file: RodFile) -> "RemoveRodFile":
        return RemoveRodFile(rod_file.path, self.lane)

    def reflink_refused(self) -> None:
        """FICLONERANGE refused an aligned range here: tokens fall back to cancel-on-write."""
        if self.reflink_capable:
            self.reflink_capable = False
            log.warning("reflink refused in %s: tokens fall back to cancel-on-write", self.path)

    def remove_all(self) -> None:
        """Daemon shutdown: the tokens die with the daemon, and so do their ROD files."""
        for name in os.listdir(self.path):
            if name.endswith(ROD_SUFFIX):
                remove_quietly(os.path.join(self.path, name))


@dataclass(frozen=True, slots=True)
class SnapshotOutcome:
    """The ROD file made, or None: the source is not all in regular files on the ROD files'
    filesystem (a block device cannot be reflinked: its tokens stay live, cancelled on write),
    or the filesystem refused to reflink (``reflink_refused``)."""

    rod_file: RodFile | None
    reflink_refused: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Reflink a token's source ranges into a new ROD file (storage work). Holds the source's
    lease while it uses the source's descriptors. Raises OSError for real I/O failures,
    leaving no file behind."""

    directory: str
    device: int
    alignment: int
    token_id: int
    source: FileBacked
    lane: Hashable
    spans: tuple[tuple[int, int], ...]

    def run(self) -> SnapshotOutcome:
        with self.source.lease():
            pieces = [piece for offset, length in self.spans for piece in self.source.extents_for(offset, length)]
            if not all(piece.regular for piece in pieces) or any(
                    os.fstat(fd).st_dev != self.device for fd in {piece.fd for piece in pieces}):
                return SnapshotOutcome(None)
            path = os.path.join(self.directory, f"{self.token_id:016x}{ROD_SUFFIX}")
            segments = []
            cursor = rod_offset = 0
            for piece in pieces:
                start = -(-cursor // self.alignment) * self.alignment + piece.file_offset % self.alignment
                segments.append(RodSegment(rod_offset, piece.length, start))
                rod_offset += piece.length
                cursor = start + piece.length
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, cursor)
                for piece, segment in zip(pieces, segments):
                    strategies.clone_or_copy(piece.fd, piece.file_offset, fd, segment.file_offset, piece.length,
                                             self.alignment)
            except strategies.ReflinkUnsupported:
                os.close(fd)
                remove_quietly(path)
                return SnapshotOutcome(None, reflink_refused=True)
            except BaseException:
                os.close(fd)
                remove_quietly(path)
                raise
            os.close(fd)
        return SnapshotOutcome(RodFile(path, tuple(segments), rod_offset))


@dataclass(frozen=True, slots=True)
class RemoveRodFile:
    """Delete a dead token's ROD file (storage work: freeing its blocks is the filesystem's)."""

    path: str
    lane: Hashable

    def run(self) -> None:
        remove_quietly(self.path)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove ROD file %s: %s", path, error)
