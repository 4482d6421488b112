"""One TCMU device as the handler sees it: its uio node, the shared mapping, configfs actions.

A TCMU device is named ``tcm-user/<hba>/<device>/<dev_config>`` in
``/sys/class/uio/uioN/name``; ours have ``dev_config`` = ``odx/<storage object name>``
(``<subtype>/<config>``, the convention libtcmu matches handlers by). Its configfs directory
is ``/sys/kernel/config/target/core/user_<hba>/<device>``.

The mapping must be ``MAP_SHARED``, at offset 0, of *exactly* ``maps/map0/size`` bytes (the
kernel refuses any other length), and ``/dev/uioN`` can be opened only once at a time
(EBUSY): a second daemon cannot steal a live device.
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass

from odxtarget.transport.tcmu.ring import CommandRing

UIO_NAME_PREFIX = "tcm-user"
SUBTYPE = "odx"
SYSFS_ROOT = "/sys"
DEV_ROOT = "/dev"
CONFIGFS_ROOT = "/sys/kernel/config"

#: ``action/reset_ring`` values: in-flight commands fail with BUSY (the initiator retries) or
#: with CHECK CONDITION (hard failure).
RESET_RING_BUSY = 1
RESET_RING_FAIL = 2

_NOTIFY = b"\x00\x00\x00\x00"


class DeviceError(Exception):
    """A device that cannot be opened or driven (gone, busy, not a TCMU ring)."""


@dataclass(frozen=True, slots=True)
class TcmuDeviceInfo:
    """Where one TCMU device of our subtype lives."""

    uio: str            # "uio3"
    hba: int            # N of core/user_N
    device_name: str    # the configfs directory name
    config: str         # dev_config after "odx/": names the storage object

    @property
    def minor(self) -> int:
        return int(self.uio[3:])

    def dev_path(self, dev_root: str = DEV_ROOT) -> str:
        return os.path.join(dev_root, self.uio)

    def configfs_dir(self, configfs_root: str = CONFIGFS_ROOT) -> str:
        return os.path.join(configfs_root, "target", "core", f"user_{self.hba}", self.device_name)


def parse_uio_name(uio: str, name: str, subtype: str = SUBTYPE) -> TcmuDeviceInfo | None:
    """The device behind a uio ``name`` when it is a TCMU device of ``subtype``, else None."""
    parts = name.strip().split("/", 3)
    if len(parts) != 4 or parts[0] != UIO_NAME_PREFIX or not parts[1].isdigit():
        return None
    handler, _, config = parts[3].partition("/")
    if handler != subtype or not config:
        return None
    return TcmuDeviceInfo(uio=uio, hba=int(parts[1]), device_name=parts[2], config=config)


def read_uio_name(uio: str, sysfs_root: str = SYSFS_ROOT) -> str | None:
    try:
        with open(os.path.join(sysfs_root, "class", "uio", uio, "name"), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def scan_sysfs(subtype: str = SUBTYPE, sysfs_root: str = SYSFS_ROOT) -> list[TcmuDeviceInfo]:
    """Every TCMU device of ``subtype`` present now, from sysfs (no udev needed)."""
    try:
        names = sorted(os.listdir(os.path.join(sysfs_root, "class", "uio")),
                       key=lambda n: (len(n), n))
    except FileNotFoundError:
        return []
    found = []
    for uio in names:
        name = read_uio_name(uio, sysfs_root)
        info = parse_uio_name(uio, name, subtype) if name else None
        if info is not None:
            found.append(info)
    return found


class UioDevice:
    """An open TCMU device: fd, mapping, ring; configfs actions for recovery."""

    def __init__(self, info: TcmuDeviceInfo, *, sysfs_root: str = SYSFS_ROOT,
                 dev_root: str = DEV_ROOT, configfs_root: str = CONFIGFS_ROOT):
        self.info = info
        self._sysfs_root = sysfs_root
        self._dev_root = dev_root
        self._configfs_dir = info.configfs_dir(configfs_root)
        self.fd = -1
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self.ring: CommandRing | None = None

    # -- configfs actions (target_core_user.c tcmu_action_attrs) -------------------------

    def _write_action(self, name: str, value: str) -> None:
        path = os.path.join(self._configfs_dir, "action", name)
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(value)
        except OSError as error:
            raise DeviceError(f"{self.info.device_name}: cannot write {value} to {path}: "
                              f"{error.strerror}") from None

    def block(self) -> None:
        """New commands get BUSY in the kernel; completed entries are processed first."""
        self._write_action("block_dev", "1")

    def unblock(self) -> None:
        self._write_action("block_dev", "0")

    def reset_ring(self, mode: int = RESET_RING_BUSY) -> None:
        """Fail in-flight commands (BUSY: retried) and zero head and tail."""
        self._write_action("reset_ring", str(mode))

    # -- uio -----------------------------------------------------------------------------

    def map_size(self) -> int:
        path = os.path.join(self._sysfs_root, "class", "uio", self.info.uio, "maps", "map0", "size")
        with open(path, encoding="ascii") as f:
            return int(f.read().strip(), 0)

    def open(self) -> CommandRing:
        """Open ``/dev/uioN`` (non-blocking), map map0 exactly, check the mailbox.

        Raises:
            DeviceError: busy (another handler has it), gone, or not a valid ring.
        """
        path = self.info.dev_path(self._dev_root)
        try:
            size = self.map_size()
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno == errno.EBUSY:
                raise DeviceError(f"{path} is already open (another TCMU handler owns it)") from None
            raise DeviceError(f"cannot open {path}: {error.strerror}") from None
        try:
            self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._view = memoryview(self._map)
            self.ring = CommandRing(self._view)
        except Exception as error:
            self.close()
            raise DeviceError(f"{path}: {error}") from None
        return self.ring

    def drain_event(self) -> int:
        """Read (and so clear) the uio event count; 0 when nothing was pending."""
        try:
            return int.from_bytes(os.read(self.fd, 4), "little")
        except BlockingIOError:
            return 0

    def notify(self) -> None:
        """Tell the kernel completions are on the ring (it processes them synchronously)."""
        os.write(self.fd, _NOTIFY)

    def close(self) -> None:
        """Unmap and close; the kernel keeps the ring, in-flight commands time out or are
        reset by the next handler."""
        ring, self.ring = self.ring, None
        if ring is not None:
            ring.memory.release()
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:     # a view is still alive somewhere; GC unmaps it
                pass
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
