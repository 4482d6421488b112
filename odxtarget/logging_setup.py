"""One place that decides what the daemon's log lines look like.

Every line carries a timestamp (local time, milliseconds), the level and the logger name, so
a line from ``odxtarget.transport.iscsi.server`` can be told from one of ``odxtarget.scsi``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _OdxtargetHandler(logging.StreamHandler):
    """Marks the handler we installed, so configuring twice replaces it instead of doubling."""


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send log records at ``level`` and above to ``stream`` (stderr by default).

    Raises:
        ValueError: ``level`` is not one of debug, info, warning, error, critical.
    """
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})") from None
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _OdxtargetHandler)]:
        root.removeHandler(handler)
    handler = _OdxtargetHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)


def set_level(level: str) -> None:
    """Change the level after ``configure_logging`` (the config file may name another)."""
    logging.getLogger().setLevel(LEVELS[level.lower()])
