"""One place that decides what the daemon's log lines look like.

Every line carries a timestamp (local time, milliseconds), the level and the logger name, so
a line from ``odxtarget.transport.iscsi.server`` can be told from one of ``odxtarget.scsi``.

Log messages quote what initiators send (names, aliases, text keys), and every initiator is
untrusted (docs/security.md): the formatter escapes control characters, so no peer can end a
line early, forge the next one or send terminal escape sequences to an operator's console.
Tracebacks, which the formatter appends after the message, keep their line breaks.
"""

from __future__ import annotations

import logging
import re
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


#: C0 and C1 control characters and DEL: everything that can move a terminal's cursor or end a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_control(text: str) -> str:
    """``text`` with each control character written as a ``\\xNN`` escape."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class EscapingFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose message part never holds a raw control character."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)


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
    handler.setFormatter(EscapingFormatter(LOG_FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)


def set_level(level: str) -> None:
    """Change the level after ``configure_logging`` (the config file may name another)."""
    logging.getLogger().setLevel(LEVELS[level.lower()])
