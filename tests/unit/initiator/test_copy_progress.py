"""odxtarget copy's progress display: a tqdm bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from odxtarget.initiator.progress import (BarProgress, LineProgress, human_bytes, progress_for)

GIB = 1 << 30
MIB = 1 << 20


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_human_bytes_uses_binary_units():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 * 1024, GIB, 3 * (1 << 40) // 2)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 MiB", "1.0 GiB", "1.5 TiB"]


def test_plain_lines_come_once_per_interval_with_rate_and_eta():
    stream, clock = io.StringIO(), Clock()
    progress = LineProgress(GIB, stream, 10.0, clock=clock)
    clock.now += 4
    progress.update(100 * MIB)
    assert stream.getvalue() == ""                     # not yet ten seconds
    clock.now += 6
    progress.update(256 * MIB)
    assert stream.getvalue() == "odxtarget copy: 256.0 MiB of 1.0 GiB (25%), 25.6 MiB/s, ETA 00:30\n"
    clock.now += 1
    progress.update(300 * MIB)
    progress.finish(GIB)
    assert stream.getvalue().count("\n") == 1          # no last line unless asked


def test_requested_progress_adds_a_last_line():
    stream, clock = io.StringIO(), Clock()
    progress = LineProgress(8 * MIB, stream, 1.0, final_line=True, clock=clock)
    clock.now += 2
    progress.finish(8 * MIB)
    assert stream.getvalue() == "odxtarget copy: 8.0 MiB of 8.0 MiB (100%), 4.0 MiB/s, ETA 00:00\n"


def test_a_terminal_gets_a_bar_with_sizes_and_eta():
    terminal = Terminal()
    progress = progress_for(GIB, stream=terminal)
    assert isinstance(progress, BarProgress)
    progress.update(GIB // 2)
    progress.finish(GIB)
    shown = terminal.getvalue()
    assert "1.00GiB/1.00GiB" in shown and "100%" in shown and "iB/s" in shown


def test_elsewhere_plain_lines():
    assert isinstance(progress_for(GIB, stream=io.StringIO()), LineProgress)
    requested = progress_for(GIB, stream=io.StringIO(), requested=True)
    assert isinstance(requested, LineProgress) and requested.final_line and requested.interval == 1.0
