"""ROD files: reflinked snapshots of a token's source ranges, in ``<state_dir>/.rod/``.

A snapshot costs no data copy where the filesystem can reflink: the aligned middle of every
source piece is shared with the ROD file (FICLONERANGE) and only unaligned heads and tails
(under one filesystem block each) are copied. Later writes to the source go to new blocks
(copy on write), so the ROD keeps the data as of POPULATE TOKEN.

Layout: the ROD is the concatenation of the source pieces; piece *i* is stored at a file
offset congruent to its source file offset modulo the filesystem block size, so its middle
is reflinkable whatever the source's alignment. The gaps between pieces are holes.

Nothing here survives a restart: tokens live in memory, so ``startup_cleanup`` deletes every
ROD file a previous (possibly crashed) run left.
"""

from __future__ import annotations

import logging
import os

from odxtarget.copy.token_store import RodFile, RodSegment, remove_quietly
from odxtarget.storage import copy_strategies as strategies

log = logging.getLogger(__name__)

ROD_DIRECTORY = ".rod"
ROD_SUFFIX = ".rod"


class RodDirectory:
    def __init__(self, state_dir: str):
        self.path = os.path.join(os.path.abspath(state_dir), ROD_DIRECTORY)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.device = os.stat(self.path).st_dev
        self.alignment = strategies.filesystem_block_size(self.path)
        self.reflink_capable = strategies.probe_reflink(self.path)
        log.info("ROD files in %s: reflink %s (block %d)", self.path,
                 "available" if self.reflink_capable else "unavailable", self.alignment)

    def startup_cleanup(self) -> int:
        """Remove every ROD file (and probe leftovers) of a previous run."""
        removed = 0
        for name in os.listdir(self.path):
            if name.endswith(ROD_SUFFIX) or name.startswith(".reflink-probe-"):
                remove_quietly(os.path.join(self.path, name))
                removed += 1
        if removed:
            log.info("removed %d stale ROD files from %s", removed, self.path)
        return removed

    def can_snapshot(self, places) -> bool:
        """All source pieces are files on this directory's reflink-capable filesystem."""
        return self.reflink_capable and all(
            place.fd is not None and place.device == self.device for place, _ in places)

    def create_snapshot(self, token_id: int, places) -> RodFile | None:
        """Reflink ``places`` ((Place, length) in ROD order) into a new ROD file.

        Returns None (and leaves nothing behind) when this filesystem turns out unable to
        reflink these files; raises OSError for real I/O failures.
        """
        if not self.can_snapshot(places):
            return None
        path = os.path.join(self.path, f"{token_id:016x}{ROD_SUFFIX}")
        segments = []
        cursor = rod_offset = 0
        for place, length in places:
            start = -(-cursor // self.alignment) * self.alignment + place.offset % self.alignment
            segments.append(RodSegment(rod_offset, length, start))
            rod_offset += length
            cursor = start + length
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, cursor)
            for (place, length), segment in zip(places, segments):
                strategies.clone_or_copy(place.fd, place.offset, fd, segment.file_offset, length,
                                         self.alignment)
        except strategies.ReflinkUnsupported:
            os.close(fd)
            remove_quietly(path)
            self.reflink_capable = False
            log.warning("reflink refused in %s: tokens fall back to cancel-on-write", self.path)
            return None
        except BaseException:
            os.close(fd)
            remove_quietly(path)
            raise
        os.close(fd)
        return RodFile(path, tuple(segments), rod_offset)
