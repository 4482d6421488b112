"""What the storage layer needs to know about one extent of a logical unit.

A structural type, so that storage does not depend on the configuration: the configuration's
``ExtentConfig`` satisfies it, and so does any object with these three attributes.
"""

from __future__ import annotations

from typing import Protocol


class ExtentSpec(Protocol):
    """A byte range of a file that holds the next bytes of a logical unit."""

    @property
    def path(self) -> str:
        """The file (absolute: the configuration loader resolves relative paths)."""

    @property
    def offset(self) -> int:
        """Where the range starts in the file."""

    @property
    def length(self) -> int | None:
        """How many bytes of the LU it holds; None on the last extent: the rest of the LU."""
