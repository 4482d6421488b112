"""Command numbering: the CmdSN window and the PDUs held until their turn (RFC 7143 4.2.2.1).

Theory of operation
-------------------
Numbered (non-immediate) PDUs of a session are delivered to the SCSI layer in CmdSN order.
``CommandWindow`` says where a CmdSN falls: the next expected one (``IN_ORDER``), ahead
within the window (``AHEAD``: hold it until the gap fills), or outside ``[ExpCmdSN, MaxCmdSN]``
(``OUTSIDE``: ignored silently). ``CommandOrder`` keeps what is held per CmdSN and hands the
held items back, in order, as the window advances. A slot may hold ``None``: a CmdSN that
counts as received without anything to run (a PDU refused after numbering, or one that an
ABORT TASK consumed before it arrived, RFC 7143 11.5.1 rule b).

The window's depth is ``IscsiLimits.max_tasks_per_connection`` (docs/security.md), so what
a session holds here is bounded too. Serial number arithmetic is RFC 1982's, as RFC 7143
4.2.2.1 requires for every sequence number.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Generic, TypeVar

from odxtarget.transport.iscsi.limits import DEFAULT_LIMITS

SERIAL_BITS = 32
_SERIAL_MOD = 1 << SERIAL_BITS
_SERIAL_HALF = 1 << (SERIAL_BITS - 1)

Item = TypeVar("Item")


def serial_add(sn: int, delta: int) -> int:
    return (sn + delta) % _SERIAL_MOD


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic (RFC 7143 4.2.2.1 uses it for every *SN)."""
    return a != b and ((b - a) % _SERIAL_MOD) < _SERIAL_HALF


def serial_le(a: int, b: int) -> bool:
    return a == b or serial_lt(a, b)


class CommandWindow:
    """ExpCmdSN / MaxCmdSN bookkeeping for one session (RFC 7143 4.2.2.1).

    ``classify`` tells whether a non-immediate CmdSN is the next expected one, within the
    window but ahead (hold it until the gap fills), or outside the window (ignore silently).

    ``depth`` numbered commands may be outstanding at once: those still ahead of ExpCmdSN and
    the ``occupied`` ones already past it that have not been answered (waiting for Data-Out or
    running on the storage workers). MaxCmdSN = ExpCmdSN + depth - occupied - 1, so it never
    moves backwards: a command passing ExpCmdSN raises both by one, and its answer frees its
    place again. (Initiators such as libiscsi ignore a MaxCmdSN that goes down.)
    """

    IN_ORDER, AHEAD, OUTSIDE = range(3)
    __slots__ = ("exp_cmd_sn", "depth", "occupied")

    def __init__(self, exp_cmd_sn: int, depth: int = DEFAULT_LIMITS.max_tasks_per_connection):
        self.exp_cmd_sn = exp_cmd_sn
        self.depth = depth
        self.occupied = 0

    @property
    def max_cmd_sn(self) -> int:
        return (self.exp_cmd_sn + self.depth - self.occupied - 1) % _SERIAL_MOD

    def classify(self, cmd_sn: int) -> int:
        offset = (cmd_sn - self.exp_cmd_sn) % _SERIAL_MOD
        if offset >= self.depth - self.occupied:
            return self.OUTSIDE
        return self.IN_ORDER if offset == 0 else self.AHEAD

    def advance(self) -> None:
        self.exp_cmd_sn = (self.exp_cmd_sn + 1) % _SERIAL_MOD


class Placement(enum.Enum):
    """What ``CommandOrder.place`` did with a numbered PDU."""

    RUN_NOW = "run now"          # it was next: the window advanced past it
    HELD = "held"                # ahead: kept until its turn
    DUPLICATE = "duplicate"      # its CmdSN is already held: a protocol error
    CONSUMED = "consumed"        # an ABORT TASK consumed its CmdSN before it came: ignore it
    OUTSIDE = "outside"          # outside the window: ignore it silently


class CommandOrder(Generic[Item]):
    """The window of one session plus the items held ahead of ExpCmdSN."""

    __slots__ = ("window", "_held")

    def __init__(self, window: CommandWindow):
        self.window = window
        self._held: dict[int, Item | None] = {}

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def place(self, cmd_sn: int, item: Item | None) -> Placement:
        """Number one PDU: run it now (the caller runs it, then calls ``released``), hold
        ``item`` until its turn, or say why neither."""
        window = self.window
        where = window.classify(cmd_sn)
        if where == CommandWindow.IN_ORDER:
            window.advance()
            return Placement.RUN_NOW
        if where == CommandWindow.OUTSIDE:
            return Placement.OUTSIDE
        if cmd_sn in self._held:
            return Placement.DUPLICATE if self._held[cmd_sn] is not None else Placement.CONSUMED
        self._held[cmd_sn] = item
        return Placement.HELD

    def released(self) -> Iterator[Item]:
        """The held items whose turn has come, in CmdSN order; the window advances past each
        (and past every empty slot). Stop iterating to leave the rest held."""
        held = self._held
        window = self.window
        while held and window.exp_cmd_sn in held:
            item = held.pop(window.exp_cmd_sn)
            window.advance()
            if item is not None:
                yield item

    def consume(self, cmd_sn: int) -> None:
        """RFC 7143 11.5.1 ABORT TASK rule b): a CmdSN never received counts as received."""
        where = self.window.classify(cmd_sn)
        if where == CommandWindow.IN_ORDER:
            self.window.advance()
        elif where == CommandWindow.AHEAD and cmd_sn not in self._held:
            self._held[cmd_sn] = None

    def empty_slot(self, cmd_sn: int, item: Item) -> None:
        """``item`` was held at ``cmd_sn`` but will not run (aborted): keep the CmdSN, drop it."""
        if self._held.get(cmd_sn) is item:
            self._held[cmd_sn] = None

    def clear(self) -> None:
        self._held.clear()
