"""COMPARE AND WRITE on an RBD image that every gateway serving it honours (SBC-4 5.3,
docs/rbd.md "Several gateways").

Theory of operation. librbd's ``rbd_compare_and_write`` sends the compare and the write to
the OSD as one operation (a RADOS ``cmpext`` and ``write`` in one transaction), so the OSD
applies it atomically against every other write to that object, whichever gateway sent it.
Ceph 16.2's librbd accepts it only for a range inside one 512-byte sector (``-EINVAL``
otherwise); Debian 12's ``python3-rbd`` does not expose it, so this module calls the C API
through ``ctypes`` on an image handle of its own (a second cluster connection, opened at the
first COMPARE AND WRITE).

A range of one sector -- every COMPARE AND WRITE of one block on a 512-byte LU, which is what
VMware ATS sends -- is one such call: atomic at the OSD against every gateway.

A longer range is a chain of sector calls in ascending order, each comparing the expected
bytes and writing the new ones, run while this gateway holds an exclusive RADOS lock
(``odxtarget_compare_and_write``) on the image's header object, so chains of all gateways run
one at a time. If sector *k* miscompares, sectors ``0..k-1`` are put back with the reverse
call (compare the new bytes, write the expected ones), and the miscompare is reported at its
byte; a sector changed again meanwhile is left as its last writer made it. Against other
chains the range is therefore atomic. A plain write from another gateway that lands in the
range while a chain runs ends up ordered before the chain (the chain miscompares at that
sector and undoes its first sectors) or after it (it overwrites what the chain wrote). What
the chain does not give: a reader on another gateway may see the first sectors of a chain
that a later sector then undoes (and a one-sector COMPARE AND WRITE built on what it read
may then succeed against them), and a gateway that dies in the middle of a chain leaves its
first sectors written (the initiator got no status for that command). The lock expires
``LOCK_SECONDS`` after a gateway that held it died. The caller also holds the backend's
range lock, so on one gateway the whole range is atomic against every other write.

On a miscompare librbd 16.2 reports the image offset of the object plus the byte's offset
within the buffer, not the byte's image offset. Every call here covers part of one sector from
its start, so the byte's offset within the sector is that value modulo the sector size, and
it would be the same if librbd reported the byte's image offset or its offset in the object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
import time
import uuid
from collections.abc import Mapping

#: The largest range librbd 16.2's compare-and-write accepts, and its alignment.
SECTOR = 512

#: The RADOS lock on the image header that chains of sectors hold (a cls_lock name).
LOCK_NAME = b"odxtarget_compare_and_write"
#: How long the lock outlives a gateway that died holding it.
LOCK_SECONDS = 30
#: How long a chain waits for the lock before the command fails.
LOCK_WAIT_SECONDS = 30.0

_void_p = ctypes.c_void_p


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Libraries:
    """librados and librbd with the prototypes used here, loaded once."""

    _loaded: tuple[ctypes.CDLL, ctypes.CDLL] | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> tuple[ctypes.CDLL, ctypes.CDLL]:
        with cls._lock:
            if cls._loaded is None:
                cls._loaded = cls._load()
            return cls._loaded

    @staticmethod
    def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
        try:
            rados = ctypes.CDLL(ctypes.util.find_library("rados") or "librados.so.2", use_errno=True)
            rbd = ctypes.CDLL(ctypes.util.find_library("rbd") or "librbd.so.1", use_errno=True)
        except OSError as error:
            raise OSError(errno.ENOSYS, f"librados/librbd cannot be loaded ({error}); install librbd1") from None
        prototypes = {
            (rados, "rados_create"): (ctypes.c_int, [ctypes.POINTER(_void_p), ctypes.c_char_p]),
            (rados, "rados_conf_read_file"): (ctypes.c_int, [_void_p, ctypes.c_char_p]),
            (rados, "rados_conf_set"): (ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.c_char_p]),
            (rados, "rados_connect"): (ctypes.c_int, [_void_p]),
            (rados, "rados_shutdown"): (None, [_void_p]),
            (rados, "rados_ioctx_create"): (ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.POINTER(_void_p)]),
            (rados, "rados_ioctx_destroy"): (None, [_void_p]),
            (rados, "rados_lock_exclusive"): (ctypes.c_int, [
                _void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                ctypes.POINTER(_Timeval), ctypes.c_uint8]),
            (rados, "rados_unlock"): (ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]),
            (rbd, "rbd_get_id"): (ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.c_size_t]),
            (rbd, "rbd_open"): (ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.POINTER(_void_p), ctypes.c_char_p]),
            (rbd, "rbd_close"): (ctypes.c_int, [_void_p]),
            (rbd, "rbd_compare_and_write"): (ctypes.c_ssize_t, [
                _void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p,
                ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]),
        }
        for (library, name), (restype, argtypes) in prototypes.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
        return rados, rbd


class ImageCompareAndWrite:
    """librbd's compare-and-write on one image, through a cluster connection of its own."""

    def __init__(self, conf: str, client: str, pool: str, image: str, settings: Mapping[str, str]) -> None:
        """Connect with ``settings`` (the backend's, ``client_mount_timeout`` among them)."""
        self.name = f"rbd image {pool}/{image}"
        self._rados, self._rbd = _Libraries.get()
        self._cluster = _void_p()
        self._ioctx = _void_p()
        self._image = _void_p()
        self._header = b""
        self._check(self._rados.rados_create(ctypes.byref(self._cluster), client.encode()), "rados_create")
        try:
            self._check(self._rados.rados_conf_read_file(self._cluster, conf.encode()), f"reading {conf}")
            for key, value in settings.items():
                self._check(self._rados.rados_conf_set(self._cluster, key.encode(), value.encode()), f"setting {key}")
            self._check(self._rados.rados_connect(self._cluster), "connecting to the cluster")
            self._check(self._rados.rados_ioctx_create(self._cluster, pool.encode(), ctypes.byref(self._ioctx)),
                        f"opening pool {pool}")
            self._check(self._rbd.rbd_open(self._ioctx, image.encode(), ctypes.byref(self._image), None),
                        "opening the image")
            identifier = ctypes.create_string_buffer(64)
            self._check(self._rbd.rbd_get_id(self._image, identifier, len(identifier)), "reading the image id")
            self._header = b"rbd_header." + identifier.value
        except OSError:
            self.close()
            raise

    def compare_and_write(self, offset: int, expected: bytes, data: bytes) -> int:
        """Write ``data`` at ``offset`` if the image holds ``expected`` there (equal lengths);
        the offset of the first differing byte within the range, or -1 once written."""
        if len(expected) != len(data):
            raise ValueError("the compare and write buffers differ in length")
        if not expected:
            return -1          # librbd asserts on an empty range
        if offset % SECTOR:
            raise ValueError(f"compare and write at {offset} does not start on a {SECTOR}-byte sector")
        if len(expected) <= SECTOR:
            return self._sector(offset, expected, data)
        cookie = self._lock()
        try:
            return self._chain(offset, expected, data)
        finally:
            self._rados.rados_unlock(self._ioctx, self._header, LOCK_NAME, cookie)

    def _chain(self, offset: int, expected: bytes, data: bytes) -> int:
        """Sector after sector; the sectors written are put back on a miscompare."""
        written: list[tuple[int, bytes, bytes]] = []
        for start in range(0, len(expected), SECTOR):
            old, new = expected[start:start + SECTOR], data[start:start + SECTOR]
            difference = self._sector(offset + start, old, new)
            if difference >= 0:
                for sector_start, sector_old, sector_new in reversed(written):
                    self._sector(offset + sector_start, sector_new, sector_old)
                return start + difference
            written.append((start, old, new))
        return -1

    def _lock(self) -> bytes:
        """Take the image's compare-and-write lock; its cookie."""
        cookie = uuid.uuid4().hex.encode()
        duration = _Timeval(LOCK_SECONDS, 0)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.001
        while True:
            result = self._rados.rados_lock_exclusive(self._ioctx, self._header, LOCK_NAME, cookie,
                                                      b"COMPARE AND WRITE", ctypes.byref(duration), 0)
            if result == 0:
                return cookie
            if result != -errno.EBUSY or time.monotonic() > deadline:
                raise OSError(-result, f"{self.name}: taking the compare and write lock: {os.strerror(-result)}")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _sector(self, offset: int, expected: bytes, data: bytes) -> int:
        """One librbd call inside one sector: the byte that differs, or -1 once written."""
        image = self._image
        if not image:
            raise OSError(errno.EBADF, f"{self.name}: the storage object is closed")
        mismatch = ctypes.c_uint64(0)
        result = self._rbd.rbd_compare_and_write(image, offset, len(expected), expected, data,
                                                 ctypes.byref(mismatch), 0)
        if result == -errno.EILSEQ:
            return mismatch.value % SECTOR
        if result < 0:
            raise OSError(-result, f"{self.name}: compare and write at {offset}: {os.strerror(-result)}")
        if result != len(expected):
            raise OSError(errno.EIO, f"{self.name}: short compare and write at {offset}: {result} of"
                          f" {len(expected)} bytes")
        return -1

    def close(self) -> None:
        """Close the image, the pool and the connection (idempotent)."""
        image, self._image = self._image, _void_p()
        ioctx, self._ioctx = self._ioctx, _void_p()
        cluster, self._cluster = self._cluster, _void_p()
        if image:
            self._rbd.rbd_close(image)
        if ioctx:
            self._rados.rados_ioctx_destroy(ioctx)
        if cluster:
            self._rados.rados_shutdown(cluster)

    def _check(self, result: int, what: str) -> None:
        if result < 0:
            raise OSError(-result, f"{self.name}: {what}: {os.strerror(-result)}")
