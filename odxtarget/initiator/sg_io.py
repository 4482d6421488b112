"""SCSI commands through the kernel's SG_IO ioctl on /dev/sgN or /dev/sdX: the second transport of
``odxtarget copy``, for LUs the kernel's own initiator (open-iscsi, FC, SAS) already attached.

:class:`SgIoSession` offers the same command interface as :class:`libiscsi.IscsiSession`
(``scsi_command``, ``test_unit_ready``, ``inquiry``, ``read_capacity``, ``write``, ``close``)
and returns the same :class:`libiscsi.Result`, so the ODX client runs unchanged on either.
The device is one LU, so the ``lun`` argument is ignored. The kernel, not this module, owns the
I_T nexus: every command on one device goes down the same nexus, which is what POPULATE TOKEN
followed by RECEIVE ROD TOKEN INFORMATION needs (SPC-4 5.16.2).

The ``sg_io_hdr`` layout is the kernel's (include/scsi/sg.h, interface id 'S'), declared for
x86_64/LP64 with ctypes' natural alignment.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import urllib.parse
from dataclasses import dataclass

from odxtarget.initiator import libiscsi
from odxtarget.scsi.sense import MAX_SENSE_BYTES, SenseData

SG_IO = 0x2285                         # include/scsi/sg.h
SG_INTERFACE_ID = ord("S")
SG_DXFER_NONE = -1
SG_DXFER_TO_DEV = -2
SG_DXFER_FROM_DEV = -3
DEFAULT_TIMEOUT_MS = 120_000           # a WRITE USING TOKEN of a whole token may take a while
DRIVER_SENSE = 0x08                    # driver_status: sense data was returned (not an error)
DRIVER_STATUS_MASK = 0x0F


class SgIoError(libiscsi.LibiscsiError):
    """The device cannot be opened or the ioctl failed. A subclass of libiscsi's error so the
    copy client treats a failure of either transport the same way."""


class _SgIoHeader(ctypes.Structure):
    """struct sg_io_hdr (include/scsi/sg.h)."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


# --------------------------------------------------------------------------------------------
# device "URLs": /dev/sgN[?lba=N&blocks=M]
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceUrl:
    """A SCSI device node with an optional block range, the SG_IO counterpart of ``IscsiUrl``."""

    path: str
    identity: str                    # the LU's sysfs H:C:T:L, shared by its sdX and sgN nodes
    lba: int = 0
    blocks: int | None = None
    lun: int = 0                     # one device node is one LU

    @property
    def target_key(self) -> tuple[object, ...]:
        return ("sg_io", self.identity)

    def describe(self) -> str:
        return self.path


def is_device_path(argument: str) -> bool:
    """An absolute path (normally under /dev) rather than a URL."""
    return argument.startswith("/")


def device_identity(path: str) -> str:
    """The H:C:T:L of the LU behind a /dev/sgN or /dev/sdX node (its sysfs ``device`` link), so
    two nodes of one LU are recognised as the same LU; the real path when sysfs does not say."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError as error:
        raise SgIoError(f"{path}: {error.strerror or error}") from None
    if not stat.S_ISCHR(mode) and not stat.S_ISBLK(mode):
        raise SgIoError(f"{path}: not a device node")
    kind = "char" if stat.S_ISCHR(mode) else "block"
    rdev = os.stat(real).st_rdev
    link = f"/sys/dev/{kind}/{os.major(rdev)}:{os.minor(rdev)}/device"
    try:
        return os.path.basename(os.path.realpath(link, strict=True))
    except OSError:
        return real


def parse_device_url(argument: str) -> DeviceUrl:
    """``/dev/sgN[?lba=N&blocks=M]`` (or /dev/sdX); the query has the same meaning as in
    iscsi:// URLs."""
    path, _, query = argument.partition("?")
    lba, blocks = 0, None
    if query:
        for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
            if key not in ("lba", "blocks") or len(values) != 1 or not values[0].isdigit():
                raise SgIoError(f"{argument}: expected ?lba=N&blocks=M with non-negative integers")
            if key == "lba":
                lba = int(values[0])
            else:
                blocks = int(values[0])
                if blocks == 0:
                    raise SgIoError(f"{argument}: blocks must be at least 1")
    return DeviceUrl(path, device_identity(path), lba, blocks)


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------

class SgIoSession(libiscsi.ScsiCommands):
    """One open SCSI device node; synchronous SG_IO, one command at a time."""

    def __init__(self, path: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.path = path
        self.device_label = path
        self.timeout_ms = timeout_ms
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as error:
            raise SgIoError(f"cannot open {path}: {error.strerror or error}") from None
        self._sense = ctypes.create_string_buffer(MAX_SENSE_BYTES)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SgIoSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def scsi_command(self, lun: int, cdb: bytes, data_out: bytes | None = None,
                     data_in_len: int = 0) -> libiscsi.Result:
        """Send one CDB and wait for it. Transport failures (the host or driver status says the
        command never completed) come back with status ``STATUS_ERROR``, not as exceptions."""
        if self._fd is None:
            raise SgIoError(f"{self.path} is closed")
        if data_out is not None and data_in_len:
            raise ValueError("bidirectional commands are not supported")
        command = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        header = _SgIoHeader(interface_id=SG_INTERFACE_ID, cmd_len=len(cdb),
                             mx_sb_len=MAX_SENSE_BYTES, timeout=self.timeout_ms,
                             cmdp=ctypes.addressof(command), sbp=ctypes.addressof(self._sense))
        buffer = None
        if data_out is not None:
            buffer = ctypes.create_string_buffer(bytes(data_out), len(data_out))
            header.dxfer_direction, header.dxfer_len = SG_DXFER_TO_DEV, len(data_out)
        elif data_in_len:
            buffer = ctypes.create_string_buffer(data_in_len)
            header.dxfer_direction, header.dxfer_len = SG_DXFER_FROM_DEV, data_in_len
        else:
            header.dxfer_direction = SG_DXFER_NONE
        if buffer is not None:
            header.dxferp = ctypes.addressof(buffer)
        try:
            fcntl.ioctl(self._fd, SG_IO, header)
        except OSError as error:
            raise SgIoError(f"{self.path}: SG_IO: {error.strerror or error}") from None
        sense = self._sense.raw[:header.sb_len_wr]
        transport_failed = header.host_status != 0 or (
            header.driver_status & DRIVER_STATUS_MASK & ~DRIVER_SENSE) != 0
        if transport_failed and header.status == libiscsi.STATUS_GOOD:
            status = libiscsi.STATUS_ERROR
        else:
            status = header.status
        data = b""
        if status == libiscsi.STATUS_GOOD and data_in_len:
            data = buffer.raw[:max(0, data_in_len - header.resid)]
        parsed = SenseData.parse(sense) if status == libiscsi.STATUS_CHECK_CONDITION else None
        sense_key, asc, ascq = (parsed.key, parsed.asc, parsed.ascq) if parsed is not None else (0, 0, 0)
        residual = max(0, header.resid)
        return libiscsi.Result(
            status=status, data=data, sense_raw=sense if status == libiscsi.STATUS_CHECK_CONDITION else b"",
            sense_key=sense_key, asc=asc, ascq=ascq,
            residual_status=(libiscsi.ResidualStatus.UNDERFLOW if residual
                             else libiscsi.ResidualStatus.NO_RESIDUAL),
            residual=residual)
