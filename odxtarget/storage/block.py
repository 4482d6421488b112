"""A logical unit stored on a block device: an LVM logical volume, a whole disk, a partition,
a zvol, a loop device (targetcli's ``block`` backstore; docs/block.md).

Theory of operation
-------------------
A block device is one file that cannot be created, grown or given holes, so the backend is
the file-extent backend (odxtarget/storage/extents.py) over one extent, the first ``size``
bytes of the device, with what differs told here:

* **Opening.** The device is opened ``O_RDWR`` (``O_RDONLY`` when read-only), never created;
  it must be a block device, at least ``size`` bytes long (``BLKGETSIZE64``), with a logical
  sector (``BLKSSZGET``) no larger than the LU's block, or the kernel would refuse the LU's
  aligned I/O. I/O goes through the page cache, as for files: io_uring reads and writes
  (``FileRead``/``FileWrite``), ``RWF_NOWAIT`` probes of the cache, ``RWF_DSYNC`` for FUA and
  ``fdatasync`` for SYNCHRONIZE CACHE, which on a block device writes the dirty pages back and
  flushes the device's volatile cache (``blkdev_fsync``). The writeback error bookkeeping
  (the witness descriptor) is the same: errors are recorded on the device's page cache.
* **Workers.** The lane is the device number itself (``st_rdev``), the same lane as files of a
  filesystem on that device (their ``st_dev``), so work for one device shares one pool.
* **Deallocation** (docs/block.md, "Logical block provisioning"). The LU is thin provisioned
  (LBPME, LBPU, LBPWS, LBPRZ=1) only when the device can both unmap
  (``queue/discard_max_bytes`` > 0) and write zeros without writing data
  (``queue/write_zeroes_max_bytes`` > 0). UNMAP is then ``fallocate(FALLOC_FL_PUNCH_HOLE)``
  on the device: the kernel's zero-out that may unmap and never falls back to writing zero
  pages (``blkdev_fallocate``), so deallocated blocks read as zeros (LBPRZ=1) by the kernel's
  guarantee, which a bare ``BLKDISCARD`` does not give (its data afterwards is the device's
  choice). Otherwise deallocation (the zero ROD token) is ``BLKZEROOUT``: zeros, blocks kept
  mapped.
* **Provisioning status.** A block device does not say which of its blocks are mapped
  (``SEEK_DATA`` fails with EINVAL), so GET LBA STATUS reports every block "mapped or
  unknown" (SBC-4 5.6, provisioning status 0h).
* **Copies.** ``copy_file_range`` and ``FICLONERANGE`` take regular files only (EINVAL on a
  block device), so the device's ``FileRange`` pieces say ``regular=False`` and copies move
  them by ``pread``/``pwrite`` without trying the kernel methods first; ROD tokens on a block
  device refer to the live blocks and are cancelled by writes (docs/odx.md, "Token semantics").
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

from odxtarget.storage.block_device import DeviceFacts, device_facts, zero_out, zero_unmapping
from odxtarget.storage.extents import FileExtentBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _WholeDevice:
    """The one extent of a block device LU (an ``ExtentSpec``): its first bytes."""

    path: str
    offset: int = 0
    length: int | None = None


class BlockDeviceBackend(FileExtentBackend):
    """Backend protocol implementation over the first ``size`` bytes of a block device (see the
    module docstring).

    Args:
        path: the device node (``/dev/vg/lv``, ``/dev/zvol/pool/vol``...).
        size: the LUN capacity in bytes, at most the device's size.
        block_size: the LU's logical block size; no smaller than the device's logical sector.
        read_only: open the device ``O_RDONLY`` and refuse writes and deallocation with EROFS.

    Raises:
        OSError: the device cannot be opened or is not a block device (the message names it).
        ValueError: the device is smaller than ``size``, or its sector larger than ``block_size``.
    """

    _CREATE = 0
    _REGULAR = False

    def __init__(self, path: str, size: int, *, block_size: int, read_only: bool = False):
        self._block_size = block_size
        self._facts: DeviceFacts | None = None
        super().__init__([_WholeDevice(path)], size, read_only=read_only)

    @property
    def facts(self) -> DeviceFacts:
        """What the kernel said about the device when it was opened."""
        assert self._facts is not None
        return self._facts

    def _check_kind(self, fd: int, path: str) -> None:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTBLK, "not a block device", path)
        try:
            facts = device_facts(fd)
        except OSError as error:
            raise OSError(error.errno, f"cannot query the device: {error.strerror}", path) from None
        if facts.logical_sector_size > self._block_size:
            raise ValueError(f"{path}: the device's logical sector is {facts.logical_sector_size} bytes,"
                             f" larger than block_size {self._block_size}")
        self._facts = facts

    def _ensure_covers(self, fd: int, path: str, end: int) -> None:
        """A device is never grown: it must already hold the LU."""
        if self.facts.size < end:
            raise ValueError(f"{path}: the device holds {self.facts.size} bytes, fewer than the"
                             f" storage object's size {end}")

    def _device_of(self, fd: int) -> int:
        return os.fstat(fd).st_rdev

    def _frees_space(self) -> bool:
        return self.facts.frees_space

    def _deallocate_range(self, fd: int, offset: int, length: int) -> None:
        if not self.facts.frees_space:
            zero_out(fd, offset, length)
            return
        try:
            zero_unmapping(fd, offset, length)
        except OSError as error:
            if error.errno != errno.EOPNOTSUPP:
                raise
            # The device refused a zeroing unmap it advertised (the kernel then clears
            # write_zeroes_max_bytes): zeros still, but the blocks stay mapped.
            log.warning("%s: zeroing unmap refused (%s); writing zeros instead", self.paths[0],
                        error.strerror)
            zero_out(fd, offset, length)

    def _allocation(self, fd: int, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """Every byte "mapped or unknown": a block device does not say (SBC-4 5.6)."""
        return [(offset, length, True)] if length else []
