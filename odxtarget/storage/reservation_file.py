"""One logical unit's persistent reservations on disk, for APTPL (SPC-4 5.13.5).

The SCSI core keeps reservations in memory and hands a JSON document to a
``ReservationStore`` (``odxtarget.scsi.pr_state``) before a PERSISTENT RESERVE OUT that
changes them completes. This is the daemon's store: ``<state_dir>/reservations/<LU name>.json``,
replaced by ``odxtarget.atomic_file.replace_file`` (temporary file in the same directory, fsync,
rename, fsync of the directory), so that after a crash or power loss the file holds the old
or the new state, never a torn one.
"""

from __future__ import annotations

import json
import os

from odxtarget.atomic_file import fsync_directory, replace_file

#: The document format the core writes (``PersistentReservations.to_document``).
FORMAT_VERSION = 1
DIRECTORY_NAME = "reservations"
#: Characters kept as they are in the file name; anything else is %XX-escaped.
_SAFE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def file_name_for(lu_name: str) -> str:
    """A single file name for any storage object name (no separators, no leading dot)."""
    safe = "".join(c if c in _SAFE_NAME_CHARACTERS else "".join(f"%{b:02X}" for b in c.encode())
                   for c in lu_name)
    if not safe or safe.startswith("."):
        safe = "%2E" + safe[1:] if safe else "%00"
    return f"{safe}.json"


class ReservationFile:
    """The ``ReservationStore`` of one LU: one JSON file."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def for_logical_unit(cls, state_dir: str, lu_name: str) -> "ReservationFile":
        return cls(os.path.join(state_dir, DIRECTORY_NAME, file_name_for(lu_name)))

    def load(self) -> dict | None:
        """The saved document, None when there is none; ValueError when it cannot be used."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.path}: {error}") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: not a version {FORMAT_VERSION} reservation file")
        return document

    def save(self, document: dict) -> None:
        """Temporary file, fsync, rename over the old file, fsync the directory."""
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        replace_file(self.path, json.dumps(document, indent=1, sort_keys=True))

    def remove(self) -> None:
        """Delete the file (APTPL turned off), durably."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_directory(os.path.dirname(self.path) or ".")
