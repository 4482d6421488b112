"""One place that decides what the daemon's log lines look like.

Every line carries a timestamp (local time, milliseconds), the level and the logger name, so
a line from ``odxtarget.transport.iscsi.server`` can be told from one of ``odxtarget.scsi``.

Under systemd, when stderr is the journal (``JOURNAL_STREAM`` names its device and inode,
systemd.exec(5)), journald stamps each line itself: lines carry no timestamp, and start with
the record's syslog priority as ``<N>`` (sd-daemon(3)), so ``journalctl -p warning`` filters
them. Every line of a record carries the prefix, tracebacks included.

Log messages quote what initiators send (names, aliases, text keys), and every initiator is
untrusted (docs/security.md): the formatter escapes control characters, so no peer can end a
line early, forge the next one or send terminal escape sequences to an operator's console.
Tracebacks, which the formatter appends after the message, keep their line breaks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import TextIO

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: The journal adds the time and the priority (the ``<N>`` prefix) itself.
JOURNAL_FORMAT = "%(name)s: %(message)s"
JOURNAL_STREAM = "JOURNAL_STREAM"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


#: ``JOURNAL_STREAM``: the device and inode numbers in decimal (systemd.exec(5)).
_JOURNAL_STREAM_VALUE = re.compile(r"[0-9]+:[0-9]+")

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


def syslog_priority(levelno: int) -> int:
    """The syslog(3) priority of a logging level: LOG_DEBUG 7, LOG_INFO 6, LOG_WARNING 4,
    LOG_ERR 3, LOG_CRIT 2 (levels in between take the next more severe one)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(EscapingFormatter):
    """``<N>logger: message``, each line of the record prefixed with its syslog priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stream_is_journal(stream: TextIO, environment: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal's stream socket: ``JOURNAL_STREAM`` is
    ``DEVICE:INODE`` of the stream systemd connected stdout/stderr to (systemd.exec(5))."""
    value = (os.environ if environment is None else environment).get(JOURNAL_STREAM, "")
    if _JOURNAL_STREAM_VALUE.fullmatch(value) is None:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):  # closed, or no file descriptor (StringIO)
        return False
    return value == f"{status.st_dev}:{status.st_ino}"


def formatter_for(stream: TextIO, environment: Mapping[str, str] | None = None) -> logging.Formatter:
    """The journal's format when ``stream`` is the journal, the timestamped one otherwise."""
    if stream_is_journal(stream, environment):
        return JournalFormatter()
    return EscapingFormatter(LOG_FORMAT, DATE_FORMAT)


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
    stream = stream if stream is not None else sys.stderr
    handler = _OdxtargetHandler(stream)
    handler.setFormatter(formatter_for(stream))
    root.addHandler(handler)
    root.setLevel(numeric)


def set_level(level: str) -> None:
    """Change the level after ``configure_logging`` (the config file may name another, and an
    admin may change it live: docs/deployment.md, "Log level").

    Raises:
        ValueError: ``level`` is not one of debug, info, warning, error, critical.
    """
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})") from None
    logging.getLogger().setLevel(numeric)


def current_level() -> str:
    """The root logger's level, as its name in ``LEVELS``."""
    numeric = logging.getLogger().getEffectiveLevel()
    return next((name for name, value in LEVELS.items() if value == numeric), logging.getLevelName(numeric).lower())
