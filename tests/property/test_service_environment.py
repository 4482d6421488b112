"""The environment systemd passes is parsed without ever raising: WATCHDOG_USEC / WATCHDOG_PID
(sd_watchdog_enabled(3)), NOTIFY_SOCKET (sd_notify(3)) and JOURNAL_STREAM (systemd.exec(5))."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from odxtarget.logging_setup import stream_is_journal
from odxtarget.systemd import notify_address, watchdog_interval

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(usec=st.integers(min_value=1, max_value=2**63), pid=st.integers(min_value=1, max_value=2**22))
def test_a_positive_watchdog_usec_for_us_gives_half_of_it_in_seconds(usec, pid):
    assert watchdog_interval({"WATCHDOG_USEC": str(usec), "WATCHDOG_PID": str(pid)}, pid) == usec / 2 / 1_000_000
    assert watchdog_interval({"WATCHDOG_USEC": str(usec), "WATCHDOG_PID": str(pid + 1)}, pid) is None


@given(usec=TEXT, owner=st.none() | TEXT)
def test_any_watchdog_environment_gives_a_positive_interval_or_none(usec, owner):
    environment = {"WATCHDOG_USEC": usec} | ({"WATCHDOG_PID": owner} if owner is not None else {})
    interval = watchdog_interval(environment, 4242)
    assert interval is None or interval > 0


@given(name=TEXT)
def test_notify_addresses_keep_the_name(name):
    address = notify_address(name)
    if name.startswith("@"):
        assert address == b"\0" + name[1:].encode()
    else:
        assert address == name


@given(value=TEXT)
def test_a_journal_stream_value_matches_only_the_stream_it_names(value):
    with tempfile.TemporaryFile("w") as stream:
        status = os.fstat(stream.fileno())
        named = f"{status.st_dev}:{status.st_ino}"
        assert stream_is_journal(stream, {"JOURNAL_STREAM": named})
        assert stream_is_journal(stream, {"JOURNAL_STREAM": value}) is (value == named)
        assert stream_is_journal(stream, {"JOURNAL_STREAM": named + value}) is (value == "")
