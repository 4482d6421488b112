"""saveconfig / restoreconfig / clearconfig on disk: atomic writes and dated backups.

``save`` writes the running configuration over the file the daemon was started with (so the
next start loads it), after copying the previous file to ``<dir>/backup/<name>-<UTC time>.json``
(mode 0600, the newest ``MAX_BACKUPS`` kept). The write itself is ``config.save_config``'s,
``odxtarget.atomic_file.replace_file``: temporary file in the same directory, fsync, rename,
fsync of the directory, mode 0600.
"""

from __future__ import annotations

import datetime
import os
import shutil

from odxtarget.admin.protocol import AdminError
from odxtarget.atomic_file import fsync_directory
from odxtarget.config import DaemonConfig, save_config

BACKUP_DIRECTORY = "backup"
#: Backups kept per config file (targetcli keeps 10 by default, ``max_backup_files``).
MAX_BACKUPS = 10
BACKUP_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


def backup_directory(config_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), BACKUP_DIRECTORY)


def list_backups(config_path: str) -> list[str]:
    """Backups of ``config_path``, oldest first (the names sort by time)."""
    directory = backup_directory(config_path)
    stem = os.path.splitext(os.path.basename(config_path))[0] + "-"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in sorted(names)
            if name.startswith(stem) and name.endswith(".json")]


def backup(config_path: str, now: datetime.datetime | None = None) -> str | None:
    """Copy the current file to the backup directory; None when there is no file yet."""
    if not os.path.exists(config_path):
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory = backup_directory(config_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stem = os.path.splitext(os.path.basename(config_path))[0]
    destination = os.path.join(directory, f"{stem}-{now.strftime(BACKUP_TIME_FORMAT)}.json")
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "wb") as target, open(config_path, "rb") as source:
        shutil.copyfileobj(source, target)
        target.flush()
        os.fsync(target.fileno())
    fsync_directory(directory)
    for old in list_backups(config_path)[:-MAX_BACKUPS]:
        try:
            os.unlink(old)
        except OSError:
            pass
    return destination


def save(config: DaemonConfig, config_path: str) -> dict[str, str | None]:
    """Back up the old file, then write ``config`` atomically with mode 0600.

    Raises:
        AdminError: the file or its backup cannot be written (nothing is half-written).
    """
    try:
        saved_backup = backup(config_path)
        save_config(config, config_path)
    except OSError as error:
        raise AdminError(f"cannot save to {config_path}: {error.strerror or error}") from None
    return {"path": config_path, "backup": saved_backup}
