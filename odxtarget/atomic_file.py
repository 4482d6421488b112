"""Replacing a small file so that after a crash or power loss it holds the old or the new
content, never a torn mix, and the replacement itself survives.

rename(2) over the target is atomic within one filesystem, but neither it nor the file's own
fsync(2) makes the new directory entry durable: that takes an fsync of the directory. So:
write a temporary file in the target's directory, fsync it, rename it over the target, fsync
the directory. Every file odxtarget rewrites in place (the configuration, persistent
reservations) goes through ``replace_file``.
"""

from __future__ import annotations

import os
import tempfile


def replace_file(path: str, data: str | bytes) -> None:
    """Atomically and durably make ``path`` hold ``data`` (a str is written as UTF-8).

    The file gets mode 0600 whatever the old one had: what odxtarget writes this way holds
    CHAP secrets or reservation keys.

    Raises:
        OSError: the write or the rename failed (``path`` is unchanged and no temporary file
            is left), or the directory fsync failed (``path`` is replaced, but a crash may
            still bring back the old content).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )  # mkstemp: O_EXCL, mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make a rename, creation or unlink in ``directory`` durable (a file's fsync does not)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
