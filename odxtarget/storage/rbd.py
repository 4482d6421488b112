"""A logical unit stored in a Ceph RBD image, through librbd (docs/rbd.md).

The bindings are Debian's ``python3-rados`` and ``python3-rbd``; scripts/setup links them into
the virtualenv. They are imported when an RBD storage object is opened, so a daemon without
RBD storage objects never needs them.

Each backend opens its own cluster connection with librbd's cache off: a write is complete
when every replica has committed it, so it is durable when acknowledged (FUA needs nothing
more) and every gateway that serves the image reads what any other wrote. Discards zero
partial objects too (``rbd_skip_partial_discard`` off), so deallocated blocks read as zeros
(LBPRZ=1). Every call blocks, and runs on the front end's worker threads (docs/execution.md).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Hashable
from typing import Any, Protocol

from odxtarget.storage.backend import AllocationRun, WriteBackError
from odxtarget.storage.range_lock import RangeLock
from odxtarget.storage.rbd_compare import ImageCompareAndWrite
from odxtarget.storage.work import StorageCall, StorageWork

log = logging.getLogger(__name__)

#: Seconds to reach the cluster before opening fails (the monitors are unreachable).
CONNECT_TIMEOUT_SECONDS = 10
#: librbd settings every gateway needs (module docstring). ``client_mount_timeout`` bounds the
#: connect even when a monitor accepts the connection but never answers (a hung monitor), which
#: ``Rados.connect(timeout=...)`` alone does not.
CLIENT_SETTINGS = {"rbd_cache": "false", "rbd_skip_partial_discard": "false",
                   "client_mount_timeout": str(CONNECT_TIMEOUT_SECONDS)}


class RbdSpec(Protocol):
    """Where an image is: the storage layer's view of the configuration's ``rbd`` section."""

    pool: str
    image: str
    conf: str                  # ceph.conf path: the monitors, and the keyring unless given
    client: str                # the cephx user's id, without "client."
    keyring: str | None


class RbdBackend:
    """``Backend`` over one RBD image (``odxtarget.storage.backend``)."""

    def __init__(self, spec: RbdSpec, size: int, read_only: bool = False):
        try:
            import rados
            import rbd
        except ImportError as error:
            raise OSError(errno.ENOSYS, f"the Ceph Python bindings are not installed ({error}); "
                          "install python3-rados and python3-rbd and run scripts/setup") from None
        self._rbd = rbd
        self._spec = spec
        self._size = size
        self._read_only = read_only
        self._ranges = RangeLock()
        self._close_lock = threading.Lock()
        self._write_back_error: OSError | None = None
        self._compare_and_write: ImageCompareAndWrite | None = None
        where = self.name = f"rbd image {spec.pool}/{spec.image}"
        self._cluster: Any = None
        self._ioctx: Any = None
        self._image: Any = None
        try:
            self._cluster = connect(spec)
            self._ioctx = self._cluster.open_ioctx(spec.pool)
            self._image = rbd.Image(self._ioctx, spec.image, read_only=read_only)
            image_size = self._image.size()
        except (rados.Error, rbd.Error) as error:
            self.close()
            raise OSError(errno_of(error), f"{where}: {error}") from None
        if image_size < size:
            self.close()
            raise ValueError(f"{where} holds {image_size} bytes, less than the storage object's {size}")

    # -- Backend ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def lane(self) -> Hashable:
        """One pool of workers per cluster and pool: its OSDs are the device."""
        return ("rbd", self._spec.conf, self._spec.pool)

    @property
    def can_deallocate(self) -> bool:
        return True

    @property
    def write_back_error(self) -> OSError | None:
        """The failed flush that put this backend in write-back failed state, or None."""
        return self._write_back_error

    def read_into(self, offset: int, buf: memoryview) -> None:
        self._check_range(offset, len(buf))
        if not len(buf):
            return
        data = self._call(self._opened().read, offset, len(buf))
        if len(data) != len(buf):
            raise OSError(errno.EIO, f"{self.name}: short read at {offset}: {len(data)} of {len(buf)} bytes")
        buf[:] = data

    def read_work(self, offset: int, buf: bytearray | memoryview) -> StorageWork:
        view = buf if isinstance(buf, memoryview) else memoryview(buf)
        return StorageCall(self.lane, self.read_into, (offset, view))

    def write_work(self, offset: int, data: memoryview | bytes, fua: bool = False) -> StorageWork:
        return StorageCall(self.lane, self.write, (offset, data, fua))

    def try_read_into(self, offset: int, buf: memoryview) -> bool:
        """Nothing is cached on the gateway: every read goes to the cluster."""
        return False

    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        """A write is durable once librbd completes it (cache off), so FUA adds nothing."""
        self._refuse_if_read_only()
        self._check_range(offset, len(data))
        with self._ranges.shared(offset, len(data)):
            self._write(offset, data)

    def _write(self, offset: int, data: memoryview | bytes) -> None:
        payload = data if type(data) is bytes else bytes(data)
        if not payload:
            return
        written = self._call(self._opened().write, payload, offset)
        if written != len(payload):
            raise OSError(errno.EIO, f"{self.name}: short write at {offset}: {written} of {len(payload)} bytes")

    def compare_and_write(self, offset: int, expected: memoryview, data: memoryview, fua: bool = False) -> int:
        """SBC-4 5.3 through librbd's compare-and-write, which the OSDs apply atomically against
        the writes of every gateway (odxtarget.storage.rbd_compare); under the range lock, so
        no write through this backend touches the range meanwhile either."""
        self._refuse_if_read_only()
        length = max(len(expected), len(data))
        self._check_range(offset, length)
        with self._ranges.exclusive(offset, length):
            return self._compare_and_write_handle().compare_and_write(offset, bytes(expected), bytes(data))

    def _compare_and_write_handle(self) -> ImageCompareAndWrite:
        """The image's compare-and-write handle, opened at the first COMPARE AND WRITE."""
        with self._close_lock:
            if self._image is None:
                raise OSError(errno.EBADF, f"{self.name}: the storage object is closed")
            if self._compare_and_write is None:
                spec = self._spec
                self._compare_and_write = ImageCompareAndWrite(spec.conf, spec.client, spec.pool, spec.image,
                                                               client_settings(spec))
            return self._compare_and_write

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """librbd's flush (cache off, it waits for writes still in flight). A failure is
        sticky: it may mean acknowledged writes are lost (docs/errors.md)."""
        if self._write_back_error is not None:
            raise WriteBackError(self._write_back_error.errno, str(self._write_back_error))
        try:
            self._call(self._opened().flush)
        except OSError as error:
            failure = WriteBackError(error.errno, f"{self.name}: flush failed: {error.strerror or error}")
            self._write_back_error = failure
            raise failure from None

    def deallocate(self, offset: int, length: int) -> None:
        self._refuse_if_read_only()
        self._check_range(offset, length)
        if length:
            with self._ranges.shared(offset, length):
                self._call(self._opened().discard, offset, length)

    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        """Mapped runs as librbd reports the image's data extents (object granularity where
        the image has no object map)."""
        self._check_range(offset, length)
        end = offset + length
        extents: list[tuple[int, int]] = []

        def found(start: int, size: int, exists: bool) -> int:
            if exists:
                extents.append((max(start, offset), min(start + size, end)))
            return 0

        self._call(self._opened().diff_iterate, offset, length, None, found, True, False)
        runs: list[AllocationRun] = []
        position = offset
        for start, stop in sorted(extents):
            if stop <= position:
                continue
            if start > position:
                runs.append(AllocationRun(position, start - position, False))
                position = start
            if runs and runs[-1].mapped and runs[-1].offset + runs[-1].length == position:
                previous = runs.pop()
                runs.append(AllocationRun(previous.offset, stop - previous.offset, True))
            else:
                runs.append(AllocationRun(position, stop - position, True))
            position = stop
        if position < end:
            runs.append(AllocationRun(position, end - position, False))
        return runs

    # -- RADOS access for cluster ROD tokens (odxtarget.storage.rbd_snapshots) ---------------

    @property
    def spec(self) -> RbdSpec:
        return self._spec

    def open_ioctx(self, pool: str, namespace: str = "") -> Any:
        """A new I/O context on this backend's cluster connection, for ``pool`` and
        ``namespace``; the caller closes it. EBADF once the backend is closed."""
        cluster = self._cluster
        if cluster is None:
            raise OSError(errno.EBADF, f"{self.name}: the storage object is closed")
        try:
            ioctx = cluster.open_ioctx(pool)
        except Exception as error:      # rados.Error: the bindings are imported lazily
            raise OSError(errno_of(error), f"rados pool {pool}: {error}") from None
        ioctx.set_namespace(namespace)
        return ioctx

    def close(self) -> None:
        """Close the image and the cluster connection (writes are already durable)."""
        with self._close_lock:
            image, ioctx, cluster = self._image, self._ioctx, self._cluster
            self._image = self._ioctx = self._cluster = None
            compare_and_write, self._compare_and_write = self._compare_and_write, None
        for release in (compare_and_write and compare_and_write.close, image and image.close,
                        ioctx and ioctx.close, cluster and cluster.shutdown):
            if release:
                try:
                    release()
                except Exception as error:      # closing must not fail a shutdown
                    log.warning("%s: closing: %s", self._spec.image, error)

    # -- helpers ------------------------------------------------------------------------------

    def _opened(self) -> Any:
        """The open image; EBADF once the backend is closed."""
        image = self._image
        if image is None:
            raise OSError(errno.EBADF, f"{self.name}: the storage object is closed")
        return image

    def _call(self, method: Any, *arguments: Any) -> Any:
        """Call librbd, turning its exceptions into ``OSError`` with the errno it carries."""
        try:
            return method(*arguments)
        except self._rbd.Error as error:
            raise OSError(errno_of(error), f"{self.name}: {error}") from None

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise OSError(errno.EINVAL, f"{self.name}: bytes [{offset}, {offset + length}) lie outside"
                          f" its {self._size} bytes")

    def _refuse_if_read_only(self) -> None:
        if self._read_only:
            raise OSError(errno.EROFS, "write refused: the logical unit is read-only")


def client_settings(spec: RbdSpec) -> dict[str, str]:
    """The librados/librbd settings of every connection a gateway makes (``CLIENT_SETTINGS``,
    and the spec's keyring)."""
    return dict(CLIENT_SETTINGS, **({"keyring": spec.keyring} if spec.keyring else {}))


def connect(spec: RbdSpec) -> Any:
    """A connected ``rados.Rados`` for ``spec``'s cluster and user; raises ``rados.Error``."""
    import rados

    cluster = rados.Rados(conffile=spec.conf, rados_id=spec.client, conf=client_settings(spec))
    try:
        cluster.connect(timeout=CONNECT_TIMEOUT_SECONDS)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def errno_of(error: BaseException) -> int:
    """The errno a rados/rbd exception carries (EIO when it has none)."""
    code = getattr(error, "errno", None)
    return abs(code) if isinstance(code, int) and code else errno.EIO
