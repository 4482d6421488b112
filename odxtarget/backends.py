"""Storage objects of the configuration, opened as the storage layer's backends.

The one place that knows both the configuration model and the backend classes: the storage
layer never imports the configuration (it declares what it needs as ``ExtentSpec`` and
``RbdSpec``, and a block device by its path), and the daemon and the admin interface open
storage only through here.
"""

from __future__ import annotations

from odxtarget.config import StorageObjectConfig
from odxtarget.storage.block import BlockDeviceBackend
from odxtarget.storage.extents import FileExtentBackend
from odxtarget.storage.rbd import RbdBackend

#: What a storage object opens to: its file extents, its block device (a ``FileExtentBackend``
#: too) or its RBD image (each a ``storage.Backend``).
StorageBackend = FileExtentBackend | RbdBackend


def open_backend(so: StorageObjectConfig) -> StorageBackend:
    """Open a storage object's storage: its RBD image (docs/rbd.md), its block device
    (docs/block.md), or its file extents (sparse files are created as needed).

    Raises:
        OSError: the storage cannot be opened; ValueError: it is smaller than the object
            (or a device's sector is larger than its block).
    """
    if so.rbd is not None:
        return RbdBackend(so.rbd, so.size, read_only=so.read_only)
    if so.block is not None:
        return BlockDeviceBackend(so.block.path, so.size, block_size=so.block_size, read_only=so.read_only)
    return FileExtentBackend(so.extents, so.size, read_only=so.read_only)
