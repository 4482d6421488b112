"""How ``odxtarget copy`` shows its progress on stderr (docs/odx.md, "odxtarget copy").

On a terminal, a tqdm bar: bytes done of the total in binary units, rate and ETA, redrawn in
place. Anywhere else (a log file, a pipe, systemd's journal), one plain line per interval,
so a log keeps a readable history instead of carriage returns::

    odxtarget copy: 256.0 MiB of 1.0 GiB (25%), 98.2 MiB/s, ETA 00:08

With ``--progress`` the lines come every second, and once more at the end.
``NoProgress`` shows nothing (what library callers of ``copy_range`` get by default). All
three take the bytes done so far; none changes the copy.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from tqdm import tqdm

#: Seconds between plain lines when stderr is not a terminal.
PLAIN_INTERVAL = 10.0
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
#: tqdm's default bar with the unit on the sizes too: 512MiB/1.00GiB, rate, elapsed<ETA.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}iB/{total_fmt}iB [{elapsed}<{remaining}, {rate_fmt}]"


def human_bytes(count: float) -> str:
    """``count`` bytes in binary units with one decimal (IEC 80000-13): 1.5 GiB, 512 B."""
    if count < 1024:
        return f"{int(count)} B"
    for unit in BINARY_UNITS[1:]:
        count /= 1024
        if count < 1024 or unit == BINARY_UNITS[-1]:
            return f"{count:.1f} {unit}"
    raise AssertionError("unreachable")


def format_eta(seconds: float) -> str:
    return tqdm.format_interval(seconds)


class ProgressDisplay(Protocol):
    """What the copier reports to: the bytes done so far, and once at the end."""

    def update(self, done_bytes: int) -> None: ...

    def finish(self, done_bytes: int) -> None: ...


class NoProgress:
    def update(self, done_bytes: int) -> None:
        pass

    def finish(self, done_bytes: int) -> None:
        pass


class BarProgress:
    """A tqdm bar on a terminal: done/total in KiB/MiB/GiB, rate and ETA."""

    def __init__(self, total_bytes: int, stream: TextIO) -> None:
        self._bar = tqdm(total=total_bytes, unit="iB", unit_scale=True, unit_divisor=1024, file=stream,
                         dynamic_ncols=True, leave=True, desc="odxtarget copy", bar_format=BAR_FORMAT)
        self._shown = 0

    def update(self, done_bytes: int) -> None:
        self._bar.update(done_bytes - self._shown)
        self._shown = done_bytes

    def finish(self, done_bytes: int) -> None:
        self.update(done_bytes)
        self._bar.close()


class LineProgress:
    """A plain line every ``interval`` seconds, for a stderr that is not a terminal."""

    def __init__(self, total_bytes: int, stream: TextIO, interval: float = PLAIN_INTERVAL, *,
                 final_line: bool = False, clock=time.monotonic) -> None:
        self.total = total_bytes
        self.stream = stream
        self.interval = interval
        self.final_line = final_line
        self._clock = clock
        self.started = clock()
        self._next = self.started + interval

    def line(self, done_bytes: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = done_bytes / elapsed
        percent = 100 * done_bytes // self.total if self.total else 100
        eta = format_eta((self.total - done_bytes) / rate) if rate > 0 else "?"
        return (f"odxtarget copy: {human_bytes(done_bytes)} of {human_bytes(self.total)} ({percent}%),"
                f" {human_bytes(rate)}/s, ETA {eta}")

    def update(self, done_bytes: int) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.interval
        print(self.line(done_bytes, now), file=self.stream, flush=True)

    def finish(self, done_bytes: int) -> None:
        if self.final_line:
            print(self.line(done_bytes, self._clock()), file=self.stream, flush=True)


#: Seconds between plain lines with ``--progress`` (which also prints a last line).
REQUESTED_INTERVAL = 1.0


def progress_for(total_bytes: int, *, requested: bool = False, stream: TextIO | None = None) -> ProgressDisplay:
    """A bar when ``stream`` (default stderr) is a terminal; plain lines otherwise, every
    ``PLAIN_INTERVAL`` seconds, or every second and once at the end when ``requested``."""
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        return BarProgress(total_bytes, stream)
    if requested:
        return LineProgress(total_bytes, stream, REQUESTED_INTERVAL, final_line=True)
    return LineProgress(total_bytes, stream, PLAIN_INTERVAL)
