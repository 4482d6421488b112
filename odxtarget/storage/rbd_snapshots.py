"""RBD snapshots and RADOS token records: the storage side of cluster ROD tokens.

Theory of operation
-------------------
A ROD token made on a logical unit stored in an RBD image is an RBD snapshot of the image
plus a record object in RADOS (docs/rbd.md, "ROD tokens across gateways"); the records live in
the namespace ``odxtarget.rod`` of the image's pool, one small object per token, so listing
them never lists image data. Every change of a record is one atomic RADOS operation:

* creation is an exclusive create (``LIBRADOS_CREATE_EXCLUSIVE``): two gateways can never
  issue the same token identifier;
* every update and removal asserts the object version it read (``assert_version``), so two
  gateways that race (a copy extending its lease, another's garbage collection claiming the
  expired token) cannot both win: the loser sees ``RecordChanged`` and reads again.

The record is written before the snapshot is taken and marked dead before the snapshot is
removed, so a snapshot named ``odx-rod-<id>`` without a live record is always garbage, whatever
gateway crashed when (``orphan_snapshots``).

``SnapshotEndpoint`` is the ``CopyEndpoint`` (``storage.copy_work``) a copy reads a token's
data from: the image opened read-only at the snapshot, for one step at a time.

Every function here blocks on the cluster and runs on a worker (docs/execution.md). Errors
are ``OSError`` with the errno librados/librbd reported.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol, runtime_checkable

from odxtarget.storage.backend import FileRange
from odxtarget.storage.rbd import errno_of

#: Versions a record read carries, for the next conditional update.
RecordVersion = int
#: errnos of a failed ``assert_version`` (the object is older, or newer, than asserted).
_VERSION_MISMATCH = (errno.ERANGE, errno.EOVERFLOW)


class RecordChanged(OSError):
    """The record changed (or went) since it was read: read it again."""


@runtime_checkable
class RadosBacked(Protocol):
    """A backend in an RBD image that lends its cluster connection (``RbdBackend``)."""

    @property
    def spec(self) -> Any:
        """The image's ``RbdSpec``: ``pool``, ``image``, ``conf``."""

    @property
    def lane(self) -> Hashable: ...

    def open_ioctx(self, pool: str, namespace: str = "") -> Any:
        """A new I/O context on the backend's cluster connection; the caller closes it."""


@contextmanager
def _ioctx(backend: RadosBacked, pool: str, namespace: str = "") -> Iterator[Any]:
    ioctx = backend.open_ioctx(pool, namespace)
    try:
        yield ioctx
    finally:
        ioctx.close()


def _librados_call(what: str, function: Callable[..., Any], *arguments: Any, **options: Any) -> Any:
    try:
        return function(*arguments, **options)
    except OSError:
        raise
    except Exception as error:      # rados.Error / rbd.Error carry an errno
        code = errno_of(error)
        if code in _VERSION_MISMATCH:
            raise RecordChanged(code, f"{what}: changed since it was read") from None
        raise OSError(code, f"{what}: {error}") from None


# -- records ------------------------------------------------------------------------------------

class RecordStore:
    """The token records of one pool, through ``backend``'s cluster connection."""

    def __init__(self, backend: RadosBacked, pool: str, namespace: str, max_bytes: int):
        self.backend = backend
        self.pool = pool
        self.namespace = namespace
        self.max_bytes = max_bytes

    def create(self, name: str, data: bytes) -> None:
        """Write a new record; ``FileExistsError`` (EEXIST) if one of that name exists."""
        import rados

        with _ioctx(self.backend, self.pool, self.namespace) as ioctx:
            with rados.WriteOpCtx() as operation:
                operation.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                operation.write_full(data)
                _librados_call(f"token record {name}", ioctx.operate_write_op, operation, name)

    def read(self, name: str) -> tuple[bytes, RecordVersion] | None:
        """The record and its object version, or None when it does not exist."""
        with _ioctx(self.backend, self.pool, self.namespace) as ioctx:
            try:
                data = _librados_call(f"token record {name}", ioctx.read, name, self.max_bytes)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    return None
                raise
            return bytes(data), ioctx.get_last_version()

    def replace(self, name: str, data: bytes, version: RecordVersion) -> None:
        """Overwrite the record if it is still at ``version``; else ``RecordChanged``."""
        import rados

        with _ioctx(self.backend, self.pool, self.namespace) as ioctx:
            with rados.WriteOpCtx() as operation:
                operation.assert_version(version)
                operation.write_full(data)
                self._operate(ioctx, operation, name)

    def remove(self, name: str, version: RecordVersion) -> None:
        """Remove the record if it is still at ``version``; else ``RecordChanged``."""
        import rados

        with _ioctx(self.backend, self.pool, self.namespace) as ioctx:
            with rados.WriteOpCtx() as operation:
                operation.assert_version(version)
                operation.remove()
                self._operate(ioctx, operation, name)

    @staticmethod
    def _operate(ioctx: Any, operation: Any, name: str) -> None:
        try:
            _librados_call(f"token record {name}", ioctx.operate_write_op, operation, name)
        except OSError as error:
            if error.errno == errno.ENOENT:
                raise RecordChanged(errno.ENOENT, f"token record {name}: gone") from None
            raise

    def names(self) -> list[str]:
        """Every object in the namespace."""
        with _ioctx(self.backend, self.pool, self.namespace) as ioctx:
            return [entry.key for entry in _librados_call("token records", ioctx.list_objects)]


# -- snapshots ----------------------------------------------------------------------------------

@contextmanager
def _image(backend: RadosBacked, pool: str, image: str, **options: Any) -> Iterator[Any]:
    import rbd

    with _ioctx(backend, pool) as ioctx:
        handle = _librados_call(f"rbd image {pool}/{image}", rbd.Image, ioctx, image, **options)
        try:
            yield handle
        finally:
            handle.close()


def create_snapshot(backend: RadosBacked, pool: str, image: str, snapshot: str) -> None:
    """Take ``snapshot`` of the image."""
    with _image(backend, pool, image) as handle:
        _librados_call(f"rbd image {pool}/{image}: snapshot {snapshot}", handle.create_snap, snapshot)


def remove_snapshot(backend: RadosBacked, pool: str, image: str, snapshot: str) -> bool:
    """Remove ``snapshot``; False when it (or the image) does not exist."""
    try:
        with _image(backend, pool, image) as handle:
            _librados_call(f"rbd image {pool}/{image}: snapshot {snapshot}", handle.remove_snap, snapshot)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return True


def snapshot_names(backend: RadosBacked, pool: str, image: str) -> list[str]:
    """The names of the image's snapshots."""
    with _image(backend, pool, image, read_only=True) as handle:
        return [snap["name"] for snap in _librados_call(f"rbd image {pool}/{image}", handle.list_snaps)]


def image_size(backend: RadosBacked, pool: str, image: str) -> int:
    with _image(backend, pool, image, read_only=True) as handle:
        return _librados_call(f"rbd image {pool}/{image}", handle.size)


class SnapshotEndpoint:
    """A ``CopyEndpoint`` (``storage.copy_work``): a snapshot of an RBD image, at image byte
    offsets, read-only. Each step opens the image at the snapshot, after ``on_open`` (the
    copy's lease on the token, ``cluster_tokens``), and closes it when done."""

    __slots__ = ("backend", "pool", "image", "snapshot", "on_open", "_handle")

    def __init__(self, backend: RadosBacked, pool: str, image: str, snapshot: str,
                 on_open: Callable[[], None] = lambda: None):
        self.backend = backend
        self.pool = pool
        self.image = image
        self.snapshot = snapshot
        self.on_open = on_open
        self._handle: Any = None

    @contextmanager
    def opened(self) -> Iterator[None]:
        self.on_open()
        with _image(self.backend, self.pool, self.image, snapshot=self.snapshot, read_only=True) as handle:
            self._handle = handle
            try:
                yield
            finally:
                self._handle = None

    def file_ranges(self, offset: int, length: int) -> list[FileRange] | None:
        return None

    def read(self, offset: int, view: memoryview) -> None:
        where = f"rbd image {self.pool}/{self.image}@{self.snapshot}"
        data = _librados_call(where, self._handle.read, offset, len(view))
        if len(data) != len(view):
            raise OSError(errno.EIO, f"{where}: short read at {offset}: {len(data)} of {len(view)} bytes")
        view[:] = data

    def write(self, offset: int, view: memoryview) -> None:
        raise OSError(errno.EROFS, f"rbd image {self.pool}/{self.image}@{self.snapshot} is a snapshot")

    def writing(self, offset: int, length: int) -> AbstractContextManager[None]:
        return nullcontext()

    def identity(self) -> Hashable:
        return ("rbd-snapshot", self.pool, self.image, self.snapshot)
