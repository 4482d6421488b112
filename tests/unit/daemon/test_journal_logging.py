"""Log lines under journald (odxtarget.logging_setup): ``<N>`` syslog priorities, no timestamps,
chosen only when stderr really is the stream ``JOURNAL_STREAM`` names (systemd.exec(5))."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from odxtarget.logging_setup import (
    EscapingFormatter,
    JournalFormatter,
    configure_logging,
    formatter_for,
    stream_is_journal,
    syslog_priority,
)

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(autouse=True)
def restore_root_logger():
    """configure_logging changes the root logger: give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(level: int, message: str, name: str = "odxtarget.test", exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), exc_info)


@pytest.mark.parametrize("level, priority", [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
    (logging.CRITICAL, 2), (logging.INFO + 5, 6), (logging.ERROR + 1, 3),
])
def test_logging_levels_map_to_syslog_priorities(level, priority):
    assert syslog_priority(level) == priority


def test_a_journal_line_is_priority_logger_message_without_a_timestamp():
    line = JournalFormatter().format(record(logging.WARNING, "storage object \"a\": slow"))
    assert line == '<4>odxtarget.test: storage object "a": slow'


def test_every_line_of_a_traceback_carries_the_priority():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys
        exc_info = sys.exc_info()
    lines = JournalFormatter().format(record(logging.ERROR, "copy failed", exc_info=exc_info)).split("\n")
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[0] == "<3>odxtarget.test: copy failed"
    assert lines[-1] == "<3>RuntimeError: boom"


def test_control_characters_from_initiators_are_escaped_in_journal_lines_too():
    line = JournalFormatter().format(record(logging.INFO, "alias evil\n<3>forged"))
    assert "\n" not in line
    assert line == "<6>odxtarget.test: alias evil\\x0a<3>forged"


def test_the_journal_is_recognised_by_the_device_and_inode_of_the_stream(tmp_path):
    with open(tmp_path / "stderr", "w") as stream, open(tmp_path / "other", "w") as other:
        status = os.fstat(stream.fileno())
        environment = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert stream_is_journal(stream, environment)
        assert not stream_is_journal(other, environment)    # inherited by a redirected process
        assert not stream_is_journal(stream, {})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(io.StringIO(), environment)    # no file descriptor
        assert isinstance(formatter_for(stream, environment), JournalFormatter)
        assert not isinstance(formatter_for(other, environment), JournalFormatter)
        assert isinstance(formatter_for(other, environment), EscapingFormatter)


def test_configure_logging_writes_journal_lines_when_stderr_is_the_journal(tmp_path, monkeypatch):
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        status = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        configure_logging("info", stream)
        logging.getLogger("odxtarget.daemon").info("listening on 127.0.0.1:3260")
        logging.getLogger("odxtarget.daemon").debug("not shown")
    assert path.read_text() == "<6>odxtarget.daemon: listening on 127.0.0.1:3260\n"


def test_without_the_journal_lines_keep_their_timestamp_and_level(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    configure_logging("info", stream)
    logging.getLogger("odxtarget.daemon").warning("port in use")
    line = stream.getvalue()
    assert TIMESTAMP.match(line)
    assert line.rstrip().endswith("WARNING odxtarget.daemon: port in use")
    assert not line.startswith("<")
