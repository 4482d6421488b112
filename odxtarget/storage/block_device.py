"""What the kernel tells and does for a block device: its size and sector (ioctl), what its
queue can do (``/sys/dev/block/MAJ:MIN/queue``), and zeroing with and without unmapping.

Apart from the backend (odxtarget/storage/block.py) so that reading a configuration, which
checks a ``block`` storage object's device (docs/block.md), does not load the storage layer.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass

from odxtarget.storage.fallocate import punch_hole

#: ``_IOR(0x12, 114, size_t)`` from linux/fs.h: the device size in bytes.
BLKGETSIZE64 = 0x80081272
#: ``_IO(0x12, 104)``: the logical sector size.
BLKSSZGET = 0x1268
#: ``_IO(0x12, 127)``: write zeros over ``{start, length}`` (the kernel may not unmap them).
BLKZEROOUT = 0x127F
_RANGE = struct.Struct("=QQ")


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the kernel says about a block device (``ioctl`` and ``/sys/dev/block``)."""

    size: int
    logical_sector_size: int
    discard_max_bytes: int
    write_zeroes_max_bytes: int

    @property
    def frees_space(self) -> bool:
        """Deallocation can unmap, and its blocks then read as zeros: thin provisioning with
        LBPRZ=1 is honest (see the module docstring)."""
        return self.discard_max_bytes > 0 and self.write_zeroes_max_bytes > 0


def device_facts(fd: int) -> DeviceFacts:
    """The facts of an open block device.

    Raises:
        OSError: the ioctls fail (not a block device: ENOTTY).
    """
    size = array.array("Q", [0])
    fcntl.ioctl(fd, BLKGETSIZE64, size)
    sector = array.array("i", [0])
    fcntl.ioctl(fd, BLKSSZGET, sector)
    queue = _queue_directory(os.fstat(fd).st_rdev)
    return DeviceFacts(size[0], sector[0], _sysfs_number(queue, "discard_max_bytes"),
                       _sysfs_number(queue, "write_zeroes_max_bytes"))


def probe(path: str) -> DeviceFacts:
    """Open ``path`` read-only and return its facts.

    Raises:
        OSError: it is missing, unreadable, or not a block device (one-line messages naming it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OSError(error.errno, f"cannot open: {error.strerror}", path) from None
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTBLK, "not a block device", path)
        return device_facts(fd)
    finally:
        os.close(fd)


def zero_out(fd: int, offset: int, length: int) -> None:
    """``BLKZEROOUT``: the range reads as zeros; the kernel writes zeros where the device cannot
    (``BLKDEV_ZERO_NOUNMAP``: blocks stay mapped)."""
    fcntl.ioctl(fd, BLKZEROOUT, _RANGE.pack(offset, length))


def zero_unmapping(fd: int, offset: int, length: int) -> None:
    """``fallocate(PUNCH_HOLE | KEEP_SIZE)`` on a block device: the range reads as zeros and the
    device may unmap it; fails with EOPNOTSUPP rather than write zero pages."""
    punch_hole(fd, offset, length)


def _queue_directory(device: int) -> str:
    """``/sys/dev/block/MAJ:MIN/queue``; a partition's is its disk's."""
    base = os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    queue = os.path.join(base, "queue")
    return queue if os.path.isdir(queue) else os.path.join(os.path.dirname(base), "queue")


def _sysfs_number(directory: str, name: str) -> int:
    """An integer attribute; 0 (the feature is absent) where the kernel has no such file."""
    try:
        with open(os.path.join(directory, name), encoding="ascii") as attribute:
            return int(attribute.read().strip() or 0)
    except (OSError, ValueError):
        return 0
